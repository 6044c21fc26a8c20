"""Problem inputs: the widgets a page draws to set up its problem, and the problems they make.

Gaussians (preset picker and sliders), Gaussian mixtures (editable tables), digits (bundled examples,
a drawing canvas or an upload) and colour images (bundled or uploaded). Each ``*_problem`` returns a
``Problem`` or None after showing, with ``st.error``, why the input is unusable.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from gradnet_core import color, presets
from gradnet_core.densities import Density, Gaussian, ImageDensity
from gradnet_core.images import (DIGIT_SETS, MAX_UPLOAD_BYTES, bundled_digits, canvas_to_image, load_bundled,
                                 load_image)
from gradnet_core.plotting import density_heatmap, square_bounds

from .limits import truth_samples_cap, upload_pixels
from .problems import (MIXTURE_COLUMNS, MIXTURE_HEADERS, Problem, gaussian_from_row, gaussian_row, mixture_from_table,
                       to_numpy)
from .state import key, kept_result, kept_runs, page_state

__all__ = [
    "gaussian_inputs", "gaussian_problem", "mixture_inputs", "mixture_problem", "truth_samples_input",
    "digit_input", "digit_problem", "color_image_input", "side_by_side", "on_gaussian_preset", "on_mixture_preset",
    "restore_inputs", "inputs_summary",
]

GAUSSIAN_SAMPLES = 1000          # test samples for the Gaussian metrics (the paper's 1000)
TRUTH_SAMPLES = (200, 1000, 4000)  # barycentric projection samples: min, default, max (EMD is ~n^2)
DIGIT_DEFAULTS = {"source": (0, 0), "target": (4, 1)}  # (digit, example): the authors' 0 -> 4 notebook
DIGIT_SET_NAMES = {"mnist": "MNIST", "uci": "UCI"}     # the bundled sets (gradnet_core.images.DIGIT_SETS)
KEPT_PICTURE = "\0kept"     # state.uploads' name of a picture restored from the kept runs (no file has it)
BROUGHT_BACK = "\0back"     # ... and of one brought back with runs on earlier inputs
COLOR_DEFAULTS = {"source": "daytime", "target": "sunset"}  # bundled pictures
# What a teacher can say about the bundled pair (assets/README.md): its exact answer is known.
BUNDLED_COLOR_HELP = ("The sunset is the daytime picture regraded pixel by pixel by a colour map that is the gradient "
                      "of a convex function: by Brenier's theorem, the optimal map between the two pictures' colours. "
                      "So this pair has an exact answer, each pixel's own colour in the other picture, and a map "
                      "close to it recolours one picture into the other.")
CANVAS_SIZE = 224
CANVAS_COMPONENT = "streamlit-drawable-canvas.streamlit_drawable_canvas"   # its registered name
#: The canvas's toolbar (undo, redo, clear) is invisible until the pointer is over the canvas, but until then it
#: lies over the canvas's top-right corner and takes the pointer: a stroke started there was lost (the first stroke
#: of a 0 begun at the top), and on a touch screen, with no hover, that corner never drew and a tap could hit the
#: hidden "clear" button. Here it stays above the canvas, in a margin of its own, and takes the pointer only while
#: it is shown.
CANVAS_TOOLBAR_CSS = """
.dc-root{margin-top:2.4rem}
.dc-toolbar{top:-2.65rem;pointer-events:none;transition:opacity .15s .1s}
.dc-root:hover>.dc-toolbar,.dc-toolbar:focus-within,.dc-toolbar[data-pinned=true]{pointer-events:auto}
"""
GAUSSIAN_FIELDS: dict[str, tuple[str, float, float, float]] = {   # label, min, max, step
    "mean_x": (MIXTURE_HEADERS["mean_x"], -3.0, 3.0, 0.05),
    "mean_y": (MIXTURE_HEADERS["mean_y"], -3.0, 3.0, 0.05),
    "std_x": (MIXTURE_HEADERS["std_x"], 0.05, 3.0, 0.05),    # not 0: a standard deviation of 0 is no density
    "std_y": (MIXTURE_HEADERS["std_y"], 0.05, 3.0, 0.05),
    # not +-1 either: a review met "covariance must be symmetric positive definite" at the slider's ends
    "corr": (MIXTURE_HEADERS["corr"], -0.95, 0.95, 0.05),
}
# The uploaders take any file and the loader judges its content: with ``type=[...]`` Streamlit itself raises
# (an exception box, not our message) for a file whose name has another extension, which a browser's
# file picker filters but a forged request or a drag-and-drop in some browsers does not.
UPLOAD_LABEL = "Image file (PNG, JPEG, GIF, BMP or WebP)"
#: The image uploaders' own limit in MB, the one the loader keeps, so that the box says the limit that applies
#: rather than the server's maxUploadSize, which is for saved maps; a larger file gets the browser's
#: "File must be 10.0MB or smaller".
UPLOAD_MB = MAX_UPLOAD_BYTES // 1_000_000

T = TypeVar("T")


def side_by_side(draw: Callable[[str], T]) -> dict[str, T]:
    """``draw("source")`` and ``draw("target")`` in two columns; their results by side."""
    drawn = {}
    for side, column in zip(("source", "target"), st.columns(2)):
        with column:
            drawn[side] = draw(side)
    return drawn


# =============================================================================================
# Gaussians and mixtures
# =============================================================================================
def _snapped(rows: dict[str, dict[str, float]]) -> dict[tuple[str, str], float]:
    """Slider rows at the sliders' steps and bounds, by (side, field)."""
    return {(side, name): round(min(max(round(row[name] / step) * step, lo), hi), 6)
            for side, row in rows.items() for name, (_, lo, hi, step) in GAUSSIAN_FIELDS.items()}


