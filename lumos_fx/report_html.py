"""The report as one self-contained HTML page (``Report.to_html(path)``).

Everything is inline (CSS and SVG, no scripts, fonts or links to fetch), so the
file opens offline in any browser and can be attached to an issue or a lab
notebook. The page shows, top to bottom: parameters and FLOPs (and latencies,
when measured) before -> after; the input features kept and dropped by name;
the layer graph before and after (:mod:`lumos_fx.report_graph`); the expected
kept fraction and loss over training when a history was recorded
(:mod:`lumos_fx.report_plot`); and the table of every channel group with the
op that pinned it. It renders from ``Report.to_dict()``, so a saved JSON report
renders the same page.

Example::

    >>> import torch
    >>> import lumos_fx as lumos
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    >>> gated = lumos.compile(model, example_inputs=(torch.randn(2, 3),),
    ...                       feature_names=["density", "pressure", "noise"])
    >>> page = lumos.report(gated).to_html()
    >>> page.startswith("<!DOCTYPE html>"), "<svg" in page, "pressure" in page, "http" in page
    (True, True, True, False)
"""
from __future__ import annotations

from .report_graph import graph_caption, graph_svg
from .report_plot import kept_svg, loss_svg
from .svg import esc, fmt_count, fmt_time, short

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;
  color:#1d2733;background:#fbfcfd;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dee6; padding-bottom:4px}
.sub{color:#5b6b7d;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #d8dee6; border-radius:8px;padding:10px 14px;
 min-width:220px}
