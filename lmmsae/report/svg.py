"""Plots as inline SVG, written by hand: no plotting dependency, crisp at any zoom, a few KB each,
and searchable text. Three shapes cover the report: line charts (training curves), histograms with
one or more overlaid series (score vs random baseline, activations), and vertical marks."""

from __future__ import annotations

import math
from typing import Sequence

from lmmsae.report.html import esc

W, H = 380, 210
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 24, 38
COLOURS = ("#2563eb", "#9ca3af", "#dc2626", "#16a34a")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    """Tick labels: 12k, 1.5M for counts like tokens; 1e-4 for tiny values."""
    if v == 0:
        return "0"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(v) >= size:
            return f"{v / (size if suffix != 'k' else 1e3):.3g}{suffix}"
    if abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-")
    return f"{v:.4g}"


class _Frame:
    """Data -> pixel mapping with axes, ticks and labels."""

    def __init__(self, x: tuple[float, float], y: tuple[float, float], title: str, xlabel: str, ylabel: str,
                 x_format=_label, counts: bool = False):
        self.x0, self.x1 = x if x[1] > x[0] else (x[0] - 0.5, x[0] + 0.5)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0] - 0.5, y[0] + 0.5)
        self.parts = [f"<text x='{W / 2}' y='15' class='t'>{esc(title)}</text>"]
        for t in nice_ticks(self.y0, self.y1):
            if counts and not float(t).is_integer():
                continue
            py = self.py(t)
            self.parts.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{py:.1f}' y2='{py:.1f}' class='g'/>"
                              f"<text x='{LEFT - 4}' y='{py + 3:.1f}' class='yl'>{_label(t)}</text>")
        for t in nice_ticks(self.x0, self.x1):
            px = self.px(t)
            self.parts.append(f"<line x1='{px:.1f}' x2='{px:.1f}' y1='{H - BOTTOM}' y2='{H - BOTTOM + 4}' class='a'/>"
                              f"<text x='{px:.1f}' y='{H - BOTTOM + 15}' class='xl'>{esc(x_format(t))}</text>")
        self.parts.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{H - BOTTOM}' y2='{H - BOTTOM}' class='a'/>"
                          f"<line x1='{LEFT}' x2='{LEFT}' y1='{TOP}' y2='{H - BOTTOM}' class='a'/>"
                          f"<text x='{(LEFT + W - RIGHT) / 2}' y='{H - 6}' class='xt'>{esc(xlabel)}</text>"
                          f"<text x='12' y='{(TOP + H - BOTTOM) / 2}' class='yt' "
                          f"transform='rotate(-90 12 {(TOP + H - BOTTOM) / 2})'>{esc(ylabel)}</text>")

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def svg(self, legend: Sequence[tuple[str, str]] = (), label: str = "") -> str:
        for i, (name, colour) in enumerate(legend):
            y = TOP + 4 + 13 * i
            self.parts.append(f"<rect x='{W - RIGHT - 110}' y='{y}' width='9' height='9' fill='{colour}'/>"
                              f"<text x='{W - RIGHT - 97}' y='{y + 8}' class='lg'>{esc(name)}</text>")
        return (f"<svg class='plot' viewBox='0 0 {W} {H}' width='{W}' height='{H}' role='img' "
                f"aria-label='{esc(label)}' xmlns='http://www.w3.org/2000/svg'>{''.join(self.parts)}</svg>")


def line_chart(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str,
               log_y: bool = False) -> str:
    """One series as a polyline; points with a missing (None / non-finite) y are skipped."""
    points = [(float(x), float(y)) for x, y in zip(xs, ys)
              if y is not None and math.isfinite(y) and (not log_y or y > 0)]
    if not points:
        return f"<p class='note'>{esc(title)}: no values</p>"
    if log_y:
        points = [(x, math.log10(y)) for x, y in points]
        ylabel = f"log10 {ylabel}"
    lo, hi = min(y for _, y in points), max(y for _, y in points)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 0.5
    y0 = 0.0 if lo >= 0 and not log_y else lo - pad
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    if x1 <= x0:
        x0, x1 = x0 - max(abs(x0) * 0.05, 0.5), x1 + max(abs(x1) * 0.05, 0.5)
    frame = _Frame((x0, x1), (y0, hi + pad), title, xlabel, ylabel)
    path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in points)
    frame.parts.append(f"<polyline points='{path}' fill='none' stroke='{COLOURS[0]}' stroke-width='1.6'/>")
    if len(points) <= 40:  # few points: mark each, so one point still shows
        frame.parts += [f"<circle cx='{frame.px(x):.1f}' cy='{frame.py(y):.1f}' r='2.2' fill='{COLOURS[0]}'>"
                        f"<title>{_label(x)}: {y:.4g}</title></circle>" for x, y in points]
    return frame.svg(label=title)


def histogram(series: Sequence[tuple[str, Sequence[float]]], title: str, xlabel: str, ylabel: str = "features",
              bins: int = 24, marks: Sequence[tuple[float, str]] = (), range_: tuple[float, float] | None = None,
              x_format=_label) -> str:
    """Overlaid histograms over shared bins (series drawn translucent, in order), with optional
    vertical `marks` (value, label)."""
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    values += [m for m, _ in marks if math.isfinite(m)]
    if not values:
        return f"<p class='note'>{esc(title)}: no values</p>"
    lo, hi = range_ or (min(values), max(values))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    counts = []
    for _, vs in series:
        c = [0] * bins
        for v in vs:
            if v is not None and math.isfinite(v):
                c[min(max(int((v - lo) / width), 0), bins - 1)] += 1
        counts.append(c)
    top = max((max(c) for c in counts), default=1) or 1
    frame = _Frame((lo, hi), (0, top * 1.08), title, xlabel, ylabel, x_format, counts=True)
    for i, c in enumerate(counts):
        colour = COLOURS[i % len(COLOURS)]
        for b, n in enumerate(c):
            if n:
                x, y = frame.px(lo + b * width), frame.py(n)
                frame.parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(frame.px(lo + width) - frame.px(lo) - 1, 1):.1f}' "
                                   f"height='{frame.py(0) - y:.1f}' fill='{colour}' fill-opacity='0.6'>"
                                   f"<title>{esc(series[i][0])}: {n} in [{_label(lo + b * width)}, "
                                   f"{_label(lo + (b + 1) * width)})</title></rect>")
    for value, name in marks:
        if math.isfinite(value):
            x = frame.px(min(max(value, lo), hi))
            frame.parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{TOP}' y2='{H - BOTTOM}' class='m'>"
                               f"<title>{esc(name)}: {_label(value)}</title></line>")
    legend = [(name, COLOURS[i % len(COLOURS)]) for i, (name, _) in enumerate(series)] if len(series) > 1 else []
    return frame.svg(legend, label=title)