def _set_gaussian_rows(page: str, rows: dict[str, dict[str, float]]) -> None:
    for (side, name), value in _snapped(rows).items():
        st.session_state[key(page, side, name)] = value


def _gaussian_preset_rows(name: str, page: str) -> dict[str, dict[str, float]] | None:
    if name in presets.gaussian_presets():
        source, target = presets.gaussian_presets()[name]
    elif name == "Random pair":
        state = page_state(page)
        state.counter += 1
        source, target = presets.random_gaussian_pair(state.counter)
    else:
        return None
    return {"source": gaussian_row(source), "target": gaussian_row(target)}


def on_gaussian_preset(page: str) -> None:
    """Set the sliders to the preset now in the preset box (a callback; the gallery calls it too)."""
    rows = _gaussian_preset_rows(st.session_state[key(page, "preset")], page)
    if rows is not None:
        _set_gaussian_rows(page, rows)


def _on_random_pair(page: str) -> None:
    st.session_state[key(page, "preset")] = "Random pair"
    on_gaussian_preset(page)


def _on_custom(page: str) -> None:
    st.session_state[key(page, "preset")] = "Custom"


def gaussian_inputs(page: str, disabled: bool) -> dict[str, dict[str, float]]:
    """Preset picker and sliders for a source and a target Gaussian; returns their slider rows."""
    options = [*presets.gaussian_presets(), "Random pair", "Custom"]
    if key(page, "preset") not in st.session_state and not _restore_gaussian_rows(page):
        st.session_state[key(page, "preset")] = options[0]
        _set_gaussian_rows(page, _gaussian_preset_rows(options[0], page))
    # one row, the button as wide as its words (in a quarter of a 900 px window it read "New rand…")
    row = st.container(horizontal=True, vertical_alignment="bottom")
    row.selectbox("Problem to train: a preset, or set your own with the sliders", options, key=key(page, "preset"),
                  on_change=on_gaussian_preset, args=(page,),
                  disabled=disabled, persist_state="session")
    row.button("New random pair", on_click=_on_random_pair, args=(page,), disabled=disabled,
               key=key(page, "random"))
    rows: dict[str, dict[str, float]] = {}
    for side, col in zip(("source", "target"), st.columns(2)):
        with col:
            st.markdown(f"**{side.capitalize()}**")
            rows[side] = {}
            for name, (label, lo, hi, step) in GAUSSIAN_FIELDS.items():
                rows[side][name] = st.slider(label, lo, hi, step=step, key=key(page, side, name),
                                             disabled=disabled, on_change=_on_custom, args=(page,),
                                             persist_state="session")
    return rows


def gaussian_problem(page: str, rows: dict[str, dict[str, float]]) -> Problem | None:
    """The Gaussian problem from slider rows, or None after showing why the input is invalid."""
    try:
        source = _side("source", gaussian_from_row, rows["source"])
        target = _side("target", gaussian_from_row, rows["target"])
        return Problem(page, source, target, truth="gaussian", samples=GAUSSIAN_SAMPLES)
    except ValueError as err:
        st.error(str(err))
        return None


def _side(side: str, build: Callable[[Any], Density], value: Any) -> Density:
    try:
        return build(value)
    except ValueError as err:
        raise ValueError(f"{side.capitalize()}: {err}") from err


