"""Figures for the app: the displacement-interpolation animation, loss curves, density heatmaps,
the density morph and the pictures of ``gradnet_core.pushforward``, a live preview, and the
animations as GIFs drawn with Pillow (no browser).

Points move along x_t = (1 - t) x + t T(x), t in [0, 1] (McCann's displacement interpolation); each
point keeps the colour of its source position (hue from its angle about the source mean, saturation
from its distance), so a monotone map keeps the colour wheel in order and paths never cross.
Plotly is imported here only; nothing else in gradnet_core needs it.
"""

from __future__ import annotations

import io
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from PIL import Image, ImageDraw, ImageFont

from .densities import Density
from .pushforward import DensityMorph, Grid

__all__ = ["Panel", "Bounds", "COLOURSCALE", "position_colours", "interpolate", "square_bounds", "grid_points",
           "animation_figure", "animation_gif", "snapshot_png", "loss_figure", "losses_figure", "density_heatmap",
           "preview_figure", "density_morph_figure", "density_morph_gif", "density_comparison_figure",
           "residual_figure"]

#: Axis box (x0, x1, y0, y1).
Bounds = tuple[float, float, float, float]

_TARGET_COLOUR = "rgba(90, 90, 90, 0.35)"
_PATH_COLOUR = "rgba(60, 60, 60, 0.35)"
_ARROW_COLOUR = "rgba(20, 20, 20, 0.9)"
_TEXT = "#31333f"   # Streamlit's text colour: darker than Plotly's grey, readable on a projector
#: Every figure's text: 13 px dark (Plotly's default 12 px grey ticks read ~10 px on screen).
FONT = {"size": 13, "color": _TEXT}
_DECIMALS = 4   # frame coordinates are rounded to this many decimals: a third of the JSON, same picture


@dataclass(frozen=True)
class Panel:
    """One side of the comparison: a title and the images T(x) of the shared source points."""

    title: str
    mapped: np.ndarray                                  # T(x): (n, 2)
    arrows: tuple[np.ndarray, np.ndarray] | None = None  # displacement arrows: starts (g, 2), ends (g, 2)


