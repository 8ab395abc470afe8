"""Small trend charts, drawn on the server as inline SVG (the console loads nothing from elsewhere)."""

from __future__ import annotations

from markupsafe import Markup, escape


def sparkline(points: list[tuple[float, float]], *, span_s: float, now: float, width: int = 160,
              height: int = 32, label: str = "lag") -> Markup:
    """A polyline of (unix time, value) over the last ``span_s`` seconds up to ``now``; the value axis
    from 0 to the largest value shown (so a flat line at the bottom means 0)."""
    shown = [(t, v) for t, v in points if t >= now - span_s]
    top = max((v for _, v in shown), default=0) or 1
    pad = 2

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * (1 - (now - t) / span_s)

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * v / top

    coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in shown)
    last = f"{shown[-1][1]:.0f}" if shown else "no data"
    title = escape(f"{label}: {last} now, at most {top:.0f} over the last {span_s / 60:.0f} min")
    line = f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{coords}"/>' if shown else ""
    return Markup(f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'data-points="{len(shown)}" data-max="{top:.0f}"><title>{title}</title>'
                  f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>'
                  f"{line}</svg>")