def _mixture_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Mixture rows as the tables hold them: every cell as text. The editor's number cells lost keystrokes (Chromium,
    2026-12-04: "1e3" typed at 150 ms a key became 13; with min_value set a minus sign went); its text cells keep what
    is typed, and ``mixture_from_table`` reads the numbers, saying which cell is not one."""
    return pd.DataFrame([{c: _cell_text(r.get(c)) for c in MIXTURE_COLUMNS} for r in rows],
                        columns=list(MIXTURE_COLUMNS), dtype=object)


def _cell_text(value: Any) -> str | None:
    """A table cell as text: numbers in their shortest form to 6 digits (1/3 -> "0.333333"); empty stays empty."""
    if value is None or isinstance(value, str):
        return value
    value = float(value)
    return None if math.isnan(value) else f"{value:.6g}"


def on_mixture_preset(page: str) -> None:
    """Set both tables to the preset now in the preset box (a callback; the gallery calls it too)."""
    name = st.session_state[key(page, "preset")]
    if name not in presets.MIXTURE_ROWS:
        return
    state = page_state(page)
    for side, rows in zip(("source", "target"), presets.MIXTURE_ROWS[name]):
        state.tables[side] = {"base": _mixture_frame(rows), "edited": _mixture_frame(rows),
                              "version": state.tables.get(side, {}).get("version", 0) + 1}


def _kept_problem(page: str, kind: str, problem: dict[str, Any] | None = None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The description of ``problem`` (``Problem.describe``), by default the one this session's last kept run on
    ``page`` was trained on (after a reload), and its two sides, when both are ``kind`` densities; else None. After a
    reload the pages' inputs came back at their presets, and the page then said the inputs had changed (a review, who
    had typed them)."""
    if problem is None:
        kept = kept_runs(page)
        problem = kept[-1][1] if kept else {}
    sides = [problem.get(side) or {} for side in ("source", "target")]
    return (problem, sides) if all(side.get("type") == kind for side in sides) else None


def restore_inputs(page: str, problem: dict[str, Any]) -> None:
    """Set the page's inputs to ``problem`` (``Problem.describe``): runs on earlier inputs brought back (a callback,
    before the widgets are drawn)."""
    if page == "gaussians":
        _restore_gaussian_rows(page, problem)
    elif page == "mixtures":
        _restore_mixture_tables(page, problem)
    elif page == "digits":
        page_state(page).inputs_version += 1        # a fresh canvas and uploader, to show the restored pictures
        _set_digit_images(page, _kept_problem(page, "ImageDensity", problem), BROUGHT_BACK)


def _name_preset(page: str, names: Sequence[str]) -> None:
    """The preset box after a restore: the first of the presets the restored inputs match, else "Custom"."""
    st.session_state[key(page, "preset")] = names[0] if names else "Custom"


def _restore_gaussian_rows(page: str, problem: dict[str, Any] | None = None) -> bool:
    """The sliders of ``problem`` or the kept runs' (``_kept_problem``), the preset box naming the preset they match or
    "Custom"; True when there was such a problem."""
    kept = _kept_problem(page, "Gaussian", problem)
    if kept is None:
        return False
    rows = _gaussian_rows(kept[1])
    _set_gaussian_rows(page, rows)
    _name_preset(page, _gaussian_presets_matching(rows))
    return True


