"""The training history of a report as inline SVG line plots.

Two plots over the step: the expected fraction of the parameters and FLOPs the
extracted model keeps (with the budget controller's target, dashed, in budget
mode), and the task loss (log scale when it spans more than two decades).
Records are what :class:`~lumos_fx.monitor.TrainingMonitor` wrote; missing or
non-finite values are skipped.

Example::

    >>> history = [{"step": s, "kept_params": 1 - s / 200, "kept_flops": 1 - s / 150,
    ...             "target": max(0.5, 1 - s / 100), "loss": 1 / s} for s in (1, 50, 100)]
    >>> svg = kept_svg(history)
    >>> svg.count("<polyline"), "target" in svg
    (3, True)
    >>> loss_svg(history).count("<polyline")
    1
    >>> loss_svg([{"step": 1, "kept_params": 1.0, "loss": None}])
    ''
"""
from __future__ import annotations

import math

from .svg import esc, label, nice_ticks

W, H = 640, 250
LEFT, RIGHT, TOP, BOTTOM = 56, 180, 20, 40
SERIES = (("kept_params", "kept params", "s-params"), ("kept_flops", "kept FLOPs", "s-flops"),
          ("target", "budget target", "s-target"))


def _points(history: list[dict], key: str, transform=None) -> list[tuple[float, float]]:
    points = []
    for record in history:
        x, y = record.get("step"), record.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(y):
            y = transform(y) if transform else float(y)
            if y is not None:
                points.append((float(x), y))
    return points


def _frame(x_lo, x_hi, y_lo, y_hi, y_ticks, y_fmt, title: str) -> tuple[list[str], callable]:
    span_x = (x_hi - x_lo) or 1.0
    span_y = (y_hi - y_lo) or 1.0
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def at(x, y):
        return LEFT + (x - x_lo) / span_x * plot_w, TOP + (1 - (y - y_lo) / span_y) * plot_h

    parts = [f'<svg class="plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="{esc(title)}">',
             f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    for tick in y_ticks:
        _, y = at(x_lo, tick)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" '
                     f'y2="{y:.1f}"/>')
        parts.append(label(LEFT - 6, y + 4, y_fmt(tick), css="tick", anchor="end"))
    for tick in (t for t in nice_ticks(x_lo, x_hi, 6) if float(t).is_integer()):
        x, _ = at(tick, y_lo)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" '
                     f'y2="{TOP + plot_h}"/>')
        parts.append(label(x, TOP + plot_h + 16, f"{tick:,.0f}", css="tick", anchor="middle"))
    parts.append(label(LEFT + plot_w / 2, H - 6, "training step", css="axis", anchor="middle"))
    return parts, at


def _line(points, at, css: str) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (at(*p) for p in points))
    marks = "".join(f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>'
                    for x, y in (at(*p) for p in points)) if len(points) < 30 else ""
    return f'<polyline class="{css}" points="{coords}"/>{marks}'


def _x_range(history) -> tuple[float, float]:
    steps = [float(r["step"]) for r in history if isinstance(r.get("step"), (int, float))]
    lo, hi = (min(steps), max(steps)) if steps else (0.0, 1.0)
    return (lo - 0.5, hi + 0.5) if hi == lo else (lo, hi)


def kept_svg(history: list[dict]) -> str:
    """Expected kept fraction of params and FLOPs (and the target) over the steps."""
    series = [(name, css, _points(history, key)) for key, name, css in SERIES]
    series = [s for s in series if s[2]]
    if not series:
        return ""
    x_lo, x_hi = _x_range(history)
    y_hi = max(1.0, max(y for _, _, pts in series for _, y in pts))
    ticks = nice_ticks(0.0, y_hi, 5)
    parts, at = _frame(x_lo, x_hi, 0.0, ticks[-1] if ticks else y_hi, ticks,
                       lambda v: f"{v:.0%}", "expected kept fraction over training")
    for i, (name, css, points) in enumerate(series):
        parts.append(_line(points, at, css))
        y = TOP + 14 + 18 * i
        parts.append(f'<line class="{css}" x1="{W - RIGHT + 12}" y1="{y - 4}" '
                     f'x2="{W - RIGHT + 34}" y2="{y - 4}"/>')
        last = points[-1][1]
        parts.append(label(W - RIGHT + 40, y, f"{name} {last:.1%}", css="legend"))
    parts.append("</svg>")
    return "\n".join(parts)


def loss_svg(history: list[dict]) -> str:
    """The task loss over the steps (empty when no loss was recorded)."""
    points = _points(history, "loss")
    if not points:
        return ""
    values = [y for _, y in points]
    log = min(values) > 0 and max(values) / min(values) > 100
    if log:
        points = [(x, math.log10(y)) for x, y in points]
        lo, hi = math.floor(min(y for _, y in points)), math.ceil(max(y for _, y in points))
        ticks = [float(t) for t in range(int(lo), int(hi) + 1)]
        fmt = (lambda v: f"1e{v:.0f}")
    else:
        lo, hi = min(0.0, min(values)), max(values)
        ticks = nice_ticks(lo, hi if hi > lo else lo + 1, 4)
        lo, hi = ticks[0], ticks[-1]
        fmt = (lambda v: f"{v:.3g}")
    x_lo, x_hi = _x_range(history)
    parts, at = _frame(x_lo, x_hi, lo, hi, ticks, fmt, "task loss over training")
    parts.append(_line(points, at, "s-loss"))
    parts.append(label(W - RIGHT + 12, TOP + 14, f"task loss{' (log)' if log else ''}",
                       css="legend"))
    parts.append(label(W - RIGHT + 12, TOP + 32, f"last {values[-1]:.4g}", css="legend"))
    parts.append("</svg>")
    return "\n".join(parts)