.card .k{color:#5b6b7d;font-size:13px}
.card .v{font-size:19px;font-weight:600;margin:2px 0}
.card .r{font-size:13px;color:#2a7f74}
.meter{height:6px;background:#e3e8ee;border-radius:3px;margin-top:6px;overflow:hidden}
.meter span{display:block;height:100%;background:#2a9d8f}
.chips{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0 10px}
.chip{border-radius:12px; padding:2px 10px;font-size:13px;border:1px solid}
.chip.kept{background:#e3f4f1;border-color:#2a9d8f}
.chip.dropped{background:#f1f2f4;border-color:#c4ccd6;color:#7b8794;text-decoration:line-through}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #d8dee6; padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
td.num{text-align:right;white-space:nowrap}
td.pin{color:#b5482c}
.bar{display:inline-block;width:80px; height:8px;background:#e3e8ee;border-radius:4px;
 margin-left:6px;vertical-align:middle;overflow:hidden}
.bar span{display:block;height:100%;background:#2a9d8f}
.scroll{overflow-x:auto}
.caption{color:#5b6b7d;font-size:13px;margin:4px 0 8px}
svg text{font-family:inherit;font-size:12px;fill:#1d2733}
svg .panel{font-weight:600;font-size:13px}
svg .name.input{font-weight:600;fill:#5a3e8c}
svg .num{fill:#5b6b7d;font-size:11px}
svg .note{fill:#5b6b7d}
svg .note.pinned{fill:#b5482c}
svg .box.layer{fill:#dbe4ee;stroke:#7a8aa0}
svg .box.input{fill:#e6defa;stroke:#7c5cc4}
svg .box.shrunk{fill:#bfe6df;stroke:#2a9d8f}
svg .box.pinned{stroke:#e76f51;stroke-width:2.5}
svg .box.removed{fill:none;stroke:#9aa5b1;stroke-dasharray:4 3}
svg .edge{stroke:#9aa5b1;fill:none;stroke-width:1.2}
svg .arrow{fill:#9aa5b1}
svg .frame{fill:#fff;stroke:#c4ccd6}
svg .grid{stroke:#eef1f4}
svg .tick{fill:#5b6b7d;font-size:11px}
svg .axis{fill:#5b6b7d}
svg .legend{font-size:12px}
svg polyline{fill:none;stroke-width:2}
svg .s-params{stroke:#2a9d8f;fill:#2a9d8f}
svg .s-flops{stroke:#3a6ea5;fill:#3a6ea5;stroke-dasharray:6 3}
svg .s-target{stroke:#e76f51;fill:#e76f51;stroke-dasharray:2 3}
svg .s-loss{stroke:#5a3e8c;fill:#5a3e8c}
svg polyline.s-params,svg polyline.s-flops,svg polyline.s-target,svg polyline.s-loss{fill:none}
svg line.s-params,svg line.s-flops,svg line.s-target{stroke-width:2}
"""


def _ratio(after: float, before: float) -> float:
    return after / before if before else 1.0


def _card(title: str, before: float, after: float, time: bool = False) -> str:
    kept = _ratio(after, before)
    change = f"{before / after:.2f}x faster" if time and after else f"{kept:.1%} of before"
    fmt = fmt_time if time else fmt_count
    return (f'<div class="card"><div class="k">{esc(title)}</div>'
            f'<div class="v">{esc(fmt(before))} &rarr; {esc(fmt(after))}</div>'
            f'<div class="r">{esc(change)}</div>'
            f'<div class="meter"><span style="width:{min(kept, 1) * 100:.1f}%"></span></div></div>')


def _summary(data: dict) -> str:
    cards = [_card("parameters", data["params"]["before"], data["params"]["after"]),
             _card("FLOPs per forward (example inputs)", data["flops"]["before"],
                   data["flops"]["after"])]
    for name, pair in data.get("latency", {}).items():
        cards.append(_card(f"latency, {name}", pair["before"], pair["after"], time=True))
    return f'<div class="cards">{"".join(cards)}</div>'


def _chip(name: str, css: str) -> str:
    shown = short(name, 40)
    title = f' title="{esc(name)}"' if shown != name else ""
    return f'<span class="chip {css}"{title}>{esc(shown)}</span>'


def _inputs(data: dict) -> str:
    if not data["inputs"]:
        return "<p>No gated input features.</p>"
    parts = []
    for name, lists in data["inputs"].items():
        kept, dropped = lists["kept"], lists["dropped"]
        parts.append(f"<p><b>{esc(name)}</b>: kept {len(kept)} of {len(kept) + len(dropped)} "
                     f"features</p>")
        parts.append('<div class="chips">' + "".join(_chip(n, "kept") for n in kept)
                     + "".join(_chip(n, "dropped") for n in dropped) + "</div>")
    return "".join(parts) + _feature_test(data.get("feature_test"))


def _feature_test(test: dict | None) -> str:
    """The held-out test of ``lumos.select_features``: one row per feature it tested."""
    if not test:
        return ""
    rows = "".join(f"<tr><td>{_chip(s['name'], 'dropped' if s['dropped'] else 'kept')}</td>"
                   f"<td>{s['harm']:.4g}</td><td>{s['stderr']:.3g}</td>"
                   f"<td>{'dropped' if s['dropped'] else 'kept'}</td></tr>"
                   for s in sorted(test["scores"], key=lambda s: -s["harm"]))
    from .feature_selection import rule
    return (f'<p class="caption">Held-out test ({test["samples"]} samples, loss '
            f'{test["held_out_loss"]:.4g}, {test["total_harm"]:.4g} higher with every feature '
            f'permuted): the rise of the held-out loss when a feature is permuted; '
            f"{esc(rule(test))}.</p><table><tr><th>feature</th><th>loss rise</th>"
            f"<th>std err</th><th>decision</th></tr>{rows}</table>")


def _cell(items: list[str], limit: int = 4) -> str:
    text = ", ".join(items)
    shown = ", ".join(short(i, 32) for i in items[:limit]) + (
        f" +{len(items) - limit}" if len(items) > limit else "")
    if shown == text:
        return f"<td>{esc(text)}</td>"
    return f'<td title="{esc(text)}">{esc(shown)}</td>'


def _groups(data: dict) -> str:
    rows = ["<tr><th>group</th><th>kind</th><th>kept / total</th><th>produced by</th>"
            "<th>read by</th><th>followers</th><th>pinned by</th><th>state_dict key</th></tr>"]
    for g in data["groups"]:
        frac = _ratio(g["kept"], g["total"])
        inert = f" ({g['inert']} at gate 0)" if g.get("inert") else ""
        name = short(g["name"], 40)
        rows.append(
            f'<tr><td title="{esc(g["name"])}">{esc(name)}</td><td>{esc(g["kind"])}</td>'
            f'<td class="num">{g["kept"]:,} / {g["total"]:,}{esc(inert)}'
            f'<span class="bar"><span style="width:{frac * 100:.1f}%"></span></span></td>'
            + _cell(g["producers"]) + _cell(g["consumers"]) + _cell(g["followers"])
            + f'<td class="pin">{esc(g["pinned"] or "")}</td>'
            f'<td>{esc(g["key"] or "")}</td></tr>')
    return '<div class="scroll"><table>' + "".join(rows) + "</table></div>"


def _extras(data: dict) -> str:
    parts = []
    if data.get("removed_layers"):
        parts.append("<p>Removed layers (whole input closed): "
                     + esc(", ".join(data["removed_layers"])) + "</p>")
    if data.get("embeddings"):
        items = [f"{esc(e['name'])} {e['width_before']} &rarr; {e['width_after']}"
                 if e["rows_after"] else f"{esc(e['name'])} dropped" for e in data["embeddings"]]
        parts.append("<p>Embedding widths: " + ", ".join(items) + "</p>")
    return "".join(parts)


def _history(data: dict) -> str:
    history = data.get("history") or []
    if not history:
        return ("<p>No training history was recorded: train with a "
                "<code>lumos.TrainingMonitor</code> (or <code>lumos.fit</code>) to plot the kept "
                "fraction over training here.</p>")
    last = history[-1]
    text = (f'<p class="caption">{len(history)} records up to step {last["step"]:,}; expected '
            f'kept params at the end {last["kept_params"]:.1%}, FLOPs '
            f'{(last.get("kept_flops") or 0):.1%}.</p>')
    return text + '<div class="scroll">' + kept_svg(history) + loss_svg(history) + "</div>"


def render_html(data: dict) -> str:
    """The HTML page of a report dict (``Report.to_dict()``)."""
    model = data.get("model", "model")
    pinned = sum(1 for g in data["groups"] if g["pinned"])
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lumos_fx report: {esc(model)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>lumos_fx report: {esc(model)}</h1>",
        f'<p class="sub">{len(data["groups"])} channel groups, {pinned} pinned. Widths kept by '
        "<code>lumos.extract</code> at the current gates.</p>",
        _summary(data),
        "<h2>Input features</h2>", _inputs(data),
        "<h2>Layers before and after</h2>", f'<p class="caption">{graph_caption(data)}</p>',
        f'<div class="scroll">{graph_svg(data)}</div>', _extras(data),
        "<h2>Training</h2>", _history(data),
        "<h2>Channel groups</h2>", _groups(data),
        "</body></html>", ""])