def _gaussian_rows(sides: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Slider rows of two described Gaussians (``Problem.describe``'s sides)."""
    return {side: gaussian_row(Gaussian(d["mean"], d["cov"])) for side, d in zip(("source", "target"), sides)}


def _gaussian_presets_matching(rows: dict[str, dict[str, float]]) -> list[str]:
    """The Gaussian presets whose sliders are ``rows``."""
    shown = _snapped(rows)
    return [name for name, (source, target) in presets.gaussian_presets().items()
            if _snapped({"source": gaussian_row(source), "target": gaussian_row(target)}) == shown]


def _restore_mixture_tables(page: str, problem: dict[str, Any] | None = None) -> bool:
    """The tables and the ground-truth samples of ``problem`` or the kept runs' (``_kept_problem``), the preset box
    naming the preset they match or "Custom"; True when there was such a problem."""
    kept = _kept_problem(page, "GaussianMixture", problem)
    if kept is None:
        return False
    problem, sides = kept
    state = page_state(page)
    tables = _mixture_tables(sides)
    # the cells as typed where the runs kept them (the densities' own numbers, rounded to a cell's digits, can be
    # another problem), else from the densities
    typed = problem.get("tables") or {}
    for side, rows in zip(("source", "target"), tables):
        frame = _mixture_frame(typed[side] if isinstance(typed.get(side), list) else rows)
        state.tables[side] = {"base": frame, "edited": frame.copy(),
                              "version": state.tables.get(side, {}).get("version", 0) + 1}
    _name_preset(page, _mixture_presets_matching(tables))
    _restore_samples(page, problem)
    return True


def _mixture_tables(sides: Sequence[dict[str, Any]]) -> list[list[dict[str, float]]]:
    """Table rows of two described mixtures (``Problem.describe``'s sides)."""
    return [[_mixture_row(w, m, c) for w, m, c in zip(d["weights"], d["means"], d["covs"])] for d in sides]


def _mixture_presets_matching(tables: Sequence[Sequence[dict[str, float]]]) -> list[str]:
    """The mixture presets whose tables are ``tables``."""
    return [name for name, preset in presets.MIXTURE_ROWS.items()
            if all(_mixture_frame(a).equals(_mixture_frame(b)) for a, b in zip(_normalised(preset), tables))]


def inputs_summary(problem: dict[str, Any]) -> str:
    """A few words on the inputs ``problem`` (``Problem.describe``) was set up from: the preset they match, or what
    they are ("Gaussians with means (0, 0) → (2, 1)", "MNIST 0 #1 → a drawing")."""
    # every number the inputs have, where they are not a preset: two sets told apart by a correlation alone had the
    # same label (a review)
    if kept := _kept_problem("", "Gaussian", problem):
        rows = _gaussian_rows(kept[1])
        named = _gaussian_presets_matching(rows)
        sides = [f"N(({row['mean_x']:.3g}, {row['mean_y']:.3g}), std {row['std_x']:.3g} × {row['std_y']:.3g}, "
                 f"corr {row['corr']:.2g})" for row in rows.values()]
        return f"preset {named[0]}" if named else " → ".join(sides)
    if kept := _kept_problem("", "GaussianMixture", problem):
        tables = _mixture_tables(kept[1])
        named = _mixture_presets_matching(tables)
        sides = []
        for rows in tables:
            at = ", ".join(f"({row['mean_x']:.3g}, {row['mean_y']:.3g})" for row in rows[:4])
            sides.append(f"{len(rows)} component{'s' if len(rows) > 1 else ''} at {at}"
                         + (", …" if len(rows) > 4 else ""))
        return f"preset {named[0]}" if named else " → ".join(sides)
    if kept := _kept_problem("", "ImageDensity", problem):
        strokes = problem.get("drawings") or {}
        words = []
        for side, described in zip(("source", "target"), kept[1]):
            example = _bundled_example(np.asarray(described["image"], dtype=np.float64))
            if example is not None:
                collection, digit, index = example
                words.append(f"{DIGIT_SET_NAMES[collection]} {digit} #{index + 1}")
            else:
                words.append("a drawing" if isinstance(strokes.get(side), dict) else "a picture")
        return " → ".join(words)
    return "other inputs"


def _restore_samples(page: str, problem: dict[str, Any]) -> None:
    """The ground-truth samples slider at ``problem``'s."""
    if isinstance(problem.get("samples"), int):
        st.session_state[key(page, "samples")] = problem["samples"]


def _mixture_row(weight: float, mean: Sequence[float], cov: Sequence[Sequence[float]]) -> dict[str, float]:
    """A table row of a mixture component: weight, mean, standard deviations and correlation."""
    sx, sy = math.sqrt(cov[0][0]), math.sqrt(cov[1][1])
    return {"weight": weight, "mean_x": mean[0], "mean_y": mean[1], "std_x": sx, "std_y": sy,
            "corr": cov[0][1] / (sx * sy)}


def _normalised(tables: Sequence[Sequence[dict[str, float]]]) -> list[list[dict[str, float]]]:
    """A preset's rows with their weights summing to 1, as a mixture built from them describes them."""
    out = []
    for rows in tables:
        total = sum(row["weight"] for row in rows)
        out.append([{**row, "weight": row["weight"] / total} for row in rows])
    return out


def mixture_inputs(page: str, disabled: bool) -> dict[str, list[dict[str, Any]]]:
    """Preset picker and one editable table per side; returns the edited rows."""
    names = list(presets.MIXTURE_ROWS)
    if key(page, "preset") not in st.session_state:
        st.session_state[key(page, "preset")] = names[0]
    state = page_state(page)
    if not state.tables and not _restore_mixture_tables(page):
        on_mixture_preset(page)
    # Named for what it sets: beside the instant demo's box, which names the same cases, "Preset" read as its twin.
    st.selectbox("Problem to train: a preset, or type your own in the tables", [*names, "Custom"],
                 key=key(page, "preset"), on_change=on_mixture_preset,
                 args=(page,), disabled=disabled, persist_state="session")
    # Text cells (see _mixture_frame): a bad value reaches mixture_from_table, which says what is wrong with it.
    helps = {"weight": "any non-negative number: the weights are rescaled to sum to 1",
             "std_x": "standard deviation along x, > 0", "std_y": "standard deviation along y, > 0",
             # the covariance check refuses a component a million times longer than wide (densities._check_covariance):
             # a review typed 0.999999 after reading "between -1 and 1, exclusive"
             "corr": "between -1 and 1, exclusive; a component whose covariance is over a million times longer one "
                     "way than the other (a correlation of ±0.999999, or stds 1 and 0.001) is too thin to compute "
                     "with and is refused"}
    column_config = {c: st.column_config.TextColumn(MIXTURE_HEADERS[c], help=helps.get(c), alignment="right")
                     for c in MIXTURE_COLUMNS}
    rows: dict[str, list[dict[str, Any]]] = {}
    # One above the other: side by side, the last column was cut off at 1280 and 1400 px.
    for side, col in zip(("source", "target"), (st.container(), st.container())):
        table = state.tables[side]
        table_key = key(page, side, "table", table["version"])
        if table_key not in st.session_state:
            # A fresh editor (first visit, or back from another page): start from the last edits,
            # because the editor's own state holds edits relative to its base table.
            table["base"] = _mixture_frame(table["edited"].to_dict("records"))
        with col:
            st.markdown(f"**{side.capitalize()} components**")
            edited = st.data_editor(table["base"], key=table_key, num_rows="dynamic", disabled=disabled,
                                    column_config=column_config, hide_index=True,
                                    on_change=_on_custom, args=(page,))
        table["edited"] = edited
        rows[side] = edited.to_dict("records")
    return rows


def mixture_problem(page: str, rows: dict[str, list[dict[str, Any]]], samples: int) -> Problem | None:
    """The mixture problem from table rows, or None after showing why the input is invalid."""
    try:
        source, note_s = mixture_from_table(rows["source"], "source")
        target, note_t = mixture_from_table(rows["target"], "target")
    except ValueError as err:
        st.error(str(err))
        return None
    for note in (note_s, note_t):
        if note:
            st.info(note)
    _density_pair(page, source, target)
    typed = {side: [{column: _cell_text(row.get(column)) for column in MIXTURE_COLUMNS} for row in rows[side]]
             for side in ("source", "target")}
    return Problem(page, source, target, truth="barycentric", samples=samples, tables=typed)


def _density_pair(page: str, source: Density, target: Density) -> None:
    """Heatmaps of the source and the target density on one shared box."""
    gen = torch.Generator().manual_seed(0)
    bounds = square_bounds(to_numpy(source.sample(2000, gen)), to_numpy(target.sample(2000, gen)), margin=0.15)
    for side, density, col in zip(("source", "target"), (source, target), st.columns(2)):
        col.plotly_chart(density_heatmap(density, bounds, height=260, title=f"{side.capitalize()} density"),
                         key=key(page, side, "heatmap"), config={"displayModeBar": False})


def truth_samples_input(page: str, disabled: bool) -> int:
    """How many samples the barycentric-projection ground truth uses."""
    lo, default, hi = TRUTH_SAMPLES
    hi = truth_samples_cap(hi)          # the session's memory budget (GRADNET_SESSION_MB)
    st.session_state.setdefault(key(page, "samples"), min(default, hi))
    if st.session_state[key(page, "samples")] > hi:
        st.session_state[key(page, "samples")] = hi
    return int(st.slider("Ground-truth samples n (exact EMD; time and memory grow like n²)", min(lo, hi), hi,
                         step=100, key=key(page, "samples"), disabled=disabled, persist_state="session"))


# =============================================================================================
# Digits
# =============================================================================================
def _bandwidth(preset: str) -> float:
    return presets.TRAIN_PRESETS[preset].objective.bandwidth_end


def _show_digit(image: np.ndarray, caption: str, heatmap_key: str) -> None:
    big = Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255)).resize((168, 168), Image.Resampling.NEAREST)
    density = ImageDensity(image, bandwidth=_bandwidth("digits"))
    # side by side where they fit, the density under the picture where not: in two columns a 900 px window cut the
    # density at x = 0.5 (a review)
    with st.container(horizontal=True, wrap=True):
        st.image(big, caption=caption, width=168)
        st.plotly_chart(density_heatmap(density, (-0.05, 1.05, -0.05, 1.05), height=220, title="Density"),
                        key=heatmap_key, config={"displayModeBar": False}, width=220)