def _as_points(a: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be 2-D points of shape (n, 2); got shape {arr.shape}")
    return arr


def _hue_and_alpha(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in [0, 1) from the angle about the mean; opacity from the distance rank (centre pale)."""
    x = _as_points(x, "source points")
    centred = x - x.mean(axis=0)
    hue = (np.arctan2(centred[:, 1], centred[:, 0]) / (2 * math.pi)) % 1.0
    rank = np.linalg.norm(centred, axis=1).argsort().argsort() / max(len(x) - 1, 1)
    return hue, 0.3 + 0.7 * rank


def _wheel_anchors(n: int = 12) -> np.ndarray:
    """RGB in [0, 1] of ``n + 1`` equally spaced hues around the colour wheel (first = last)."""
    hues = np.arange(n + 1) / n % 1.0
    sector = np.floor(hues * 6).astype(int) % 6
    f = hues * 6 - np.floor(hues * 6)
    one, zero = np.ones_like(f), np.zeros_like(f)
    table = np.stack([np.stack(c, axis=1) for c in ((one, f, zero), (1 - f, one, zero), (zero, one, f),
                                                    (zero, 1 - f, one), (f, zero, one), (one, zero, 1 - f))])
    return 0.9 * table[sector, np.arange(n + 1)]


_ANCHORS = _wheel_anchors()
#: The cyclic colour scale of source positions (Plotly interpolates it linearly, as the GIF does).
COLOURSCALE = [[i / (len(_ANCHORS) - 1), "rgb({},{},{})".format(*np.round(c * 255).astype(int))]
               for i, c in enumerate(_ANCHORS)]


def position_colours(x: np.ndarray) -> np.ndarray:
    """RGB colours ``(n, 3)`` uint8 of source points ``x: (n, 2)`` on a white background: hue from
    the angle about the mean, paler towards the centre (the GIF's version of ``_marker``)."""
    hue, alpha = _hue_and_alpha(x)
    pos = np.linspace(0.0, 1.0, len(_ANCHORS))
    rgb = np.stack([np.interp(hue, pos, _ANCHORS[:, c]) for c in range(3)], axis=1)
    blended = alpha[:, None] * rgb + (1 - alpha[:, None])
    return np.clip(np.round(blended * 255), 0, 255).astype(np.uint8)


def _marker(x: np.ndarray, size: float) -> dict:
    """Plotly marker colouring each point by its source position. Numbers and a colour scale, not
    one colour string per point: Plotly validates strings one by one, which is slow."""
    hue, alpha = _hue_and_alpha(x)
    return {"size": size, "color": hue, "colorscale": COLOURSCALE, "cmin": 0.0, "cmax": 1.0,
            "opacity": alpha, "line": {"width": 0}}


def interpolate(x: np.ndarray, mapped: np.ndarray, t: float) -> np.ndarray:
    """x_t = (1 - t) x + t T(x) for ``x, mapped: (n, d)``."""
    return (1.0 - t) * x + t * mapped


def square_bounds(*arrays: np.ndarray, margin: float = 0.08, quantile: float = 0.002, spread: float = 1.5) -> Bounds:
    """A square box holding all points of every ``(n, 2)`` array, unless a few lie far out: where holding every point
    would need a box over ``spread`` times as wide as the one that leaves out the extreme ``quantile`` on each side,
    those few far-flung points are left out so that they do not shrink the picture. (Leaving out a quantile always
    cut the tails of plain Gaussian samples at the panels' edges.)"""
    pts = np.concatenate([_as_points(a, "points") for a in arrays if a is not None and len(a)])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        return (-1.0, 1.0, -1.0, 1.0)
    lo = np.quantile(pts, quantile, axis=0)
    hi = np.quantile(pts, 1.0 - quantile, axis=0)
    if (pts.max(axis=0) - pts.min(axis=0)).max() <= spread * (hi - lo).max():
        lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2
    half = max(float((hi - lo).max()) / 2, 1e-6) * (1 + margin)
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def grid_points(bounds: Bounds, per_side: int = 12) -> np.ndarray:
    """A regular ``per_side`` x ``per_side`` grid inside ``bounds`` (cell centres): ``(per_side**2, 2)``."""
    x0, x1, y0, y1 = bounds
    xs = x0 + (np.arange(per_side) + 0.5) * (x1 - x0) / per_side
    ys = y0 + (np.arange(per_side) + 0.5) * (y1 - y0) / per_side
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _segments(starts: np.ndarray, ends: np.ndarray) -> tuple[list, list]:
    """Line segments as one trace: x0, x1, None, ..."""
    n = len(starts)
    xs = np.full(3 * n, np.nan)
    ys = np.full(3 * n, np.nan)
    xs[0::3], xs[1::3] = starts[:, 0], ends[:, 0]
    ys[0::3], ys[1::3] = starts[:, 1], ends[:, 1]

    def gaps(a: np.ndarray) -> list[float | None]:  # Plotly breaks a line at None
        return [None if math.isnan(v) else float(v) for v in a]

    return gaps(xs), gaps(ys)


def _subsample(n: int, m: int) -> np.ndarray:
    return np.arange(n) if n <= m else np.linspace(0, n - 1, m).round().astype(int)


def _animation_inputs(points: np.ndarray, panels: Sequence[Panel], target_samples: np.ndarray | None,
                      frames: int, max_points: int, bounds: Bounds | None, quantile: float = 0.002,
                      margin: float = 0.08) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None, Bounds]:
    """What both animations draw, validated: the source points and every panel's T(x) thinned to
    ``max_points``, the target samples (or None) and the axis bounds (``square_bounds`` of all of them,
    with ``quantile`` and ``margin``, if None)."""
    if not 2 <= frames <= 200:
        raise ValueError(f"frames must be between 2 and 200; got {frames}")
    if not panels:
        raise ValueError("the animation needs at least one panel")
    x = _as_points(points, "source points")
    maps = [_as_points(p.mapped, f"mapped points of {p.title!r}") for p in panels]
    if any(m.shape != x.shape for m in maps):
        raise ValueError("every panel must map the same source points")
    idx = _subsample(len(x), max_points)
    x, maps = x[idx], [m[idx] for m in maps]
    target = None if target_samples is None else _as_points(target_samples, "target samples")
    if bounds is None:
        bounds = square_bounds(x, *maps, target, quantile=quantile, margin=margin)
    return x, maps, target, bounds


def _square_axes(fig: go.Figure, bounds: Bounds, row: int, col: int, suffix: str) -> None:
    x0, x1, y0, y1 = bounds
    fig.update_xaxes(range=[x0, x1], autorange=False, row=row, col=col, showgrid=False, zeroline=False,
                     constrain="domain")
    fig.update_yaxes(range=[y0, y1], autorange=False, row=row, col=col, showgrid=False, zeroline=False,
                     scaleanchor=f"x{suffix}", scaleratio=1, constrain="domain")


#: Pixels under an animation's panels for its controls: the t slider from ``_SLIDER_TOP`` down, the play/pause
#: buttons under its start from ``_BUTTONS_TOP`` (beside it, they covered its handle at t = 0 on a narrow window or a
#: projector: a review). Offsets in pixels, through pad, so that they hold at any figure height.
_CONTROLS_HEIGHT, _SLIDER_TOP, _BUTTONS_TOP = 150, 20, 110


def _play_controls(ts: np.ndarray, redraw: bool, frame_ms: int) -> dict:
    """Play/pause buttons and a t slider driving frames named "0", "1", ... (layout keywords; the figure's bottom
    margin must be ``_CONTROLS_HEIGHT``)."""
    animate = {"frame": {"duration": frame_ms, "redraw": redraw}, "transition": {"duration": 0},
               "mode": "immediate", "fromcurrent": True}
    still = {"frame": {"duration": 0, "redraw": redraw}, "mode": "immediate", "transition": {"duration": 0}}
    return {
        "updatemenus": [{
            "type": "buttons", "direction": "left", "showactive": False, "x": 0.0, "y": 0.0,
            "xanchor": "left", "yanchor": "top", "pad": {"t": _BUTTONS_TOP, "r": 10},
            "buttons": [{"label": "▶ Play", "method": "animate", "args": [None, animate]},
                        {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]}],
        }],
        "sliders": [{
            "active": 0, "x": 0.0, "len": 1.0, "y": 0.0, "yanchor": "top", "pad": {"t": _SLIDER_TOP},
            "currentvalue": {"prefix": "t = ", "visible": True, "xanchor": "right", "font": {"size": 14}},
            "font": {"size": 12, "color": _TEXT},
            "steps": [{"label": f"{t:.2f}", "method": "animate", "args": [[f"{k}"], still]}
                      for k, t in enumerate(ts)],
        }],
    }


def animation_figure(points: np.ndarray, panels: Sequence[Panel], target_samples: np.ndarray | None = None,
                     *, frames: int = 30, arrows: bool = False, trajectories: bool = False,
                     show_target: bool = False, max_points: int = 2000, max_paths: int = 300,
                     bounds: Bounds | None = None, frame_ms: int = 60) -> go.Figure:
    """Side-by-side animation of x_t for every panel, driven by one play/pause and one t slider.

    ``points: (n, 2)`` source samples shared by all panels; each panel's ``mapped`` is T(points).
    Toggles: ``arrows`` (each panel's displacement arrows), ``trajectories`` (straight paths x -> T(x)
    for up to ``max_paths`` points), ``show_target`` (``target_samples`` in grey). Axes are fixed and
    equal in every panel.
    """
    x, maps, target, bounds = _animation_inputs(points, panels, target_samples, frames, max_points, bounds)
    marker = _marker(x, 4)
    ts = np.linspace(0.0, 1.0, frames)

    n_panels = len(panels)
    titles = [_two_lines(p.title) for p in panels]
    fig = make_subplots(rows=1, cols=n_panels, subplot_titles=titles, horizontal_spacing=0.04)
    point_traces: list[int] = []
    paths = _subsample(len(x), max_paths)
    for col, (panel, mapped) in enumerate(zip(panels, maps), start=1):
        if show_target and target is not None:
            fig.add_trace(go.Scatter(x=target[:, 0], y=target[:, 1], mode="markers", hoverinfo="skip",
                                     marker={"size": 3, "color": _TARGET_COLOUR}, name="target samples",
                                     showlegend=False), row=1, col=col)
        if trajectories:
            sx, sy = _segments(x[paths], mapped[paths])
            fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", hoverinfo="skip", name="paths",
                                     line={"width": 0.8, "color": _PATH_COLOUR}, showlegend=False),
                          row=1, col=col)
        point_traces.append(len(fig.data))
        fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", name=panel.title, hoverinfo="skip",
                                 marker=marker, showlegend=False), row=1, col=col)
        if arrows and panel.arrows is not None:
            starts = _as_points(panel.arrows[0], "arrow starts")
            ends = _as_points(panel.arrows[1], "arrow ends")
            ax, ay = _segments(starts, ends)
            sizes = [0, 7, 0] * len(starts)
            fig.add_trace(go.Scatter(x=ax, y=ay, mode="lines+markers", hoverinfo="skip", name="arrows",
                                     line={"width": 1.2, "color": _ARROW_COLOUR}, showlegend=False,
                                     marker={"symbol": "arrow", "angleref": "previous", "size": sizes,
                                             "color": _ARROW_COLOUR}),
                          row=1, col=col)

    fig.frames = [
        go.Frame(name=f"{k}", traces=point_traces,
                 data=[go.Scatter(x=xt[:, 0], y=xt[:, 1])
                       for xt in (np.round(interpolate(x, m, t), _DECIMALS) for m in maps)])
        for k, t in enumerate(ts)
    ]
    for col in range(1, n_panels + 1):
        _square_axes(fig, bounds, 1, col, "" if col == 1 else str(col))
    top = 60 if any("<br>" in t for t in titles) else 40
    fig.update_layout(font=FONT, height=530 + top - 40, margin={"l": 10, "r": 10, "t": top, "b": _CONTROLS_HEIGHT},
                      plot_bgcolor="white", **_play_controls(ts, redraw=False, frame_ms=frame_ms))
    return fig


