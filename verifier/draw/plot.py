"""Two small SVG plots for the claim report, from plain data.

* `times_plot(rows)`: one row per case, times on a shared linear axis; for each case what was
  observed (filled dots; the failure time a filled bar) over what each model predicts (one marker
  shape per model: a ring, a cross; the model's failure time an open bar). The C2 plot: every SYN
  and the ETIMEDOUT time, against the linux and the stevens profiles' schedules.
* `xy_plot(series)`: lines and points over two linear axes. The C8 plot: the queue limit the kernel
  held against the backlog, with each model's limit as a line.

Pure: data in, SVG text out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

__all__ = ["Series", "TimesRow", "nice_ticks", "times_plot", "xy_plot"]

_FONT = 'font-family="DejaVu Sans, sans-serif" font-size="11"'
MODEL_STYLE = {"linux": ("#1a8a3a", "ring"), "stevens": ("#c62828", "cross")}


@dataclass(frozen=True)
class TimesRow:
    """One case: the observed times and failure time, and each model's (name -> (times, fail))."""

    label: str
    observed: Sequence[float]
    observed_fail: float | None
    models: dict[str, tuple[Sequence[float], float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """A named series of (x, y) points, drawn as a line (`line=True`) or as points."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str = "#1f5fbf"
    line: bool = True


def nice_ticks(hi: float, count: int = 8) -> list[float]:
    """Round tick values from 0 to at least `hi` (1, 2 or 5 times a power of ten apart)."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(n + 1)]


def _marker(shape: str, x: float, y: float, colour: str, r: float = 5.0) -> str:
    if shape == "ring":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r + 1.5:.1f}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
    if shape == "cross":
        return (f'<path d="M{x - r:.1f},{y - r:.1f} L{x + r:.1f},{y + r:.1f} M{x - r:.1f},{y + r:.1f} '
                f'L{x + r:.1f},{y - r:.1f}" stroke="{colour}" stroke-width="1.5"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r - 1.5:.1f}" fill="{colour}"/>'


def times_plot(rows: Sequence[TimesRow], *, x_label: str = "seconds after the first SYN",
               observed_name: str = "observed", fail_name: str = "ETIMEDOUT", x_max: float | None = None) -> str:
    """Cases as rows over a shared time axis (see the module's docstring); `x_max`: the axis ends
    there (a zoom), and what lies beyond is not drawn (the row says how many marks)."""
    hi = max([t for r in rows for t in r.observed] + [r.observed_fail or 0 for r in rows]
             + [t for r in rows for ts, f in r.models.values() for t in [*ts, f or 0]] + [1.0])
    ticks = nice_ticks(x_max if x_max is not None else hi)
    limit = ticks[-1]
    left, right, top, row_h = 200, 110, 40, 24
    width = 900
    span = width - left - right
    height = top + row_h * len(rows) + 60

    def x(t: float) -> float:
        return left + span * t / ticks[-1]

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot times" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT}>', f'<rect width="{width}" height="{height}" fill="#fff"/>']
    # legend
    lx = left
    out.append(_marker("dot", lx, 16, "#111") + f'<text x="{lx + 9}" y="20">{escape(observed_name)}</text>')
    lx += 30 + 7 * len(observed_name)
    out.append(f'<rect x="{lx - 2}" y="8" width="4" height="16" fill="#111"/><text x="{lx + 7}" y="20">'
               f'{escape(fail_name)} ({escape(observed_name)})</text>')
    lx += 40 + 7 * (len(fail_name) + len(observed_name))
    for name in dict.fromkeys(m for r in rows for m in r.models):
        colour, shape = MODEL_STYLE.get(name, ("#555", "ring"))
        out.append(_marker(shape, lx, 16, colour) + f'<text x="{lx + 11}" y="20" fill="{colour}">{escape(name)} '
                   f'model</text>')
        lx += 90 + 7 * len(name)
    bottom = top + row_h * len(rows)
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{bottom}" stroke="#eee"/>'
                   f'<text x="{x(t):.1f}" y="{bottom + 16}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{left + span / 2:.1f}" y="{bottom + 34}" text-anchor="middle">{escape(x_label)}</text>')
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        out.append(f'<g class="row"><text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(r.label)}</text>'
                   f'<line x1="{left}" y1="{y:.1f}" x2="{left + span}" y2="{y:.1f}" stroke="#ddd"/>')
        beyond = 0
        for name, (ts, fail) in r.models.items():
            colour, shape = MODEL_STYLE.get(name, ("#555", "ring"))
            out += [f'<g class="model" data-model="{escape(name)}">']
            out += [_marker(shape, x(t), y, colour) for t in ts if t <= limit]
            beyond += sum(t > limit for t in ts) + (fail is not None and fail > limit)
            if fail is not None and fail <= limit:
                out.append(f'<rect x="{x(fail) - 2:.1f}" y="{y - 9:.1f}" width="4" height="18" fill="none" '
                           f'stroke="{colour}"/>')
            out.append("</g>")
        beyond += sum(t > limit for t in r.observed) + (r.observed_fail is not None and r.observed_fail > limit)
        out.append('<g class="observed">' + "".join(_marker("dot", x(t), y, "#111") for t in r.observed if t <= limit)
                   + (f'<rect x="{x(r.observed_fail) - 2:.1f}" y="{y - 8:.1f}" width="4" height="16" fill="#111"/>'
                      if r.observed_fail is not None and r.observed_fail <= limit else "") + "</g>")
        if beyond:
            out.append(f'<text x="{left + span + 6}" y="{y + 4:.1f}" fill="#777">+{beyond} beyond</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def xy_plot(series: Sequence[Series], *, x_label: str, y_label: str, width: int = 640, height: int = 320) -> str:
    """Series over linear axes from 0 (see the module's docstring)."""
    xs = [p[0] for s in series for p in s.points] or [1.0]
    ys = [p[1] for s in series for p in s.points] or [1.0]
    xt, yt = nice_ticks(max(xs), 8), nice_ticks(max(ys), 6)
    left, right, top, bottom = 56, 270, 16, 44
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + pw * v / xt[-1]

    def py(v: float) -> float:
        return top + ph - ph * v / yt[-1]

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot xy" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" {_FONT}>', f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for t in xt:
        out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" stroke="#eee"/>'
                   f'<text x="{px(t):.1f}" y="{top + ph + 15}" text-anchor="middle">{t:g}</text>')
    for t in yt:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    for k, s in enumerate(series):
        out.append(f'<g class="series" data-name="{escape(s.name)}">')
        if s.line and len(s.points) > 1:
            d = " ".join(f"{'M' if i == 0 else 'L'}{px(a):.1f},{py(b):.1f}" for i, (a, b) in enumerate(s.points))
            out.append(f'<path d="{d}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        else:
            out += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="5" fill="{s.colour}"/>' for a, b in s.points]
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{left + pw + 12}" y1="{ly - 4}" x2="{left + pw + 30}" y2="{ly - 4}" stroke="{s.colour}" '
                   f'stroke-width="{2 if s.line else 6}"/><text x="{left + pw + 34}" y="{ly}">{escape(s.name)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
