"""Static PNG figures of the experiments: annotated heatmaps, line charts with logarithmic axes and score strips
drawn with matplotlib's Agg canvas (no display or browser needed), and a grid of point snapshots drawn with Pillow
as the morph GIFs are.

matplotlib is imported inside each function, so importing this module (or ``gradnet_core``) does not
need it; ``pip install gradnet-core[experiments]`` brings it. No pyplot: each figure is its own
``Figure`` on an Agg canvas, so experiments running in threads share no global state.
The interactive HTML versions use plotly (``gradnet_core.plotting`` and the experiment modules).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["snapshot_grid_png", "heatmap_png", "line_chart_png", "strip_panels_png", "SERIES_COLOURS"]

#: Colours of successive series in line charts (colour-blind safe, Okabe–Ito), as 0-255 RGB.
SERIES_COLOURS = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
                  (230, 159, 0), (0, 0, 0), (240, 228, 66)]

_DPI = 100                  # sizes below are given in pixels; figures are saved at this many per inch


def _figure(width_px: float, height_px: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path, tight: bool = False) -> Path:
    """Write ``figure`` as PNG; ``tight`` trims the margins to what is drawn (legends outside the axes)."""
    figure.savefig(path, dpi=_DPI, facecolor="white", **({"bbox_inches": "tight", "pad_inches": 0.15} if tight else {}))
    return path


def _rgb(colour: Sequence[int]) -> tuple[float, float, float]:
    return tuple(c / 255 for c in colour)  # type: ignore[return-value]


def snapshot_grid_png(path: Path, frames: Sequence[Sequence[np.ndarray]], colours: np.ndarray,
                      row_titles: Sequence[str], col_titles: Sequence[str],
                      bounds: tuple[float, float, float, float], cell: int = 200,
                      background: np.ndarray | None = None) -> Path:
    """Scatter snapshots (``gradnet_core.plotting.snapshot_png``, drawn with Pillow like the morph GIFs: no
    matplotlib import for a figure without axes) written to ``path``."""
    from ..plotting import snapshot_png

    path.write_bytes(snapshot_png(frames, colours, row_titles, col_titles, bounds, cell, background))
    return path


def heatmap_png(path: Path, panels: Sequence[tuple[str, np.ndarray]], row_labels: Sequence[str],
                col_labels: Sequence[str], row_title: str, col_title: str, log: bool = True,
                fmt: str = "{:.2e}", cell: int = 74) -> Path:
    """Side-by-side annotated heatmaps with one shared colour scale (a colour bar beside them).
    ``panels``: (title, (r, c) matrix); NaN cells (and non-positive ones on a log scale) are drawn
    grey and marked "n/a"."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    values = np.concatenate([np.asarray(m, float).ravel() for _, m in panels])
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 10.0)
    if hi <= lo:
        lo, hi = (lo / 2, hi * 2) if log else (lo - 0.5, hi + 0.5)
    norm = LogNorm(lo, hi) if log else Normalize(lo, hi)
    cmap = colormaps["YlGnBu"].with_extremes(bad=(0.86, 0.86, 0.86))
    rows, cols = len(row_labels), len(col_labels)
    figure = _figure(70 + len(panels) * (cols * cell + 40) + 90, 58 + rows * cell + 50)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    figure.subplots_adjust(left=70 / figure.bbox.width, right=1 - 110 / figure.bbox.width,
                           top=1 - 50 / figure.bbox.height, bottom=40 / figure.bbox.height, wspace=0.15)
    image = None
    for ax, (title, matrix) in zip(axes, panels):
        matrix = np.asarray(matrix, float)
        ok = np.isfinite(matrix) & ((matrix > 0) if log else True)
        image = ax.imshow(np.where(ok, matrix, np.nan), cmap=cmap, norm=norm, aspect="equal")
        for r in range(rows):
            for c in range(cols):
                if ok[r, c]:
                    dark = norm(matrix[r, c]) > 0.55
                    ax.text(c, r, fmt.format(matrix[r, c]), ha="center", va="center", fontsize=8,
                            color="white" if dark else (0.08, 0.08, 0.08))
                else:
                    ax.text(c, r, "n/a", ha="center", va="center", fontsize=8, color=(0.08, 0.08, 0.08))
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(cols), [str(v) for v in col_labels], fontsize=9)
        ax.set_yticks(range(rows), [str(v) for v in row_labels], fontsize=9)
        ax.set_xlabel(col_title, fontsize=9)
        ax.xaxis.set_label_position("top")
        ax.xaxis.tick_top()
        ax.tick_params(length=0)
    axes[0].set_ylabel(row_title, fontsize=9)
    bar = figure.colorbar(image, ax=list(axes), fraction=0.04, pad=0.03)
    bar.set_label("colour: log scale" if log else "colour: linear scale", fontsize=9)
    return _save(figure, path, tight=True)


