"""Static PNG figures of the experiments, drawn with Pillow (no plotting backend or browser needed):
a grid of point snapshots, an annotated heatmap and a line chart with logarithmic axes.

The interactive HTML versions use plotly (``gradnet_core.plotting`` and the experiment modules).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["snapshot_grid_png", "heatmap_png", "line_chart_png", "SERIES_COLOURS"]

#: Colours of successive series in line charts (colour-blind safe, Okabe–Ito).
SERIES_COLOURS = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
                  (230, 159, 0), (0, 0, 0), (240, 228, 66)]

_GRID = (225, 225, 225)
_TEXT = (20, 20, 20)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> float:
    return draw.textlength(text, font=font)


def snapshot_grid_png(path: Path, frames: Sequence[Sequence[np.ndarray]], colours: np.ndarray,
                      row_titles: Sequence[str], col_titles: Sequence[str],
                      bounds: tuple[float, float, float, float], cell: int = 200,
                      background: np.ndarray | None = None) -> Path:
    """Scatter snapshots: ``frames[r][c]`` are the ``(n, 2)`` points of row r at column c, drawn in
    ``colours: (n, 3)`` uint8 inside ``bounds`` = (x0, x1, y0, y1); ``background: (m, 2)`` in grey."""
    rows, cols = len(frames), len(col_titles)
    left, top, pad = 130, 26, 6
    width, height = left + cols * (cell + pad), top + rows * (cell + pad)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x0, x1, y0, y1 = bounds

    def pixels(pts: np.ndarray, r: int, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pts = pts[np.isfinite(pts).all(axis=1)] if len(pts) else pts
        col = np.round((pts[:, 0] - x0) / (x1 - x0) * (cell - 3)).astype(np.int64)
        row = np.round((y1 - pts[:, 1]) / (y1 - y0) * (cell - 3)).astype(np.int64)
        inside = (col >= 0) & (col < cell - 2) & (row >= 0) & (row < cell - 2)
        return (row + top + r * (cell + pad)), (col + left + c * (cell + pad)), inside

    for r in range(rows):
        for c in range(cols):
            ry, cx = top + r * (cell + pad), left + c * (cell + pad)
            canvas[ry:ry + cell, cx:cx + cell] = (248, 248, 248)
            if background is not None:
                pr, pc, keep = pixels(np.asarray(background, dtype=np.float64), r, c)
                canvas[pr[keep], pc[keep]] = (200, 200, 200)
            pts = np.asarray(frames[r][c], dtype=np.float64)
            finite = np.isfinite(pts).all(axis=1)
            pr, pc, keep = pixels(pts, r, c)
            colour = colours[finite][keep]
            for dr in (0, 1):
                for dc in (0, 1):
                    canvas[pr[keep] + dr, pc[keep] + dc] = colour
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    for c, title in enumerate(col_titles):
        cx = left + c * (cell + pad) + cell / 2
        draw.text((cx - _text_width(draw, title, font) / 2, 5), title, fill=_TEXT, font=font)
    for r, title in enumerate(row_titles):
        y = top + r * (cell + pad) + cell / 2 - 8
        for k, line in enumerate(title.split("\n")):
            draw.text((6, y + 15 * k), line, fill=_TEXT, font=font)
    image.save(path, optimize=True)
    return path


def _colour_scale(v: float) -> tuple[int, int, int]:
    """Light yellow (0) to dark blue (1), like viridis reversed but printable."""
    stops = np.array([(255, 255, 217), (199, 233, 180), (65, 182, 196), (34, 94, 168), (8, 29, 88)], float)
    v = min(max(v, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(v), len(stops) - 2)
    colour = stops[i] + (v - i) * (stops[i + 1] - stops[i])
    return tuple(int(round(c)) for c in colour)


def heatmap_png(path: Path, panels: Sequence[tuple[str, np.ndarray]], row_labels: Sequence[str],
                col_labels: Sequence[str], row_title: str, col_title: str, log: bool = True,
                fmt: str = "{:.2e}", cell: int = 74) -> Path:
    """Side-by-side annotated heatmaps with one shared colour scale. ``panels``: (title, (r, c) matrix);
    NaN cells are drawn hatched grey ("n/a")."""
    values = np.concatenate([np.asarray(m, float).ravel() for _, m in panels])
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    slo, shi = (scale(lo), scale(hi)) if finite.size else (0.0, 1.0)
    rows, cols = len(row_labels), len(col_labels)
    left, top, gap = 70, 58, 40
    panel_w = cols * cell
    width = left + len(panels) * (panel_w + gap)
    height = top + rows * cell + 50
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    for p, (title, matrix) in enumerate(panels):
        matrix = np.asarray(matrix, float)
        ox = left + p * (panel_w + gap)
        draw.text((ox + panel_w / 2 - _text_width(draw, title, font) / 2, 6), title, fill=_TEXT, font=font)
        draw.text((ox + panel_w / 2 - _text_width(draw, col_title, small) / 2, 26), col_title, fill=_TEXT,
                  font=small)
        for c, label in enumerate(col_labels):
            draw.text((ox + c * cell + cell / 2 - 4, top - 16), str(label), fill=_TEXT, font=small)
        for r in range(rows):
            if p == 0:
                draw.text((ox - 22, top + r * cell + cell / 2 - 7), str(row_labels[r]), fill=_TEXT, font=small)
            for c in range(cols):
                v = matrix[r, c]
                box = [ox + c * cell, top + r * cell, ox + (c + 1) * cell - 1, top + (r + 1) * cell - 1]
                ok = math.isfinite(v) and (v > 0 or not log)
                if ok:
                    frac = (scale(v) - slo) / (shi - slo) if shi > slo else 0.5
                    fill = _colour_scale(frac)
                    draw.rectangle(box, fill=fill)
                    text = fmt.format(v)
                    ink = (255, 255, 255) if frac > 0.55 else _TEXT
                else:
                    draw.rectangle(box, fill=(220, 220, 220))
                    text, ink = "n/a", _TEXT
                draw.text((box[0] + cell / 2 - _text_width(draw, text, small) / 2, box[1] + cell / 2 - 7), text,
                          fill=ink, font=small)
        if p == 0:
            draw.text((ox - 22 - _text_width(draw, row_title, small) / 2, top - 16), row_title, fill=_TEXT,
                      font=small)
    legend = f"colour: {'log10 ' if log else ''}scale from {lo:.2g} (light) to {hi:.2g} (dark)"
    draw.text((left, top + rows * cell + 18), legend, fill=_TEXT, font=small)
    image.save(path, optimize=True)
    return path


def line_chart_png(path: Path, x: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]],
                   title: str, x_label: str, y_label: str, log_x: bool = True, log_y: bool = True,
                   size: tuple[int, int] = (760, 470), dashed: Sequence[bool] | None = None) -> Path:
    """Line chart of several series over shared ``x``; a None or non-finite value leaves a gap and
    is marked with an x on the bottom axis (a run that produced no number, e.g. diverged)."""
    width, height = size
    left, right, top, bottom = 78, 200, 36, 56
    pw, ph = width - left - right, height - top - bottom
    fx = (lambda v: math.log10(v)) if log_x else float
    fy = (lambda v: math.log10(v)) if log_y else float
    xs = [fx(v) for v in x]
    ys_all = [fy(v) for _, ys in series for v in ys
              if v is not None and math.isfinite(v) and (v > 0 or not log_y)]
    xlo, xhi = min(xs), max(xs)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    ylo, yhi = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
    if log_y:
        ylo, yhi = math.floor(ylo), math.ceil(yhi)
    if yhi == ylo:
        ylo, yhi = ylo - 1, yhi + 1
    px = lambda v: left + (v - xlo) / (xhi - xlo) * pw          # noqa: E731
    py = lambda v: top + (yhi - v) / (yhi - ylo) * ph           # noqa: E731
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    draw.text((left, 8), title, fill=_TEXT, font=font)
    # grid and ticks
    yticks = range(int(ylo), int(yhi) + 1) if log_y else np.linspace(ylo, yhi, 5)
    for t in yticks:
        y = py(t)
        draw.line([(left, y), (left + pw, y)], fill=_GRID)
        label = f"1e{int(t)}" if log_y else f"{t:.3g}"
        draw.text((left - 8 - _text_width(draw, label, small), y - 7), label, fill=_TEXT, font=small)
    for v, t in zip(x, xs):
        draw.line([(px(t), top), (px(t), top + ph)], fill=_GRID)
        label = f"{v:g}"
        draw.text((px(t) - _text_width(draw, label, small) / 2, top + ph + 6), label, fill=_TEXT, font=small)
    draw.rectangle([left, top, left + pw, top + ph], outline=(120, 120, 120))
    draw.text((left + pw / 2 - _text_width(draw, x_label, small) / 2, height - 24), x_label, fill=_TEXT,
              font=small)
    draw.text((6, top - 24), y_label, fill=_TEXT, font=small)
    dashed = list(dashed) if dashed is not None else [False] * len(series)
    for k, (name, ys) in enumerate(series):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        points: list[tuple[float, float] | None] = []
        for t, v in zip(xs, ys):
            ok = v is not None and math.isfinite(v) and (v > 0 or not log_y)
            points.append((px(t), py(fy(v))) if ok else None)
        for a, b in zip(points[:-1], points[1:]):
            if a is not None and b is not None:
                _line(draw, a, b, colour, dashed[k])
        for t, p in zip(xs, points):
            if p is None:
                cx, cy = px(t), top + ph - 8 - 6 * k
                draw.line([(cx - 4, cy - 4), (cx + 4, cy + 4)], fill=colour, width=2)
                draw.line([(cx - 4, cy + 4), (cx + 4, cy - 4)], fill=colour, width=2)
            else:
                draw.ellipse([p[0] - 3.5, p[1] - 3.5, p[0] + 3.5, p[1] + 3.5], fill=colour)
        ly = top + 10 + 20 * k
        _line(draw, (left + pw + 14, ly + 7), (left + pw + 40, ly + 7), colour, dashed[k])
        draw.text((left + pw + 46, ly), name, fill=_TEXT, font=small)
    note_y = top + 14 + 20 * len(series)
    draw.text((left + pw + 14, note_y), "x on the axis: no finite\nvalue (diverged)", fill=(90, 90, 90),
              font=small)
    image.save(path, optimize=True)
    return path


def _line(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float],
          colour: tuple[int, int, int], dashed: bool) -> None:
    if not dashed:
        draw.line([a, b], fill=colour, width=2)
        return
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    pieces = max(int(length // 8), 1)
    for i in range(0, pieces, 2):
        s, e = i / pieces, min((i + 1) / pieces, 1.0)
        draw.line([(a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1])),
                   (a[0] + e * (b[0] - a[0]), a[1] + e * (b[1] - a[1]))], fill=colour, width=2)
