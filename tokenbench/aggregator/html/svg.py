"""A small SVG chart: linear axes with round ticks, lines, bars and a legend.

Written here rather than taken from a plotting library: the report must be one offline file that
opens anywhere, and plain SVG does that with no JavaScript, no CDN and no heavy dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

# Tableau 10: distinct in print and for the common forms of colour blindness.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")

WIDTH, HEIGHT = 720, 340
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 80, 16, 52, 46


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 8) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) from at or below ``low`` to at or
    above ``high``, so an axis running from the first tick to the last covers the data."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low, low + 1]
    raw_step = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw_step))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw_step)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


@dataclass
class Chart:
    """One chart. Data coordinates go in; ``render()`` gives an ``<svg>`` element."""

    title: str
    x_label: str
    y_label: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    note: str = ""  # a line under the title, e.g. what the axis leaves out
    width: int = WIDTH
    height: int = HEIGHT
    y_tick_labels: dict[float, str] | None = None  # categorical y axis (lane -> name) instead of numbers
    _marks: list[str] = field(default_factory=list)
    _legend: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        low, high = self.x_range
        if high <= low:
            self.x_range = (low, low + 1)
        low, high = self.y_range
        if high <= low:
            self.y_range = (low, low + 1)

    def x(self, value: float) -> float:
        low, high = self.x_range
        return MARGIN_LEFT + (value - low) / (high - low) * (self.width - MARGIN_LEFT - MARGIN_RIGHT)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.height - MARGIN_BOTTOM - (value - low) / (high - low) * (self.height - MARGIN_TOP - MARGIN_BOTTOM)

    def line(self, points: Sequence[tuple[float, float]], stroke: str, label: str | None = None) -> None:
        if not points:
            return
        path = " ".join(f"{self.x(px):.1f},{self.y(py):.1f}" for px, py in points)
        self._marks.append(f'<polyline class="series" fill="none" stroke="{stroke}" stroke-width="2" '
                           f'points="{path}"><title>{escape(label or "")}</title></polyline>')
        if label is not None:
            self._legend.append((label, stroke))

    def labelled_points(self, points: Sequence[tuple[float, float, str]], stroke: str, label: str,
                        show_names: bool = True) -> None:
        """A line through the points, each marked and, with ``show_names``, named (e.g. by its concurrency)."""
        self.line([(px, py) for px, py, _ in points], stroke, label)
        for px, py, name in points:
            cx, cy = self.x(px), self.y(py)
            self._marks.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{stroke}"><title>{escape(name)}'
                               "</title></circle>")
            if show_names:
                self._marks.append(f'<text class="point-label" x="{cx + 5:.1f}" y="{cy + 14:.1f}">'
                                   f"{escape(name)}</text>")

    def bar(self, x_start: float, x_end: float, y_center: float, thickness: float, fill: str, tooltip: str) -> None:
        """A horizontal bar from x_start to x_end, ``thickness`` in y units, with a hover tooltip."""
        left, right = self.x(x_start), self.x(x_end)
        top = self.y(y_center + thickness / 2)
        height = self.y(y_center - thickness / 2) - top
        self._marks.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(right - left, 0.8):.1f}" '
                           f'height="{height:.1f}" fill="{fill}"><title>{escape(tooltip)}</title></rect>')

    def legend_entry(self, label: str, fill: str) -> None:
        self._legend.append((label, fill))

    def render(self) -> str:
        parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                 f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" role="img">',
                 f"<title>{escape(self.title)}</title>",
                 f'<text class="title" x="{MARGIN_LEFT}" y="16">{escape(self.title)}</text>']
        if self.note:
            parts.append(f'<text class="note" x="{MARGIN_LEFT}" y="29">{escape(self.note)}</text>')
        parts += self._axes()
        parts += self._marks
        parts += self._legend_marks()
        parts.append("</svg>")
        return "\n".join(parts)

    def _axes(self) -> list[str]:
        left, right = MARGIN_LEFT, self.width - MARGIN_RIGHT
        top, bottom = MARGIN_TOP, self.height - MARGIN_BOTTOM
        out = [f'<rect class="plot-area" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}"/>']
        for tick in nice_ticks(*self.x_range):
            if self.x_range[0] <= tick <= self.x_range[1]:
                px = self.x(tick)
                out.append(f'<line class="grid" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}"/>')
                out.append(f'<text class="tick" x="{px:.1f}" y="{bottom + 14}" text-anchor="middle">'
                           f"{format_tick(tick)}</text>")
        y_ticks = self.y_tick_labels or {t: format_tick(t) for t in nice_ticks(*self.y_range)}
        for tick, text in y_ticks.items():
            if self.y_range[0] <= tick <= self.y_range[1]:
                py = self.y(tick)
                out.append(f'<line class="grid" x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}"/>')
                out.append(f'<text class="tick" x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">'
                           f"{escape(text)}</text>")
        out.append(f'<text class="axis-label" x="{(left + right) / 2:.0f}" y="{self.height - 8}" '
                   f'text-anchor="middle">{escape(self.x_label)}</text>')
        out.append(f'<text class="axis-label" transform="translate(14 {(top + bottom) / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(self.y_label)}</text>')
        return out

    def _legend_marks(self) -> list[str]:
        """One row above the plot area, left to right; a label's width is estimated, as SVG has no layout."""
        out = []
        left = float(MARGIN_LEFT)
        for label, fill in self._legend:
            out.append(f'<rect x="{left:.0f}" y="{MARGIN_TOP - 15}" width="12" height="10" fill="{fill}"/>')
            out.append(f'<text class="legend" x="{left + 16:.0f}" y="{MARGIN_TOP - 6}">{escape(label)}</text>')
            left += 16 + 6.5 * len(label) + 18
        return out