def line_chart_png(path: Path, x: Sequence[float], series: Sequence[tuple[str, Sequence[float | None]]],
                   title: str, x_label: str, y_label: str, log_x: bool = True, log_y: bool = True,
                   size: tuple[int, int] = (760, 470), dashed: Sequence[bool] | None = None) -> Path:
    """Line chart of several series over shared ``x``; a None or non-finite value leaves a gap and
    is marked with an x on the bottom axis (a run that produced no number, e.g. diverged)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter, NullLocator

    figure = _figure(*size)
    ax = figure.add_axes((78 / size[0], 56 / size[1], 1 - 278 / size[0], 1 - 92 / size[1]))
    xs = np.asarray(x, dtype=np.float64)
    dashed = list(dashed) if dashed is not None else [False] * len(series)
    any_value = False
    handles = []
    for k, (name, ys) in enumerate(series):
        colour = _rgb(SERIES_COLOURS[k % len(SERIES_COLOURS)])
        values = np.array([v if v is not None and math.isfinite(v) and (v > 0 or not log_y) else np.nan
                           for v in ys], dtype=np.float64)
        any_value |= bool(np.isfinite(values).any())
        style = "--" if dashed[k] else "-"
        ax.plot(xs, values, style, color=colour, linewidth=1.8, marker="o", markersize=5)
        missing = ~np.isfinite(values)
        # x marks sit just above the bottom axis, one row per series: x in data, y in axes coordinates
        ax.scatter(xs[missing], np.full(missing.sum(), 0.03 + 0.025 * k), marker="x", color=colour, s=40,
                   linewidths=2, transform=ax.get_xaxis_transform(), clip_on=False)
        handles.append(Line2D([], [], color=colour, linestyle=style, linewidth=1.8, marker="o", markersize=5,
                              label=name))
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    if not any_value:
        ax.set_ylim((1.0, 10.0) if log_y else (0.0, 1.0))
    ax.set_xticks(xs, [f"{v:g}" for v in x])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(xs) and log_x and xs.min() > 0:
        margin = max((xs.max() / xs.min()) ** 0.03, 1.5 if xs.max() == xs.min() else 1.0)
        ax.set_xlim(xs.min() / margin, xs.max() * margin)
    elif len(xs):
        margin = 0.03 * np.ptp(xs) or 0.5
        ax.set_xlim(xs.min() - margin, xs.max() + margin)
    ax.grid(True, which="major", color=(0.88, 0.88, 0.88), linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlabel(x_label, fontsize=10)
    ax.set_ylabel(y_label, fontsize=10)
    handles.append(Line2D([], [], color=(0.35, 0.35, 0.35), marker="x", linestyle="none", markersize=7,
                          label="x on the axis: no finite\nvalue (diverged)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    return _save(figure, path, tight=True)


def strip_panels_png(path: Path, panels: Sequence[dict[str, Any]], title: str, size_per_panel: int = 230,
                     height: int = 430) -> Path:
    """Score distributions against a threshold, one panel per family with its own log y axis.

    Each panel is a dict: ``title``, ``y_label``, ``threshold`` (a red line), ``groups``: a list of
    (label, {series name: values}) drawn as jittered points side by side at one x position each, and
    optionally ``lines``: {name: value} drawn dashed in grey (e.g. "no map", "noise"). Non-finite
    and non-positive values are left out; a panel with no group is drawn empty with "not run".
    """
    from matplotlib.lines import Line2D

    figure = _figure(max(1, len(panels)) * size_per_panel + 200, height)
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    rng = np.random.default_rng(0)
    series_colours: dict[str, tuple[float, float, float]] = {}
    for ax, panel in zip(axes, panels):
        groups = panel.get("groups", [])
        names = [name for _, series in groups for name in series]
        offsets = {name: 0.0 for name in names}
        distinct = list(dict.fromkeys(names))
        for k, name in enumerate(distinct):
            offsets[name] = (k - (len(distinct) - 1) / 2) * 0.28
            series_colours.setdefault(name, _rgb(SERIES_COLOURS[len(series_colours) % len(SERIES_COLOURS)]))
        drawn = False
        for g, (_, series) in enumerate(groups):
            for name, values in series.items():
                v = np.asarray([x for x in values if x is not None], dtype=np.float64)
                v = v[np.isfinite(v) & (v > 0)]
                if v.size:
                    drawn = True
                    xs = g + offsets[name] + rng.uniform(-0.09, 0.09, v.size)
                    ax.scatter(xs, v, s=9, color=series_colours[name], alpha=0.55, linewidths=0)
                    ax.plot([g + offsets[name] - 0.12, g + offsets[name] + 0.12], [np.median(v)] * 2,
                            color=series_colours[name], linewidth=2.2)
        for k, (name, value) in enumerate((panel.get("lines") or {}).items()):
            if value is not None and math.isfinite(value) and value > 0:
                ax.axhline(value, color=(0.45, 0.45, 0.45), linestyle=(0, (2, 2 + 2 * k)), linewidth=1)
                ax.annotate(name, (1.0, value), xycoords=("axes fraction", "data"), fontsize=7, ha="right",
                            va="bottom", color=(0.35, 0.35, 0.35))
        threshold = panel.get("threshold")
        if threshold:
            ax.axhline(threshold, color=(0.8, 0.1, 0.1), linewidth=1.2)
        if drawn or threshold:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", va="center", color=(0.4, 0.4, 0.4))
        ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8,
                      rotation=25 if len(groups) > 1 else 0, ha="right" if len(groups) > 1 else "center")
        ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_ylabel(panel.get("y_label", ""), fontsize=9)
        ax.grid(True, axis="y", which="major", color=(0.9, 0.9, 0.9), linewidth=0.8)
        ax.set_axisbelow(True)
    handles = [Line2D([], [], color=c, marker="o", linestyle="-", markersize=5, label=n)
               for n, c in series_colours.items()]
    handles.append(Line2D([], [], color=(0.8, 0.1, 0.1), linewidth=1.2, label="pass threshold"))
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    figure.suptitle(title, fontsize=11, x=0.02, ha="left")
    figure.subplots_adjust(wspace=0.6)
    return _save(figure, path, tight=True)
