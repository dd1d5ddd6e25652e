"""Small helpers for the inline SVG and HTML of the report page.

Every string that reaches the page goes through :func:`esc`; long names are cut
by :func:`short` and drawn by :func:`label`, which keeps the full name in a
``<title>`` (shown on hover). :func:`nice_ticks` picks round axis ticks,
:func:`fmt_count` and :func:`fmt_time` write short numbers.

Example::

    >>> short("encoder.layer.0.attention.self.query", 20)
    'encode…on.self.query'
    >>> label(10, 20, "a<b", css="name")
    '<text x="10.0" y="20.0" class="name">a&lt;b</text>'
    >>> label(0, 0, "a" * 30, limit=8)
    '<text x="0.0" y="0.0"><title>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</title>aa…aaaaa</text>'
    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> fmt_count(1234567), fmt_time(0.0012), fmt_time(4.5e-5)
    ('1.23M', '1.2 ms', '45 µs')
"""
from __future__ import annotations

import html
import math


def esc(text) -> str:
    """HTML/XML-escaped ``str(text)`` (quotes included)."""
    return html.escape(str(text), quote=True)


def short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters around an ellipsis, keeping more of its end
    (the most telling part of a module path)."""
    text = str(text)
    if len(text) <= limit:
        return text
    keep = max(limit - 1, 1)
    head = max(keep // 3, 1)
    if keep <= head:
        return text[:head] + "…"
    return text[:head] + "…" + text[len(text) - (keep - head):]


def label(x: float, y: float, text: str, *, limit: int | None = None, css: str | None = None,
          anchor: str | None = None) -> str:
    """An SVG ``<text>``; when cut to ``limit`` characters, the full text is its ``<title>``."""
    text = str(text)
    shown = short(text, limit) if limit else text
    attrs = f' x="{x:.1f}" y="{y:.1f}"'
    if css:
        attrs += f' class="{css}"'
    if anchor:
        attrs += f' text-anchor="{anchor}"'
    title = f"<title>{esc(text)}</title>" if shown != text else ""
    return f"<text{attrs}>{title}{esc(shown)}</text>"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``count`` intervals)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        if value >= lo - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def fmt_time(seconds: float) -> str:
    """``0.0012`` -> ``'1.2 ms'``: a duration for labels."""
    for unit, size in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def fmt_count(n: float) -> str:
    """``1234567`` -> ``'1.23M'``: short counts for labels."""
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.4g}"