def digit_input(page: str, side: str, disabled: bool) -> np.ndarray | None:
    """A digit image for one side from a drawing, an upload or a bundled example, shown with its
    density; None (after a message) when there is none or it is unusable."""
    st.markdown(f"**{side.capitalize()}**")
    mode_key = key(page, side, "mode")
    if mode_key not in st.session_state:
        _restore_digit_images(page)
    st.session_state.setdefault(mode_key, "Example")
    mode = st.radio("Image from", ["Example", "Draw", "Upload"], key=mode_key, horizontal=True,
                    disabled=disabled, persist_state="session", label_visibility="collapsed")
    image: np.ndarray | None = None
    caption = ""
    try:
        if mode == "Example":
            st.session_state.setdefault(key(page, side, "set"), "mnist")
            # a row that wraps, each box as wide as its values: in three columns a 900 px window showed "M" and "#"
            # for "MNIST" and "#1" (a review)
            row = st.container(horizontal=True, wrap=True)
            collection = row.selectbox("Set", list(DIGIT_SET_NAMES), key=key(page, side, "set"), disabled=disabled,
                                     persist_state="session", format_func=DIGIT_SET_NAMES.get,
                                     help="MNIST: real 28 x 28 digits from its test set, as in the paper. UCI: "
                                          "scikit-learn's 8 x 8 scans, upscaled (softer).", width=120)
            bundled = bundled_digits(collection)
            digits = [d for d, paths in bundled.items() if paths]
            if not digits:
                st.error(f"No bundled example digits were found in {DIGIT_SETS[collection]}.")
                return None
            digit_default, index_default = DIGIT_DEFAULTS[side]
            st.session_state.setdefault(key(page, side, "digit"), digit_default)
            st.session_state.setdefault(key(page, side, "index"), index_default)
            digit = row.selectbox("Digit", digits, key=key(page, side, "digit"), disabled=disabled,
                                  persist_state="session", width=90)
            count = len(bundled[digit])
            index = row.selectbox("Example", list(range(count)), key=key(page, side, "index"),
                                  disabled=disabled, persist_state="session", width=100,
                                  format_func=lambda i: f"#{i + 1}")
            image = load_bundled(digit, min(index, count - 1), collection)
            caption = f"{DIGIT_SET_NAMES[collection]} example: digit {digit}, #{index + 1}"
        elif mode == "Draw":
            image = _canvas(page, side, disabled)
            caption = "Your drawing, as a 28 x 28 digit"
        else:
            image, caption = _upload(page, side, disabled, lambda data: load_image(data, max_pixels=upload_pixels()),
                                     "Upload a picture of a digit: any size, dark ink on light paper or light on dark.")
    except ValueError as err:
        st.error(str(err))
        return None
    if image is not None:
        _show_digit(image, caption, key(page, side, "heatmap"))
    return image