#: Characters of a panel title on one line: three panels of a window 900 px wide have about 190 px each.
_TITLE_LINE = 24


def _two_lines(title: str) -> str:
    """A long panel title on two lines (Plotly's ``<br>``), broken before its parenthesis, after its colon, or after
    its last comma or space that leaves the first line short enough: "Ground truth (barycentric, n=1000)" overlapped
    its neighbours' titles in a narrow window."""
    if len(title) <= _TITLE_LINE:
        return title
    cut = title.find(" (")
    if cut > 0:
        return f"{title[:cut]}<br>{title[cut + 1:]}"
    cut = title.find(": ")
    if 0 < cut < _TITLE_LINE:
        return f"{title[:cut + 1]}<br>{title[cut + 2:]}"
    cut = title.rfind(", ", 0, _TITLE_LINE)
    if cut > 0:
        return f"{title[:cut + 1]}<br>{title[cut + 2:]}"
    cut = title.rfind(" ", 0, _TITLE_LINE + 1)
    return f"{title[:cut]}<br>{title[cut + 1:]}" if cut > 0 else title


def _nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """About ``count`` round tick values inside [lo, hi] (steps of 1, 2 or 5 times a power of ten), at least three:
    the step that fits ``count`` can leave one ([-4.9, 4.9] in steps of 5: only 0, a GIF's axes without a scale)."""
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    steps = [m * power for m in (0.1, 0.2, 0.5, 1, 2, 5, 10)]
    largest = next(i for i, step in enumerate(steps) if step >= raw)
    for step in reversed(steps[:largest + 1]):
        ticks = np.arange(math.ceil(lo / step) * step, hi + 1e-9 * step, step)
        if len(ticks) >= 3:
            break
    return ticks


