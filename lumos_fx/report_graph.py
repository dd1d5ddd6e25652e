"""The layer graph of a report, before and after extraction, as inline SVG.

Nodes are the layers that produce or read channel groups (and the model's
inputs), in the order the model runs them (``layer_order``; else the order the
groups were found); an edge joins a layer that produces a group to the layers
that read it. A group whose producers run interleaved with its readers is a
residual stream: its producers are chained in run order (each add) and a
reader is joined to the latest update before it. The picture has two
panels with the same rows: *before*, every box as wide as its layer's output
width, and *after*, as wide as the width extraction keeps (square-root scale,
so a 4-channel layer stays visible next to a 4096-channel one). Pinned groups
are outlined in orange with the op that pinned them beside the box, removed
layers are dashed, and long names are cut with the full name on hover. Edges
between neighbouring rows run down the middle; longer ones (residual and skip
connections) arc round the left.

Example::

    >>> data = {"groups": [
    ...     {"name": "input", "kind": "input", "kept": 3, "total": 4, "pinned": None,
    ...      "producers": ["input"], "consumers": ["0"], "followers": []},
    ...     {"name": "0", "kind": "channels", "kept": 5, "total": 8, "pinned": None,
    ...      "producers": ["0"], "consumers": ["2"], "followers": []},
    ...     {"name": "2", "kind": "channels", "kept": 2, "total": 2, "pinned": "model output",
    ...      "producers": ["2"], "consumers": [], "followers": []}], "removed_layers": []}
    >>> nodes, edges = layer_graph(data)
    >>> [(n.name, n.kept, n.total, n.pinned) for n in nodes]
    [('input', 3, 4, []), ('0', 5, 8, []), ('2', 2, 2, ['model output'])]
    >>> edges
    [(0, 1), (1, 2)]
    >>> svg = graph_svg(data)
    >>> svg.startswith("<svg") and "model output" in svg
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .svg import esc, fmt_count, label

ROW, BOX_H, MIN_W, MAX_W = 38, 22, 14.0, 260.0
NAME_W, ARC_W, GAP, NOTE_W, TOP = 200, 56, 20, 290, 46


@dataclass
class LayerNode:
    """One layer (or model input) of the picture."""

    name: str
    kind: str = "layer"            # "input" for a model input
    kept: int = 0                  # output width kept / before (summed over its groups)
    total: int = 0
    read_kept: int = 0             # input width read, for layers that produce no group
    read_total: int = 0
    pinned: list[str] = field(default_factory=list)
    followers: list[str] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)
    removed: bool = False

    @property
    def width(self) -> tuple[int, int]:
        """(kept, total) width drawn for this node."""
        return (self.kept, self.total) if self.total else (self.read_kept, self.read_total)


def layer_graph(data: dict) -> tuple[list[LayerNode], list[tuple[int, int]]]:
    """Nodes and edges ``(from index, to index)`` of the report dict's layer graph."""
    nodes: dict[str, LayerNode] = {}

    def node(name: str) -> LayerNode:
        if name not in nodes:
            nodes[name] = LayerNode(name)
        return nodes[name]

    order = {name: i for i, name in enumerate(data.get("layer_order") or [])}
    for name in order:                    # rows in the order the model runs its layers
        if ":" not in name:
            node(name)
    links: dict[tuple[str, str], None] = {}
    for group in data["groups"]:
        if group["kind"] == "positions":      # a finer gate on a layer's own inputs
            for reader in group["consumers"]:
                node(reader).positions.append((group["kept"], group["total"]))
            continue
        for producer in group["producers"]:
            n = node(producer)
            n.kind = "input" if group["kind"] == "input" else n.kind
            n.kept += group["kept"]
            n.total += group["total"]
            if group["pinned"] and group["pinned"] not in n.pinned:
                n.pinned.append(group["pinned"])
            n.followers += [f for f in group["followers"] if f not in n.followers]
        for reader in group["consumers"]:
            n = node(reader)
            n.read_kept += group["kept"]
            n.read_total += group["total"]
            stream = _is_stream(group, order)
            for producer in _sources(group["producers"], reader, order) if stream else \
                    group["producers"]:
                if producer != reader:
                    links[(producer, reader)] = None
        if _is_stream(group, order):              # a residual stream: each add
            ranked = sorted(group["producers"], key=lambda p: order.get(p, len(order)))
            links.update(dict.fromkeys(zip(ranked, ranked[1:])))
    removed = set(data.get("removed_layers", []))
    for n in nodes.values():
        n.removed = n.name in removed
    nodes = {name: n for name, n in nodes.items() if n.total or n.read_total}
    index = {name: i for i, name in enumerate(nodes)}
    return list(nodes.values()), [(index[a], index[b]) for a, b in links]


def _is_stream(group: dict, order: dict[str, int]) -> bool:
    """Several producers with a reader running between two of them: a residual stream
    (producers joined by one op, such as attention's q, k and v, run before every reader)."""
    producers = [order[p] for p in group["producers"] if p in order]
    if len(producers) < 2:
        return False
    return any(min(producers) < order[r] < max(producers)
               for r in group["consumers"] if r in order)


def _sources(producers: list[str], reader: str, order: dict[str, int]) -> list[str]:
    """The producers of a residual stream whose update ``reader`` reads: the latest
    before it (earlier ones reach it through the stream's own edges)."""
    if reader not in order:
        return producers
    before = [p for p in producers if order.get(p, len(order)) < order[reader]]
    if not before:
        return producers[:1]
    return [max(before, key=lambda p: order[p])]


def _box_width(width: int, widest: int) -> float:
    if width <= 0:
        return MIN_W
    return MIN_W + (MAX_W - MIN_W) * math.sqrt(width / max(widest, 1))