def _restore_digit_images(page: str) -> None:
    """After a reload, once per page: the two pictures of the kept runs' problem (``_kept_problem``) in the inputs, a
    bundled example chosen in its boxes, a drawing as its strokes on the canvas, any other picture (uploaded, or drawn
    before runs kept the strokes) as the side's upload, named as such.
    The inputs had come back at the bundled 0 and 4 beside runs trained on the user's own drawings."""
    flag = key(page, "restored")
    if flag in st.session_state:
        return
    st.session_state[flag] = True
    _set_digit_images(page, _kept_problem(page, "ImageDensity"), KEPT_PICTURE)


def _set_digit_images(page: str, kept: tuple[dict[str, Any], list[dict[str, Any]]] | None, upload_name: str) -> None:
    """The digit inputs at the two pictures of ``kept`` (``_kept_problem``'s), a picture neither bundled nor drawn as
    the side's upload named ``upload_name``, and its ground-truth samples."""
    if kept is None:
        return
    _restore_samples(page, kept[0])
    state = page_state(page)
    strokes = kept[0].get("drawings") or {}
    for side, described in zip(("source", "target"), kept[1]):
        image = np.asarray(described["image"], dtype=np.float64)
        example = _bundled_example(image)
        if example is None and isinstance(strokes.get(side), dict):
            # drawn on the canvas: its strokes, redrawn when the canvas mounts, to go on drawing
            state.drawings[side] = {"mount": None, "json": strokes[side], "rgba": None, "image": image}
            st.session_state[key(page, side, "mode")] = "Draw"
            continue
        if example is None:
            state.uploads[side] = (upload_name, image)
            st.session_state[key(page, side, "mode")] = "Upload"
            continue
        collection, digit, index = example
        st.session_state[key(page, side, "mode")] = "Example"
        st.session_state[key(page, side, "set")] = collection
        st.session_state[key(page, side, "digit")] = digit
        st.session_state[key(page, side, "index")] = index


def _bundled_example(image: np.ndarray) -> tuple[str, int, int] | None:
    """(set, digit, index) of the bundled example ``image`` is (to float32 rounding), or None."""
    for collection in DIGIT_SET_NAMES:
        for digit, paths in bundled_digits(collection).items():
            for index in range(len(paths)):
                example = load_bundled(digit, index, collection)
                if example.shape == image.shape and np.allclose(example, image, rtol=0.0, atol=1e-6):
                    return collection, digit, index
    return None