def _gif_margins(size: int) -> tuple[int, int, ImageFont.FreeTypeFont]:
    """The left and bottom margins, px, that a GIF panel of ``size`` px keeps for its ticks, and their font."""
    return max(34, size // 9), max(22, size // 14), ImageFont.load_default(size=max(11, size // 28))


def _panel_axes(draw: ImageDraw.ImageDraw, bounds: Bounds, origin: tuple[int, int], size: int,
                font: ImageFont.FreeTypeFont) -> None:
    """A GIF panel's frame, and round ticks with their values under and left of it: the panel is ``size`` px square
    with its top left corner at ``origin`` and shows ``bounds`` (x0, x1, y0, y1), y up."""
    x0, x1, y0, y1 = bounds
    ox, oy = origin
    draw.rectangle([ox - 1, oy - 1, ox + size - 1, oy + size - 1], outline=(120, 120, 120))
    for value in _nice_ticks(x0, x1):
        c = ox + (value - x0) / (x1 - x0) * (size - 3)
        draw.line([(c, oy + size - 1), (c, oy + size + 3)], fill=(90, 90, 90))
        draw.text((c, oy + size + 5), f"{value:g}", fill=(40, 40, 40), font=font, anchor="mt")
    for value in _nice_ticks(y0, y1):
        r = oy + (y1 - value) / (y1 - y0) * (size - 3)
        draw.line([(ox - 4, r), (ox - 1, r)], fill=(90, 90, 90))
        draw.text((ox - 6, r), f"{value:g}", fill=(40, 40, 40), font=font, anchor="rm")


def animation_gif(points: np.ndarray, panels: Sequence[Panel], target_samples: np.ndarray | None = None,
                  *, frames: int = 30, size: int = 360, frame_ms: int = 70, hold_ms: int = 1200,
                  show_target: bool = False, arrows: bool = False, trajectories: bool = False,
                  title: str = "", max_points: int = 2000, max_paths: int = 300,
                  bounds: Bounds | None = None) -> bytes:
    """The animation of ``animation_figure`` as an animated GIF for slides: ``frames`` frames, the first
    and the last held for ``hold_ms``, axes with ticks on each panel, an optional ``title`` line, and the
    same toggles (target samples, displacement arrows, straight trajectories). Drawn with Pillow; the
    axes hold every point (none is clipped). Returns the file's bytes."""
    # Every point in view (quantile 0): the browser's quantile trim would drop the outermost points off the picture.
    x, maps, target, bounds = _animation_inputs(points, panels, target_samples, frames, max_points, bounds,
                                                quantile=0.0, margin=0.04)
    colours = position_colours(x)
    left, bottom, font = _gif_margins(size)
    title_font = ImageFont.load_default(size=max(13, size // 22))
    top_pad = 8
    head = (title_font.size + 10 if title else 0) + font.size + 10          # title line, then panel titles
    width, height = (size + left) * len(panels), head + size + bottom + top_pad

    def to_pixels(pts: np.ndarray, panel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        row, col, inside = _pixels(pts, bounds, size)
        return row + head, col + panel * (size + left) + left, inside

    background = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(background)
    if title:
        draw.text((8, 4), _pillow_text(title), fill=(0, 0, 0), font=title_font)
    paths = _subsample(len(x), max_paths)
    for p, (panel, mapped) in enumerate(zip(panels, maps)):
        _panel_axes(draw, bounds, (p * (size + left) + left, head), size, font)
        if show_target and target is not None:
            row, col, inside = to_pixels(target, p)
            pixels = np.asarray(background).copy()
            pixels[row[inside], col[inside]] = (200, 200, 200)
            background = Image.fromarray(pixels)
            draw = ImageDraw.Draw(background)
        if trajectories:
            starts, ends = to_pixels(x[paths], p), to_pixels(mapped[paths], p)
            for r0, c0, r1, c1 in zip(starts[0], starts[1], ends[0], ends[1]):
                draw.line([(c0, r0), (c1, r1)], fill=(175, 175, 175))
        if arrows and panel.arrows is not None:
            starts = to_pixels(_as_points(panel.arrows[0], "arrow starts"), p)
            ends = to_pixels(_as_points(panel.arrows[1], "arrow ends"), p)
            for r0, c0, r1, c1 in zip(starts[0], starts[1], ends[0], ends[1]):
                _arrow(draw, (c0, r0), (c1, r1))
    images = []
    for t in np.linspace(0.0, 1.0, frames):
        canvas = np.asarray(background).copy()
        for p, mapped in enumerate(maps):
            _dots(canvas, *to_pixels(interpolate(x, mapped, t), p), colours)
        image = Image.fromarray(canvas)
        frame_draw = ImageDraw.Draw(image)
        for p, panel in enumerate(panels):
            frame_draw.text((p * (size + left) + left, head - font.size - 6),
                            _pillow_text(f"{panel.title}   t = {t:.2f}"), fill=(0, 0, 0), font=font)
        images.append(image)
    return _gif_bytes(images, frame_ms, hold_ms)


#: Pillow's built-in font covers ASCII only: what a figure's titles commonly hold beyond it, spelled in ASCII.
_ASCII_SPELLING = str.maketrans({"–": "-", "—": "-", "−": "-", "→": "->", "←": "<-", "×": "x", "≤": "<=",
                                 "≥": ">="})


def _pillow_text(text: str) -> str:
    """``text`` in the characters Pillow's built-in font draws: accents dropped (è -> e), sub- and superscript
    digits plain (W₂ -> W2), dashes and arrows spelled out, anything else as "?" rather than an empty box."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_SPELLING))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).encode("ascii", "replace").decode()


def _pixels(pts: np.ndarray, bounds: Bounds, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column of ``pts: (n, 2)`` in a ``size``-pixel square panel showing ``bounds`` (y up), and which
    points lie inside it with room for a 2 x 2 dot (non-finite ones never do; their row and column are 0)."""
    x0, x1, y0, y1 = bounds
    with np.errstate(invalid="ignore"):
        col = np.round((pts[:, 0] - x0) / (x1 - x0) * (size - 3))
        row = np.round((y1 - pts[:, 1]) / (y1 - y0) * (size - 3))
        inside = (col >= 0) & (col < size - 2) & (row >= 0) & (row < size - 2)     # False for NaN
    return np.where(inside, row, 0).astype(int), np.where(inside, col, 0).astype(int), inside


def _dots(canvas: np.ndarray, row: np.ndarray, col: np.ndarray, inside: np.ndarray, colours: np.ndarray) -> None:
    """Paint 2 x 2 pixel dots of ``colours: (n, 3)`` uint8 at ``row, col`` (their top left) where ``inside``."""
    for dr in (0, 1):
        for dc in (0, 1):
            canvas[row[inside] + dr, col[inside] + dc] = colours[inside]


def snapshot_png(frames: Sequence[Sequence[np.ndarray]], colours: np.ndarray, row_titles: Sequence[str],
                 col_titles: Sequence[str], bounds: Bounds, cell: int = 200,
                 background: np.ndarray | None = None) -> bytes:
    """A grid of point snapshots as PNG bytes: ``frames[r][c]`` are the ``(n, 2)`` points of row r at column c,
    drawn as the GIF draws them (2 x 2 pixel dots of ``colours: (n, 3)`` uint8) in a ``cell``-pixel square
    panel showing ``bounds`` = (x0, x1, y0, y1), over ``background: (m, 2)`` points as grey dots. Column titles
    above, row titles (lines split at newlines) to the left; points outside the bounds or not finite are left out."""
    rows, cols = len(frames), len(col_titles)
    if rows != len(row_titles) or any(len(row) != cols for row in frames):
        raise ValueError(f"frames must be {len(row_titles)} rows of {cols} point sets, one per row and column title")
    font = ImageFont.load_default(size=13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_titles, col_titles = [_pillow_text(t) for t in row_titles], [_pillow_text(t) for t in col_titles]
    widest = max((measure.multiline_textbbox((0, 0), title, font=font)[2] for title in row_titles), default=0)
    gap, top, left = 6, font.size + 12, max(60, widest + 20)
    image = Image.new("RGB", (left + cols * (cell + gap), top + rows * (cell + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for r in range(rows):
        for c in range(cols):
            ox, oy = left + c * (cell + gap), top + r * (cell + gap)
            draw.rectangle([ox, oy, ox + cell - 1, oy + cell - 1], fill=(248, 248, 248))
    pixels = np.asarray(image).copy()
    colours = np.asarray(colours, dtype=np.uint8)
    grey = None if background is None else _pixels(_as_points(background, "background points"), bounds, cell)
    grey_colours = None if grey is None else np.full((len(grey[0]), 3), 205, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            ox, oy = left + c * (cell + gap), top + r * (cell + gap)
            if grey is not None:
                row, col, inside = grey
                _dots(pixels, row + oy, col + ox, inside, grey_colours)
            row, col, inside = _pixels(_as_points(frames[r][c], f"points of row {r}, column {c}"), bounds, cell)
            _dots(pixels, row + oy, col + ox, inside, colours)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for c, title in enumerate(col_titles):
        draw.text((left + c * (cell + gap) + cell / 2, top - 6), title, fill=(0, 0, 0), font=font, anchor="md")
    for r, title in enumerate(row_titles):
        draw.multiline_text((left - 10, top + r * (cell + gap) + cell / 2), title, fill=(0, 0, 0), font=font,
                            anchor="rm", align="right")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _gif_bytes(images: list[Image.Image], frame_ms: int, hold_ms: int, colours: np.ndarray | None = None) -> bytes:
    """A looping GIF of the RGB ``images``, ``frame_ms`` a frame, the first and the last held ``hold_ms``.

    One palette for every frame, of the colours of the first and the last frame and of ``colours: (k, 3)`` uint8
    (those a frame between may hold that neither end does, such as a colour scale's), each frame mapped onto it
    without dithering: a per-frame adaptive palette cost ten times as much (median cut on every frame) and could
    drop a rare colour, a point's, from a frame."""
    width, height = images[0].size
    extra = np.zeros((0, 3), np.uint8) if colours is None else np.asarray(colours, np.uint8).reshape(-1, 3)
    strip = -(-len(extra) // width)                                 # rows that hold the extra colours
    ends = Image.new("RGB", (width, 2 * height + strip), (255, 255, 255))
    ends.paste(images[0], (0, 0))
    ends.paste(images[-1], (0, height))
    if strip:
        row = np.full((strip * width, 3), 255, np.uint8)
        row[:len(extra)] = extra
        ends.paste(Image.fromarray(row.reshape(strip, width, 3)), (0, 2 * height))
    palette = ends.quantize(255, method=Image.Quantize.MAXCOVERAGE)
    frames = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    durations = [frame_ms] * len(frames)
    durations[0] = durations[-1] = hold_ms
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations,
                   loop=0, optimize=False, disposal=1)
    return buffer.getvalue()


def _arrow(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A dark arrow from ``start`` to ``end`` (pixels) with a small head."""
    draw.line([start, end], fill=(30, 30, 30), width=1)
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length < 3:
        return
    ux, uy = dx / length, dy / length
    side = 4.0
    back = (end[0] - 2 * side * ux, end[1] - 2 * side * uy)
    draw.polygon([end, (back[0] - side * uy, back[1] + side * ux), (back[0] + side * uy, back[1] - side * ux)],
                 fill=(30, 30, 30))


def loss_figure(steps: Sequence[float], losses: Sequence[float], *, height: int = 260,
                title: str = "Training loss", figure: go.Figure | None = None) -> go.Figure:
    """Loss against step; logarithmic when every loss is positive.

    Given a ``figure`` made by this function, its curve is replaced in place and it is returned:
    about ten times cheaper than a new figure, which matters for a live curve redrawn twice a second.
    """
    steps_a = np.asarray(steps, dtype=float)
    loss_a = np.asarray(losses, dtype=float)
    finite = np.isfinite(loss_a)
    yaxis = _loss_axis(loss_a[finite])
    if figure is not None:
        figure.data[0].update(x=steps_a[finite], y=loss_a[finite])
        figure.layout.yaxis.update(yaxis)
        return figure
    fig = go.Figure(go.Scatter(x=steps_a[finite], y=loss_a[finite], mode="lines",
                               line={"width": 1.5, "color": "#1f77b4"}, name="loss"))
    fig.update_layout(font=FONT, height=height, margin={"l": 10, "r": 10, "t": 36, "b": 10}, title=title,
                      xaxis_title="step", yaxis_title="loss", yaxis=yaxis)
    return fig


def _loss_axis(losses: np.ndarray) -> dict[str, Any]:
    """The y axis for finite ``losses``: logarithmic when every one is positive, and then over a decade or more
    labelled at decades only (Plotly's 2-and-5 labels between them read as "2, 1, 5, 2, 0.1" on a small chart)."""
    log = bool(losses.size and (losses > 0).all())
    decades = log and np.log10(losses.max() / losses.min()) >= 1
    return {"type": "log" if log else "linear", "dtick": 1 if decades else None}


def losses_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]], *, height: int = 260,
                  title: str = "Training loss", switches: Sequence[tuple[float, str]] = ()) -> go.Figure:
    """Several loss curves (label -> (steps, losses)) overlaid on one chart; logarithmic when every loss
    is positive. Losses of different objectives are on different scales; the legend names each run.
    ``switches``: (step, words) where a run went on with another training (``TrainResult.phases``), drawn as a
    dotted line labelled "-> words", so that a jump in the curve reads as the change of objective it is."""
    fig = go.Figure()
    # Each label right of its line, one line lower than the last: left of their lines, at one height, the labels of two
    # switches 150 steps apart were printed over each other, and in a narrow window the axis ran to -1000 (a review).
    for k, (step, words) in enumerate(dict.fromkeys(switches)):
        fig.add_vline(x=step, line={"width": 1, "dash": "dot", "color": "#777777"})
        fig.add_annotation(x=step, xref="x", y=1.0 - 0.13 * k, yref="paper", text=f" → {words}", showarrow=False,
                           xanchor="left", yanchor="top", font={"size": 11, "color": "#555555"},
                           bgcolor="rgba(255, 255, 255, 0.8)")
    shown, steps_shown = [], []
    for label, (steps, losses) in curves.items():
        s_a, l_a = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
        finite = np.isfinite(l_a)
        # a curve with no finite loss would make the others linear, as before: an empty array is not all positive
        shown.append(l_a[finite] if finite.any() else np.zeros(1))
        steps_shown.append(s_a)
        fig.add_trace(go.Scatter(x=s_a[finite], y=l_a[finite], mode="lines", line={"width": 1.5}, name=label))
    fig.update_layout(font=FONT, height=height, margin={"l": 10, "r": 10, "t": 36, "b": 10}, title=title,
                      xaxis_title="step", yaxis_title="loss", yaxis=_loss_axis(np.concatenate(shown or [np.zeros(0)])),
                      # under the axis title, not across it (a review read "#2 mGradNet-M (KLstep...")
                      legend={"orientation": "h", "yanchor": "top", "y": -0.32, "x": 0})
    every_step = np.concatenate(steps_shown or [np.zeros(0)])
    if every_step.size and every_step.min() < every_step.max():
        fig.update_xaxes(range=[float(every_step.min()), float(every_step.max())])     # the steps run, nothing more
    return fig


def density_heatmap(density: Density, bounds: Bounds, *, resolution: int = 90, height: int = 300,
                    title: str = "Density") -> go.Figure:
    """p(x) of a 2-D density on a ``resolution`` x ``resolution`` grid over ``bounds``, y up."""
    if density.dim != 2:
        raise ValueError(f"a density heatmap needs a 2-D density; got {density.dim}-D")
    x0, x1, y0, y1 = bounds
    xs = np.linspace(x0, x1, resolution)
    ys = np.linspace(y0, y1, resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=density.dtype,
                           device=density.device)
    with torch.no_grad():
        p = density.log_prob(grid).exp().cpu().numpy().reshape(resolution, resolution)
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=p, colorscale="Viridis", showscale=False,
                               hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>p=%{z:.3g}<extra></extra>"))
    fig.update_layout(font=FONT, height=height, margin={"l": 10, "r": 10, "t": 36, "b": 10}, title=title)
    fig.update_xaxes(range=[x0, x1], constrain="domain")
    fig.update_yaxes(range=[y0, y1], scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def preview_figure(points: np.ndarray, mapped: np.ndarray, bounds: Bounds,
                   target_samples: np.ndarray | None = None, *, height: int = 300,
                   title: str = "Mapped points") -> go.Figure:
    """A small scatter of T(x) for a live preview, coloured by source position, on fixed axes."""
    x = _as_points(points, "source points")
    mapped = _as_points(mapped, "mapped points")
    fig = go.Figure()
    if target_samples is not None:
        target = _as_points(target_samples, "target samples")
        fig.add_trace(go.Scatter(x=target[:, 0], y=target[:, 1], mode="markers", hoverinfo="skip",
                                 marker={"size": 3, "color": _TARGET_COLOUR}, name="target"))
    fig.add_trace(go.Scatter(x=mapped[:, 0], y=mapped[:, 1], mode="markers", hoverinfo="skip",
                             marker=_marker(x, 4), name="T(x)"))
    x0, x1, y0, y1 = bounds
    fig.update_layout(font=FONT, height=height, margin={"l": 10, "r": 10, "t": 36, "b": 10}, title=title,
                      showlegend=False, plot_bgcolor="white")
    fig.update_xaxes(range=[x0, x1], autorange=False, showgrid=False, constrain="domain")
    fig.update_yaxes(range=[y0, y1], autorange=False, showgrid=False, scaleanchor="x", scaleratio=1,
                     constrain="domain")
    return fig


# =============================================================================================
# Density pictures (gradnet_core.pushforward)
# =============================================================================================
_VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
            "#fde725"]
_DIVERGING = "RdBu_r"          # blue below zero, red above, white at zero
_LEVELS = 255                  # a morph frame is sent as integers 0..255 of this scale: a third of the JSON


def _viridis_table() -> np.ndarray:
    """Viridis as a (256, 3) uint8 lookup table, for the GIF."""
    anchors = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in _VIRIDIS], dtype=float)
    pos = np.linspace(0.0, 1.0, len(anchors))
    levels = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(levels, pos, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def _density_scale(values: np.ndarray) -> float:
    """The top of a density colour scale: the 99.5th percentile of the positive values, so that a few
    sharp peaks do not wash out the rest; 1 when there are none."""
    positive = values[np.isfinite(values) & (values > 0)]
    return float(np.quantile(positive, 0.995)) if positive.size else 1.0


def density_morph_figure(morph: DensityMorph, particles: tuple[np.ndarray, np.ndarray] | None = None, *,
                         title: str = "Learned map: density", particles_title: str = "Ground truth: particles",
                         frame_ms: int = 250, max_particles: int = 200, height: int = 530) -> go.Figure:
    """The density of x_t = (1 - t) x + t T(x) as an animated heatmap, with one play/pause and one t slider;
    beside it, when ``particles`` = (x, T*(x)) is given, up to ``max_particles`` of those points moving on
    the same axes and clock. A heatmap frame needs a full redraw, and when a redraw takes longer than a frame
    the heatmap stays blank until the end. In Chromium without a GPU on a 2-core AVX2 machine a redraw took
    60 ms for the heatmap alone plus about 23 ms per 100 particles (150-270 ms with 400 in the app's page,
    where 100 ms frames left it blank), hence 200 particles and 250 ms frames (30 frames: 7.5 s)."""
    grid = morph.grid
    top = _density_scale(morph.densities)
    levels = [np.clip(np.round(d / top * _LEVELS), 0, _LEVELS).astype(np.uint8) for d in morph.densities]
    cols = 2 if particles is not None else 1
    # on two lines where long: "mGradNet-M: density of x_t" ran into "Ground truth (closed form): particles" in a
    # 900 px window (a review); the panels 0.08 apart, room for the right one's y labels there (at 0.04 they lay over
    # the heatmap)
    titles = [_two_lines(title), _two_lines(particles_title)][:cols]
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.08)
    fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=levels[0], zmin=0, zmax=_LEVELS, colorscale="Viridis",
                             showscale=False, hoverinfo="skip"), row=1, col=1)
    traces = [0]
    if particles is not None:
        x = _as_points(particles[0], "particle starts")
        mapped = _as_points(particles[1], "particle ends")
        idx = _subsample(len(x), max_particles)
        x, mapped = x[idx], mapped[idx]
        fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=_marker(x, 4)), row=1, col=2)
        traces.append(1)
    frames = []
    for k, t in enumerate(morph.times):
        data = [go.Heatmap(z=levels[k])]
        if particles is not None:
            xt = np.round(interpolate(x, mapped, t), _DECIMALS)
            data.append(go.Scatter(x=xt[:, 0], y=xt[:, 1]))
        frames.append(go.Frame(name=f"{k}", traces=traces, data=data))
    fig.frames = frames
    for col in range(1, cols + 1):
        _square_axes(fig, grid.bounds, 1, col, "" if col == 1 else str(col))
    top = 60 if any("<br>" in t for t in titles) else 40
    fig.update_layout(font=FONT, height=height + top - 40, margin={"l": 10, "r": 10, "t": top, "b": _CONTROLS_HEIGHT},
                      plot_bgcolor="white", **_play_controls(morph.times, redraw=True, frame_ms=frame_ms))
    return fig


def density_morph_gif(morph: DensityMorph, *, title: str = "density", size: int = 300, frame_ms: int = 80,
                      hold_ms: int = 1000) -> bytes:
    """The density morph as an animated GIF (viridis, y up) with the axes of its grid, holding the first and last
    frames for ``hold_ms``; returns the file's bytes."""
    top = _density_scale(morph.densities)
    table = _viridis_table()
    left, bottom, font = _gif_margins(size)
    title_h = font.size + 12
    images = []
    for t, density in zip(morph.times, morph.densities):
        index = np.clip(np.round(density / top * 255), 0, 255).astype(np.uint8)[::-1]   # row 0 at the top
        picture = Image.fromarray(table[index]).resize((size, size), Image.Resampling.BILINEAR)
        frame = Image.new("RGB", (left + size + 8, title_h + size + bottom), (255, 255, 255))
        frame.paste(picture, (left, title_h))
        draw = ImageDraw.Draw(frame)
        # the axes of the page's heatmap: a slide without them did not say where the mass goes (a review)
        _panel_axes(draw, morph.grid.bounds, (left, title_h), size, font)
        draw.text((left, 4), _pillow_text(f"{title}   t = {t:.2f}"), fill=(0, 0, 0), font=font)
        images.append(frame)
    return _gif_bytes(images, frame_ms, hold_ms, colours=table)


def density_comparison_figure(pushed: np.ndarray, target: np.ndarray, grid: Grid, *,
                              titles: Sequence[str] = ("T#p (learned map)", "target q", "T#p − q"),
                              height: int = 340) -> go.Figure:
    """Three heatmaps on one grid: the pushforward density, the target density (one colour scale) and
    their difference (diverging, white at zero)."""
    top = _density_scale(np.concatenate([np.ravel(pushed), np.ravel(target)]))
    diff = np.asarray(pushed) - np.asarray(target)
    span = max(float(np.quantile(np.abs(diff), 0.995)), 1e-12)
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(titles), horizontal_spacing=0.04)
    hover = "x=%{x:.2f}, y=%{y:.2f}<br>%{z:.3g}<extra></extra>"
    for col, z in ((1, pushed), (2, target)):
        fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=np.round(z, 4), zmin=0, zmax=top, colorscale="Viridis",
                                 showscale=False, hovertemplate=hover), row=1, col=col)
    fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=np.round(diff, 4), zmin=-span, zmax=span,
                             colorscale=_DIVERGING, hovertemplate=hover,
                             colorbar={"thickness": 10, "len": 0.8}), row=1, col=3)
    for col in (1, 2, 3):
        _square_axes(fig, grid.bounds, 1, col, "" if col == 1 else str(col))
    fig.update_layout(font=FONT, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, plot_bgcolor="white")
    return fig