def _edge(x: float, top: tuple[float, float], bottom: tuple[float, float], span: int,
          left: float) -> str:
    (x0, y0), (x1, y1) = top, bottom
    if span == 1:
        return (f'<line class="edge" x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" '
                f'marker-end="url(#lumos-arrow)"/>')
    bend = left - 8 - min(abs(span), 12) * 4
    return (f'<path class="edge skip" d="M{x0:.1f},{y0:.1f} C{bend:.1f},{y0:.1f} '
            f'{bend:.1f},{y1:.1f} {x1:.1f},{y1:.1f}" marker-end="url(#lumos-arrow)"/>')


def _panel(nodes, edges, centre: float, after: bool, widest: int) -> list[str]:
    parts = []
    widths = []
    for n in nodes:
        kept, total = n.width
        shown = kept if after else total
        widths.append(_box_width(shown if not (after and n.removed) else 0, widest))
    lefts = [centre - w / 2 for w in widths]
    for a, b in edges:
        ya, yb = TOP + a * ROW, TOP + b * ROW
        if b > a:
            top, bottom = (lefts[a], ya + BOX_H / 2), (lefts[b], yb + BOX_H / 2)
            if b == a + 1:
                top, bottom = (centre, ya + BOX_H), (centre, yb)
        else:
            top, bottom = (lefts[a], ya + BOX_H / 2), (lefts[b], yb + BOX_H / 2)
        parts.append(_edge(centre, top, bottom, b - a, min(lefts[a], lefts[b])))
    for i, n in enumerate(nodes):
        y = TOP + i * ROW
        kept, total = n.width
        css = ["box", "input" if n.kind == "input" else "layer"]
        if after and n.removed:
            css.append("removed")
        elif after and kept < total:
            css.append("shrunk")
        if n.pinned:
            css.append("pinned")
        tip = _tooltip(n, after)
        parts.append(f'<rect class="{" ".join(css)}" x="{lefts[i]:.1f}" y="{y:.1f}" '
                     f'width="{widths[i]:.1f}" height="{BOX_H}" rx="4"><title>{esc(tip)}</title>'
                     f'</rect>')
        text = ("removed" if n.removed else f"{kept:,}/{total:,}") if after else f"{total:,}"
        parts.append(label(lefts[i] + widths[i] + 5, y + BOX_H / 2 + 4, text, css="num"))
    return parts


def _tooltip(n: LayerNode, after: bool) -> str:
    kept, total = n.width
    lines = [n.name, f"width {kept:,} of {total:,} kept" if after else f"width {total:,}"]
    if n.pinned:
        lines.append("pinned by: " + "; ".join(n.pinned))
    if n.followers:
        lines.append("followers (sliced with it): " + ", ".join(n.followers))
    for k, t in n.positions:
        lines.append(f"flattened input positions: {k:,} of {t:,} kept")
    if n.removed:
        lines.append("removed: every input channel closed")
    return "\n".join(lines)


def _note(n: LayerNode) -> str:
    notes = []
    if n.pinned:
        notes.append("pinned by " + "; ".join(n.pinned))
    if n.removed:
        notes.append("removed (its input closed)")
    for k, t in n.positions:
        notes.append(f"positions {k:,}/{t:,}")
    if n.followers and not notes:
        notes.append("followers: " + ", ".join(n.followers))
    return " · ".join(notes)


def graph_svg(data: dict) -> str:
    """The before/after layer graph of a report dict (``Report.to_dict()``) as ``<svg>``."""
    nodes, edges = layer_graph(data)
    widest = max([max(n.width[1], 1) for n in nodes] or [1])
    before_c = NAME_W + ARC_W + MAX_W / 2 + 40
    after_c = before_c + MAX_W + GAP + ARC_W + 40
    note_x = after_c + MAX_W / 2 + 60
    width = note_x + NOTE_W
    height = TOP + max(len(nodes), 1) * ROW + 10
    parts = [f'<svg class="graph" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
             f'aria-label="layer graph before and after extraction">',
             '<defs><marker id="lumos-arrow" viewBox="0 0 8 8" refX="7" refY="4" '
             'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
             '<path d="M0,0 L8,4 L0,8 z" class="arrow"/></marker></defs>',
             label(before_c, 18, "before", css="panel", anchor="middle"),
             label(after_c, 18, "after", css="panel", anchor="middle"),
             label(NAME_W - 10, 18, "layer", css="panel", anchor="end"),
             label(note_x, 18, "notes", css="panel")]
    if not nodes:
        parts.append(label(NAME_W, TOP + 14, "no channel groups", css="note"))
    for i, n in enumerate(nodes):
        y = TOP + i * ROW + BOX_H / 2 + 4
        css = "name input" if n.kind == "input" else "name"
        parts.append(label(NAME_W - 10, y, n.name, limit=25, css=css, anchor="end"))
        note = _note(n)
        if note:
            parts.append(label(note_x, y, note, limit=46,
                               css="note pinned" if n.pinned else "note"))
    parts += _panel(nodes, edges, before_c, False, widest)
    parts += _panel(nodes, edges, after_c, True, widest)
    parts.append("</svg>")
    return "\n".join(parts)


def graph_caption(data: dict) -> str:
    """One line saying what the picture shows, with counts."""
    nodes, edges = layer_graph(data)
    pinned = sum(1 for n in nodes if n.pinned)
    widest = fmt_count(max([n.width[1] for n in nodes] or [0]))
    return (f"{len(nodes)} layers and inputs, {len(edges)} connections, {pinned} pinned. "
            f"Box width grows with the square root of the layer's output width (widest: "
            f"{widest}). Hover a box or a cut name for details.")