def _canvas(page: str, side: str, disabled: bool) -> np.ndarray | None:
    # Imported here: the component registers itself with a running app when imported, and fails
    # outside one, so a top-level import would break importing this module (tests, scripts).
    from streamlit_drawable_canvas import st_canvas

    _toolbar_off_the_canvas()
    state = page_state(page)
    canvas_key = _renewed(page, key(page, side, "canvas"))
    saved = state.drawings.setdefault(side, {"mount": None, "json": None, "rgba": None})
    if canvas_key not in st.session_state:
        # Newly mounted (first visit or back from another page): redraw the last drawing. Kept
        # fixed while mounted: a changing initial_drawing would redraw the canvas.
        saved["mount"] = saved["json"]
    result = st_canvas(fill_color="rgba(0, 0, 0, 0)", stroke_width=18, stroke_color="#FFFFFF",
                       background_color="#000000", width=CANVAS_SIZE, height=CANVAS_SIZE,
                       drawing_mode="freedraw", initial_drawing=saved["mount"], return_image_data=True,
                       key=canvas_key, disabled=disabled)
    objects = (result.json_data or {}).get("objects") or []
    rgba = result.image_data if objects else None
    if objects and rgba is not None:
        saved["json"], saved["rgba"] = result.json_data, rgba
        saved.pop("image", None)
    elif objects and saved["rgba"] is not None:
        rgba = saved["rgba"]
    elif objects and saved.get("image") is not None:
        # Redrawn from the strokes kept with the runs after a reload: the canvas returns its picture only once drawn
        # on, so until then the side is the picture the runs were trained on.
        return saved["image"]
    if not objects and result.json_data is None and saved["mount"] is not None:
        # Just mounted with strokes to redraw, and nothing reported yet: keep them (the picture, after a reload).
        return saved.get("image")
    if not objects:
        saved["json"], saved["rgba"] = None, None
        saved.pop("image", None)
        st.info("Draw a digit on the black canvas (white ink); it is centred and scaled like MNIST.")
        return None
    if rgba is None:
        return None
    return canvas_to_image(np.asarray(rgba))


def _renewed(page: str, widget_key: str) -> str:
    """``widget_key``, renewed each time the inputs are restored (``PageState.inputs_version``): a widget that holds
    its own value (a canvas, an uploader) is drawn afresh, showing the restored one."""
    version = page_state(page).inputs_version
    return f"{widget_key}.{version}" if version else widget_key


def _toolbar_off_the_canvas() -> None:
    """Append CANVAS_TOOLBAR_CSS to the canvas component's styles (once per process). The component gives
    no way to pass styles and draws inside its own shadow root, so its registered definition is re-registered
    with the stylesheet inline."""
    try:    # Streamlit's component registry, not a public API: where it differs, the canvas works as it comes
        from streamlit.components.v2.get_bidi_component_manager import get_bidi_component_manager

        manager = get_bidi_component_manager()
        current = manager.get(CANVAS_COMPONENT)
        if current is None or not current.css or current.css.endswith(CANVAS_TOOLBAR_CSS):
            return
        css = Path(current.css).read_text(encoding="utf-8") if current.css_url else current.css   # file or inline
        fixed = dataclasses.replace(current, css=css + CANVAS_TOOLBAR_CSS)
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        return     # tests/test_browser.py (a stroke begun at the top) fails then
    registry_log = logging.getLogger("streamlit.components.v2.component_registry")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)       # the overwrite is deliberate: no warning
    try:
        manager.register(fixed)
    finally:
        registry_log.setLevel(level)


def _upload(page: str, side: str, disabled: bool, read: Callable[[bytes], np.ndarray],
            empty: str) -> tuple[np.ndarray | None, str]:
    """An uploader and the picture ``read`` makes of its file (it raises ValueError for a bad one), with a caption; the
    side's picture kept (``state.uploads``: uploaded before, or restored) while the uploader on screen holds no file;
    else None after ``empty``."""
    state = page_state(page)
    upload_key = _renewed(page, key(page, side, "upload"))
    if upload_key not in st.session_state:
        # a new uploader (back from another page, a reload, inputs restored): the picture kept is not in it
        state.uploaded_here.discard(side)
    file = st.file_uploader(UPLOAD_LABEL, key=upload_key, max_upload_size=UPLOAD_MB, disabled=disabled)
    if file is None:
        # The picture kept stays until a file put in this uploader is taken out (it went at the uploader's first
        # rerun, and Train with it: a review).
        if side in state.uploads and side not in state.uploaded_here:
            name, image = state.uploads[side]
            return image, {KEPT_PICTURE: "Your picture of the last training here, kept over the reload",
                           BROUGHT_BACK: "Your picture, brought back with the runs trained on it"}.get(
                               name, f"Uploaded earlier: {name}")
        state.uploads.pop(side, None)
        st.info(empty)
        return None, ""
    image = read(file.getvalue())
    state.uploads[side] = (file.name, image)
    state.uploaded_here.add(side)
    return image, f"Uploaded: {file.name}"