def residual_figure(field: np.ndarray, grid: Grid, *, title: str = "log p − log det J_T − log q∘T",
                    height: int = 380) -> go.Figure:
    """The Monge–Ampère residual over the source's support (NaN elsewhere, left blank), diverging colours
    symmetric about zero: red where the map squeezes mass more than the target asks, blue where less."""
    finite = np.abs(field[np.isfinite(field)])
    span = max(float(np.quantile(finite, 0.98)), 1e-3) if finite.size else 1.0
    fig = make_subplots(rows=1, cols=1)
    fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=np.round(field, 4), zmin=-span, zmax=span,
                             colorscale=_DIVERGING, colorbar={"thickness": 10, "len": 0.8},
                             hovertemplate="x=%{x:.2f}, y=%{y:.2f}<br>residual %{z:.3f}<extra></extra>"))
    fig.update_layout(font=FONT, height=height, margin={"l": 10, "r": 10, "t": 36, "b": 10}, title=title,
                      plot_bgcolor="white")
    # Axes around the support (a cell's margin), not the whole square grid: two blobs side by side were drawn in a
    # third of the width, under blank space above and below (a review).
    rows, cols = np.nonzero(np.isfinite(field))
    bounds = grid.bounds
    if rows.size:
        dx, dy = grid.xs[1] - grid.xs[0], grid.ys[1] - grid.ys[0]
        bounds = (float(grid.xs[cols.min()] - dx), float(grid.xs[cols.max()] + dx),
                  float(grid.ys[rows.min()] - dy), float(grid.ys[rows.max()] + dy))
    _square_axes(fig, bounds, 1, 1, "")
    return fig