def digit_problem(page: str, source: np.ndarray | None, target: np.ndarray | None,
                  samples: int) -> Problem | None:
    """The digit-morph problem, or None when an image is missing or unusable (shown)."""
    if source is None or target is None:
        return None
    bandwidth = _bandwidth("digits")
    drawn = page_state(page).drawings
    drawings = {side: drawn[side]["json"] for side in ("source", "target")
                if st.session_state.get(key(page, side, "mode")) == "Draw" and (drawn.get(side) or {}).get("json")}
    try:
        return Problem(page, _side("source", lambda im: ImageDensity(im, bandwidth=bandwidth), source),
                       _side("target", lambda im: ImageDensity(im, bandwidth=bandwidth), target),
                       truth="barycentric", samples=samples, drawings=drawings)
    except ValueError as err:
        st.error(str(err))
        return None


# =============================================================================================
# Colour images
# =============================================================================================
def color_image_input(page: str, side: str, disabled: bool) -> np.ndarray | None:
    """The RGB image for one side, bundled or uploaded, shown with its size; None (after a message)
    when there is none or it is unusable."""
    st.subheader(side.capitalize())
    if key(page, side, "mode") not in st.session_state and page_state(page).outcome is None:
        _restore_color_side(page, side)
    mode = st.radio("Image", ["Bundled", "Upload"], key=key(page, side, "mode"), horizontal=True,
                    disabled=disabled, persist_state="session", label_visibility="collapsed")
    if mode == "Bundled":
        bundled = color.bundled_color_images()
        st.session_state.setdefault(key(page, side, "bundled"), COLOR_DEFAULTS[side])
        name = st.selectbox("Example", list(bundled), key=key(page, side, "bundled"), disabled=disabled,
                            persist_state="session", help=BUNDLED_COLOR_HELP)
        image = color.load_rgb(bundled[name])
    else:
        try:
            image, note = _upload(page, side, disabled, _checked_rgb,
                                  "Upload a photo; it is shrunk to at most 512 px on its longer side.")
        except ValueError as err:
            st.error(str(err))
            return None
        if image is None:
            return None
    size = f"{image.shape[1]} x {image.shape[0]} px"
    st.image(image, caption=size if mode == "Bundled" or note.startswith("Uploaded:") else f"{note} ({size})")
    return image


def _checked_rgb(data: bytes) -> np.ndarray:
    image = color.load_rgb(data, max_pixels=upload_pixels())
    color.check_colors(image)
    return image


def color_image_record(image: np.ndarray) -> Any:
    """A picture the Colour transfer page trained on, as the store keeps it: a bundled picture's name, else the array
    (``.npy`` in base64; read back without pickle)."""
    for name, path in color.bundled_color_images().items():
        bundled = color.load_rgb(path)
        if bundled.shape == image.shape and np.array_equal(bundled, image):
            return name
    # as bytes where it is exactly k / 255, as every picture load_rgb reads is: float64 made a 512 x 512 upload 8.4 MB
    # of base64, over what a map file's header may hold, and the kept result could not be read back (a code review)
    levels = np.round(np.asarray(image, dtype=np.float64) * 255.0)
    exact = bool(np.all((levels >= 0) & (levels <= 255))) and np.array_equal(levels / 255.0, image)
    buffer = io.BytesIO()
    np.save(buffer, levels.astype(np.uint8) if exact else np.ascontiguousarray(image), allow_pickle=False)
    return {"npy": base64.b64encode(buffer.getvalue()).decode("ascii")}


def color_image_from_record(record: Any) -> np.ndarray:
    """``color_image_record``'s picture back (ValueError for a record this version cannot read)."""
    if isinstance(record, str):
        bundled = color.bundled_color_images()
        if record not in bundled:
            raise ValueError(f"no bundled picture {record!r}")
        return color.load_rgb(bundled[record])
    try:
        image = np.load(io.BytesIO(base64.b64decode(record["npy"])), allow_pickle=False)
    except (KeyError, TypeError, OSError, ValueError) as err:
        raise ValueError(f"the kept picture cannot be read: {err}") from None
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the kept picture has shape {image.shape}")
    return image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image


def _restore_color_side(page: str, side: str) -> None:
    """After a reload: the picture of ``side`` the page's kept result was trained on (``kept_result``), a bundled one
    picked in its box, another as the side's upload (a review reloaded and found the result and the uploads gone)."""
    kept = kept_result(page)
    if kept is None:
        return
    record = (kept[2].get("images") or {}).get(side)
    try:
        image = color_image_from_record(record)
    except ValueError:
        return
    if isinstance(record, str):
        st.session_state[key(page, side, "mode")] = "Bundled"
        st.session_state[key(page, side, "bundled")] = record
    else:
        page_state(page).uploads[side] = (KEPT_PICTURE, image)
        st.session_state[key(page, side, "mode")] = "Upload"
