"""The app's shared pieces: problem inputs, the live training panel and the results panel.

Pages collect inputs with the ``*_inputs``/``*_problem`` helpers, then call ``training_panel`` and
``results_panel``; all three problem pages share this one implementation. Streamlit is imported
inside the functions that draw, so the computing half (``Problem``, ``compute_reference``,
``evaluate_run``, ``metrics_table``) works, and is tested, without a running app.

Per page, everything lives in ``st.session_state[f"{page}.state"]`` (a ``PageState``): the running
job, the trained runs and the ground truth. Views (toggles, downloads) only read it, so changing a
view never retrains.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
# Imported here, in the script thread, before any training thread exists. POT imports pandas, and a
# training thread importing it for the first ground truth while Plotly peeks at the half-imported
# pandas in the live panel breaks that panel ("partially initialized module"). (torch._dynamo, for
# the same reason, is imported by .jobs.)
import ot  # noqa: F401
import pandas as pd
import torch

from . import presets
from .densities import Density, Gaussian, GaussianMixture, ImageDensity
from .files import map_to_bytes
from .ground_truth import barycentric_projection, gaussian_map
from .jobs import TrainingJob, seeded_map
from .metrics import evaluate_map
from .networks import NETWORKS, TransportMap
from .training import TrainResult, resolve_device

__all__ = [
    "Problem", "Reference", "Run", "PageState", "compute_reference", "evaluate_run", "metrics_table",
    "gaussian_row", "gaussian_from_row", "mixture_from_table", "device_label",
    "page_header", "page_state", "is_training", "gaussian_inputs", "gaussian_problem", "mixture_inputs",
    "mixture_problem", "truth_samples_input", "digit_input", "digit_problem", "training_panel", "results_panel",
]

GAUSSIAN_SAMPLES = 1000          # test samples for the Gaussian metrics (the paper's 1000)
TRUTH_SAMPLES = (200, 1000, 4000)  # barycentric projection samples: min, default, max (EMD is ~n^2)
PREVIEW_POINTS = 400             # points in the live preview
PREVIEW_EVERY = (20, 200)        # steps between live previews: a tenth of the run, within these bounds
POLL_SECONDS = 0.5               # live panel refresh while training
CPU_THREADS = 1                  # torch threads per training job: sessions share the cores (see jobs)
ANIMATION_FRAMES = 30
ARROW_GRID = 12                  # arrows on a 12 x 12 grid, kept where the source has mass
LIMITS = {"width": 512, "depth": 16, "modules": 64, "steps": 20000}
DIGIT_DEFAULTS = {"source": (0, 0), "target": (4, 1)}  # (digit, example): the authors' 0 -> 4 notebook
CANVAS_SIZE = 224
GAUSSIAN_FIELDS: dict[str, tuple[str, float, float, float]] = {   # label, min, max, step
    "mean_x": ("mean x", -3.0, 3.0, 0.05),
    "mean_y": ("mean y", -3.0, 3.0, 0.05),
    "std_x": ("std x", 0.0, 3.0, 0.05),
    "std_y": ("std y", 0.0, 3.0, 0.05),
    "corr": ("correlation", -1.0, 1.0, 0.05),
}
MIXTURE_COLUMNS = ("weight", "mean_x", "mean_y", "std_x", "std_y", "corr")
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp"]
METRIC_COLUMNS = {                # metrics key -> table column
    "mse": "MSE", "l2_uvp": "L2-UVP (%)", "cosine": "cosine", "ma_residual": "Monge–Ampère residual",
    "min_eigenvalue": "smallest Jacobian eigenvalue", "training_time": "training time (s)", "steps": "steps",
}


# =============================================================================================
# Computing half: no Streamlit
# =============================================================================================
def _describe(density: Density) -> dict[str, Any]:
    """A JSON description of a density (saved beside a trained map)."""
    if isinstance(density, Gaussian):
        return {"type": "Gaussian", "mean": density.mean.tolist(), "cov": density.cov.tolist()}
    if isinstance(density, GaussianMixture):
        return {"type": "GaussianMixture", "weights": density.weights.tolist(),
                "means": density.means.tolist(), "covs": density.covs.tolist()}
    if isinstance(density, ImageDensity):
        return {"type": "ImageDensity", "image": density.image.tolist(), "bandwidth": density.bandwidth}
    return {"type": type(density).__name__}


def _fingerprint(density: Density) -> str:
    digest = hashlib.sha256(type(density).__name__.encode())
    for key, value in sorted(vars(density).items()):
        if isinstance(value, torch.Tensor):
            digest.update(key.encode() + value.detach().cpu().numpy().tobytes())
        elif isinstance(value, (int, float, str)):
            digest.update(f"{key}={value}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Problem:
    """A 2-D transport problem as a page sets it up."""

    page: str                  # the page's state key
    source: Density
    target: Density
    truth: str                 # "gaussian" (closed form) or "barycentric" (exact EMD on samples)
    samples: int               # source (and target) samples for ground truth, metrics and animation
    seed: int = 0              # seeds those samples

    def __post_init__(self) -> None:
        if self.truth not in ("gaussian", "barycentric"):
            raise ValueError(f"ground truth must be 'gaussian' or 'barycentric'; got {self.truth!r}")
        if self.truth == "gaussian" and not (isinstance(self.source, Gaussian) and isinstance(self.target, Gaussian)):
            raise ValueError("the closed-form ground truth needs a Gaussian source and target")

    @property
    def signature(self) -> str:
        """Equal for equal problems: densities, ground truth and samples."""
        return hashlib.sha256(f"{_fingerprint(self.source)}{_fingerprint(self.target)}{self.truth}"
                              f"{self.samples}{self.seed}".encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"source": _describe(self.source), "target": _describe(self.target),
                "ground_truth": self.truth, "samples": self.samples}


@dataclass
class Reference:
    """Ground truth at the shared source samples, and the samples themselves."""

    signature: str
    name: str                  # panel title
    points: np.ndarray         # source samples x: (n, 2)
    mapped: np.ndarray         # T*(x): (n, 2)
    target_samples: np.ndarray  # (n, 2)
    grid: np.ndarray           # arrow starts: (g, 2)
    grid_mapped: np.ndarray    # T* at the arrow starts: (g, 2)
    seconds: float             # time to compute it


@dataclass
class Run:
    """A trained map and what the results panel shows about it."""

    role: str                  # "learned" (a monotone network) or "baseline"
    network: str               # registry name
    model: TransportMap
    result: TrainResult
    signature: str             # the problem it was trained on
    settings: dict[str, Any]   # network arguments and training configuration
    mapped: np.ndarray         # T(x) at the reference's source samples
    grid_mapped: np.ndarray    # T at the reference's arrow starts
    metrics: dict[str, float]


def _to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)


def _arrow_grid(source: Density, x: np.ndarray) -> np.ndarray:
    """Nodes of an ``ARROW_GRID``-square grid over the samples ``x: (n, 2)`` where the source has
    mass (log p at least its 5% quantile over the samples): ``(g, 2)``."""
    from .plotting import grid_points, square_bounds

    grid = grid_points(square_bounds(x, margin=0.0, quantile=0.01), ARROW_GRID)
    with torch.no_grad():
        log_p = source.log_prob(torch.as_tensor(x, dtype=source.dtype)).double()
        keep = source.log_prob(torch.as_tensor(grid, dtype=source.dtype)).double() >= torch.quantile(log_p, 0.05)
    return grid[keep.numpy()]


def _nearest_samples(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Indices of the samples nearest to the grid nodes (within a third of a cell), without repeats:
    arrow starts for a map known only at the samples."""
    if not len(grid):
        return np.zeros(0, dtype=int)
    cell = np.abs(np.diff(np.unique(grid[:, 0]))).min() if len(np.unique(grid[:, 0])) > 1 else np.inf
    dist = np.linalg.norm(grid[:, None, :] - x[None, :, :], axis=-1)
    nearest = dist.argmin(axis=1)
    close = dist[np.arange(len(grid)), nearest] < cell / 3
    return np.unique(nearest[close])


def compute_reference(problem: Problem) -> Reference:
    """Sample the source and target and compute the ground-truth map at the source samples (and
    at the arrow starts: grid nodes for the closed form, the samples nearest to them otherwise)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(problem.seed)
    source, target = problem.source.to("cpu"), problem.target.to("cpu")
    x = _to_numpy(source.sample(problem.samples, gen))
    y = _to_numpy(target.sample(problem.samples, gen))
    grid = _arrow_grid(source, x)
    if problem.truth == "gaussian":
        truth = gaussian_map(source, target)
        mapped, grid_mapped = truth(x), truth(grid)
        name = "Ground truth (closed form)"
    else:
        mapped = _to_numpy(barycentric_projection(x, y))
        index = _nearest_samples(grid, x)
        grid, grid_mapped = x[index], mapped[index]
        name = f"Ground truth (barycentric, n={problem.samples})"
    return Reference(signature=problem.signature, name=name, points=x, mapped=np.asarray(mapped),
                     target_samples=y, grid=grid, grid_mapped=np.asarray(grid_mapped),
                     seconds=time.perf_counter() - start)


def evaluate_run(problem: Problem, reference: Reference, model: TransportMap, result: TrainResult,
                 network: str, settings: dict[str, Any]) -> Run:
    """Map the reference's samples and arrow starts and compute every metric of the trained map."""
    source, target = problem.source.to("cpu"), problem.target.to("cpu")
    metrics = evaluate_map(model, source, target, reference.points, reference.mapped)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        mapped = _to_numpy(model(torch.as_tensor(reference.points, dtype=dtype)))
        grid_mapped = (_to_numpy(model(torch.as_tensor(reference.grid, dtype=dtype)))
                       if len(reference.grid) else reference.grid)
    metrics["training_time"] = result.elapsed
    metrics["steps"] = float(result.steps)
    return Run(role="learned" if model.monotone else "baseline", network=network, model=model,
               result=result, signature=problem.signature, settings=settings, mapped=mapped,
               grid_mapped=grid_mapped, metrics=metrics)


def metrics_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, the columns of ``METRIC_COLUMNS``."""
    rows = [{"map": run.network, **{label: run.metrics.get(key, math.nan) for key, label in METRIC_COLUMNS.items()}}
            for run in runs]
    table = pd.DataFrame(rows, columns=["map", *METRIC_COLUMNS.values()])
    return table.astype({"steps": "int64"}) if len(table) else table


def gaussian_row(g: Gaussian) -> dict[str, float]:
    """Slider values (mean_x, mean_y, std_x, std_y, corr) of a 2-D Gaussian."""
    (mx, my), cov = g.mean.tolist(), g.cov.to(torch.float64)
    sx, sy = math.sqrt(cov[0, 0].item()), math.sqrt(cov[1, 1].item())
    return {"mean_x": mx, "mean_y": my, "std_x": sx, "std_y": sy, "corr": cov[0, 1].item() / (sx * sy)}


def gaussian_from_row(row: dict[str, float]) -> Gaussian:
    """The 2-D Gaussian with the given means, standard deviations and correlation."""
    sx, sy, r = float(row["std_x"]), float(row["std_y"]), float(row["corr"])
    return Gaussian([float(row["mean_x"]), float(row["mean_y"])],
                    [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]])


def mixture_from_table(rows: Sequence[dict[str, Any]], side: str) -> tuple[GaussianMixture, str | None]:
    """A mixture from editor rows; weights not summing to 1 are normalised, with a note saying so.

    Raises ValueError naming the row for an empty table, a blank or non-numeric cell, or a
    negative weight.
    """
    if not rows:
        raise ValueError(f"The {side} table has no rows: add at least one component.")
    clean = []
    for i, row in enumerate(rows, start=1):
        values = {}
        for col in MIXTURE_COLUMNS:
            try:
                value = float(row.get(col))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(f"{side.capitalize()} row {i}: {col} is empty or not a finite number.")
            values[col] = value
        if values["weight"] < 0:
            raise ValueError(f"{side.capitalize()} row {i}: the weight must not be negative "
                             f"(got {values['weight']:g}).")
        clean.append(values)
    total = sum(r["weight"] for r in clean)
    if total <= 0:
        raise ValueError(f"The {side} weights are all zero: give at least one component a positive weight.")
    note = None
    if abs(total - 1.0) > 1e-6:
        note = f"The {side} weights summed to {total:.4g}; they were divided by that so they sum to 1."
        clean = [{**r, "weight": r["weight"] / total} for r in clean]
    try:
        return presets.mixture_from_rows(clean), note
    except ValueError as err:
        raise ValueError(f"{side.capitalize()}: {err}") from err


def device_label() -> str:
    """Where training runs: the GPU's name, or "CPU"."""
    device = resolve_device("auto")
    return f"GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "CPU"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "…"
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


# =============================================================================================
# Page state
# =============================================================================================
@dataclass
class PageState:
    """What one page keeps in the session."""

    job: TrainingJob | None = None
    job_network: str = ""
    preview_points: np.ndarray | None = None
    preview_target: np.ndarray | None = None
    runs: dict[str, Run] = field(default_factory=dict)   # role -> run
    reference: Reference | None = None
    notices: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) from the last job
    cache: dict[Any, Any] = field(default_factory=dict)  # figures and files of the current runs
    tables: dict[str, Any] = field(default_factory=dict)  # mixture tables: base and edited
    drawings: dict[str, Any] = field(default_factory=dict)  # canvas drawings, kept across pages
    uploads: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)  # side -> (file name, image)
    counter: int = 0                                      # random presets drawn so far


def page_state(page: str) -> PageState:
    """The page's state in this session, created on first use."""
    import streamlit as st

    return st.session_state.setdefault(f"{page}.state", PageState())


def _collect(state: PageState) -> None:
    """Move a finished job's outcome into the page state."""
    job = state.job
    if job is None or not job.done:
        return
    state.job = None
    if job.error is not None:
        state.notices = [("error", job.error)]
        return
    run, reference = job.evaluation
    if state.reference is None or state.reference.signature != reference.signature:
        state.runs = {}
    state.reference = reference
    state.runs[run.role] = run
    state.cache = {}
    kind = {"completed": "success", "stopped": "warning", "diverged": "error"}[job.result.stopped]
    state.notices = [(kind, job.result.message)]


def is_training(page: str) -> bool:
    """True while a job of this page runs; collects a finished one first."""
    state = page_state(page)
    _collect(state)
    return state.job is not None


# =============================================================================================
# Inputs
# =============================================================================================
def page_header(title: str) -> None:
    """Route through app.py if needed, then set the wide layout, the tab's title and the heading.

    Every page calls this first. Until some session has run app.py's ``st.navigation``, Streamlit
    treats ``pages/`` as a legacy auto-discovered page folder (documented: st.navigation switches
    the app over "as soon as any session" calls it). A student who opens a link to a page on a
    freshly started server would get that page run without app.py: the folder's file names as
    navigation and no wide layout. Switching the flag and rerunning routes the session through
    app.py to the same page (the URL names it); it happens once per server process. Not under
    AppTest: it resets the flag before every run, and a rerun would drop that run's button clicks.
    """
    import streamlit as st
    from streamlit import config

    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode
        PagesManager = None
    if (PagesManager is not None and getattr(PagesManager, "uses_pages_directory", False)
            and not config.get_option("global.appTest")):
        PagesManager.uses_pages_directory = False
        st.rerun()
    st.set_page_config(page_title=f"{title} · GradNetOT Studio", layout="wide")
    st.title(title)


def _key(page: str, *parts: Any) -> str:
    return ".".join([page, *map(str, parts)])


def _set_gaussian_rows(page: str, rows: dict[str, dict[str, float]]) -> None:
    import streamlit as st

    for side, row in rows.items():
        for name, (_, lo, hi, step) in GAUSSIAN_FIELDS.items():
            value = min(max(round(row[name] / step) * step, lo), hi)
            st.session_state[_key(page, side, name)] = round(value, 6)


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


def _on_gaussian_preset(page: str) -> None:
    import streamlit as st

    rows = _gaussian_preset_rows(st.session_state[_key(page, "preset")], page)
    if rows is not None:
        _set_gaussian_rows(page, rows)


def _on_random_pair(page: str) -> None:
    import streamlit as st

    st.session_state[_key(page, "preset")] = "Random pair"
    _on_gaussian_preset(page)


def _on_custom(page: str) -> None:
    import streamlit as st

    st.session_state[_key(page, "preset")] = "Custom"


def gaussian_inputs(page: str, disabled: bool) -> dict[str, dict[str, float]]:
    """Preset picker and sliders for a source and a target Gaussian; returns their slider rows."""
    import streamlit as st

    options = [*presets.gaussian_presets(), "Random pair", "Custom"]
    if _key(page, "preset") not in st.session_state:
        st.session_state[_key(page, "preset")] = options[0]
        _set_gaussian_rows(page, _gaussian_preset_rows(options[0], page))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.selectbox("Preset", options, key=_key(page, "preset"), on_change=_on_gaussian_preset, args=(page,),
                   disabled=disabled, persist_state="session")
    right.button("New random pair", on_click=_on_random_pair, args=(page,), disabled=disabled,
                 key=_key(page, "random"))
    rows: dict[str, dict[str, float]] = {}
    for side, col in zip(("source", "target"), st.columns(2)):
        with col:
            st.markdown(f"**{side.capitalize()}**")
            rows[side] = {}
            for name, (label, lo, hi, step) in GAUSSIAN_FIELDS.items():
                rows[side][name] = st.slider(label, lo, hi, step=step, key=_key(page, side, name),
                                             disabled=disabled, on_change=_on_custom, args=(page,),
                                             persist_state="session")
    return rows


def gaussian_problem(page: str, rows: dict[str, dict[str, float]]) -> Problem | None:
    """The Gaussian problem from slider rows, or None after showing why the input is invalid."""
    import streamlit as st

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


def _mixture_frame(rows: Sequence[dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{c: float(r[c]) for c in MIXTURE_COLUMNS} for r in rows], columns=list(MIXTURE_COLUMNS))


def _on_mixture_preset(page: str) -> None:
    import streamlit as st

    name = st.session_state[_key(page, "preset")]
    if name not in presets.MIXTURE_ROWS:
        return
    state = page_state(page)
    for side, rows in zip(("source", "target"), presets.MIXTURE_ROWS[name]):
        state.tables[side] = {"base": _mixture_frame(rows), "edited": _mixture_frame(rows),
                              "version": state.tables.get(side, {}).get("version", 0) + 1}


def mixture_inputs(page: str, disabled: bool) -> dict[str, list[dict[str, Any]]]:
    """Preset picker and one editable table per side; returns the edited rows."""
    import streamlit as st

    names = list(presets.MIXTURE_ROWS)
    if _key(page, "preset") not in st.session_state:
        st.session_state[_key(page, "preset")] = names[0]
    state = page_state(page)
    if not state.tables:
        _on_mixture_preset(page)
    st.selectbox("Preset", [*names, "Custom"], key=_key(page, "preset"), on_change=_on_mixture_preset,
                 args=(page,), disabled=disabled, persist_state="session")
    column_config = {
        "weight": st.column_config.NumberColumn("weight", min_value=0.0, format="%.3f", width="small"),
        "mean_x": st.column_config.NumberColumn("mean x", format="%.2f", width="small"),
        "mean_y": st.column_config.NumberColumn("mean y", format="%.2f", width="small"),
        "std_x": st.column_config.NumberColumn("std x", min_value=0.0, format="%.2f", width="small"),
        "std_y": st.column_config.NumberColumn("std y", min_value=0.0, format="%.2f", width="small"),
        "corr": st.column_config.NumberColumn("corr.", min_value=-1.0, max_value=1.0, format="%.2f",
                                              width="small", help="correlation"),
    }
    rows: dict[str, list[dict[str, Any]]] = {}
    for side, col in zip(("source", "target"), st.columns(2)):
        table = state.tables[side]
        key = _key(page, side, "table", table["version"])
        if key not in st.session_state:
            # A fresh editor (first visit, or back from another page): start from the last edits,
            # because the editor's own state holds edits relative to its base table.
            table["base"] = table["edited"]
        with col:
            st.markdown(f"**{side.capitalize()} components**")
            edited = st.data_editor(table["base"], key=key, num_rows="dynamic", disabled=disabled,
                                    column_config=column_config, hide_index=True,
                                    on_change=_on_custom, args=(page,))
        table["edited"] = edited
        rows[side] = edited.to_dict("records")
    return rows


def mixture_problem(page: str, rows: dict[str, list[dict[str, Any]]], samples: int) -> Problem | None:
    """The mixture problem from table rows, or None after showing why the input is invalid."""
    import streamlit as st

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
    return Problem(page, source, target, truth="barycentric", samples=samples)


def _density_pair(page: str, source: Density, target: Density) -> None:
    """Heatmaps of the source and the target density on one shared box."""
    import streamlit as st

    from .plotting import density_heatmap, square_bounds

    gen = torch.Generator().manual_seed(0)
    bounds = square_bounds(_to_numpy(source.sample(2000, gen)), _to_numpy(target.sample(2000, gen)), margin=0.15)
    for side, density, col in zip(("source", "target"), (source, target), st.columns(2)):
        col.plotly_chart(density_heatmap(density, bounds, height=260, title=f"{side.capitalize()} density"),
                         key=_key(page, side, "heatmap"), config={"displayModeBar": False})


def truth_samples_input(page: str, disabled: bool) -> int:
    """How many samples the barycentric-projection ground truth uses."""
    import streamlit as st

    lo, default, hi = TRUTH_SAMPLES
    st.session_state.setdefault(_key(page, "samples"), default)
    return int(st.slider("Ground-truth samples n (exact EMD; time grows like n²)", lo, hi, step=100,
                         key=_key(page, "samples"), disabled=disabled, persist_state="session"))


def _bandwidth(preset: str) -> float:
    return presets.TRAIN_PRESETS[preset].bandwidth_end


def _show_digit(image: np.ndarray, caption: str, heatmap_key: str) -> None:
    import streamlit as st
    from PIL import Image

    from .plotting import density_heatmap

    big = Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255)).resize((168, 168), Image.Resampling.NEAREST)
    left, right = st.columns(2)
    left.image(big, caption=caption)
    density = ImageDensity(image, bandwidth=_bandwidth("digits"))
    right.plotly_chart(density_heatmap(density, (-0.05, 1.05, -0.05, 1.05), height=220, title="Density"),
                       key=heatmap_key, config={"displayModeBar": False})


def digit_input(page: str, side: str, disabled: bool) -> np.ndarray | None:
    """A digit image for one side from a drawing, an upload or a bundled example, shown with its
    density; None (after a message) when there is none or it is unusable."""
    import streamlit as st

    from . import images

    st.markdown(f"**{side.capitalize()}**")
    mode_key = _key(page, side, "mode")
    st.session_state.setdefault(mode_key, "Example")
    mode = st.radio("Image from", ["Example", "Draw", "Upload"], key=mode_key, horizontal=True,
                    disabled=disabled, persist_state="session", label_visibility="collapsed")
    image: np.ndarray | None = None
    caption = ""
    try:
        if mode == "Example":
            bundled = images.bundled_digits()
            digits = [d for d, paths in bundled.items() if paths]
            if not digits:
                st.error("No bundled example digits were found in assets/digits/.")
                return None
            digit_default, index_default = DIGIT_DEFAULTS[side]
            st.session_state.setdefault(_key(page, side, "digit"), digit_default)
            st.session_state.setdefault(_key(page, side, "index"), index_default)
            a, b = st.columns(2)
            digit = a.selectbox("Digit", digits, key=_key(page, side, "digit"), disabled=disabled,
                                persist_state="session")
            count = len(bundled[digit])
            index = b.selectbox("Example", list(range(count)), key=_key(page, side, "index"),
                                disabled=disabled, persist_state="session",
                                format_func=lambda i: f"#{i + 1}")
            image = images.load_bundled(digit, min(index, count - 1))
            caption = f"Bundled example: digit {digit}, #{index + 1}"
        elif mode == "Draw":
            image = _canvas(page, side, disabled)
            caption = "Your drawing, as a 28 x 28 digit"
        else:
            image, caption = _upload(page, side, disabled)
    except ValueError as err:
        st.error(str(err))
        return None
    if image is not None:
        _show_digit(image, caption, _key(page, side, "heatmap"))
    return image


def _canvas(page: str, side: str, disabled: bool) -> np.ndarray | None:
    import streamlit as st
    from streamlit_drawable_canvas import st_canvas

    from .images import canvas_to_image

    state = page_state(page)
    key = _key(page, side, "canvas")
    saved = state.drawings.setdefault(side, {"mount": None, "json": None, "rgba": None})
    if key not in st.session_state:
        # Newly mounted (first visit or back from another page): redraw the last drawing. Kept
        # fixed while mounted: a changing initial_drawing would redraw the canvas.
        saved["mount"] = saved["json"]
    result = st_canvas(fill_color="rgba(0, 0, 0, 0)", stroke_width=18, stroke_color="#FFFFFF",
                       background_color="#000000", width=CANVAS_SIZE, height=CANVAS_SIZE,
                       drawing_mode="freedraw", initial_drawing=saved["mount"], return_image_data=True,
                       key=key, disabled=disabled)
    objects = (result.json_data or {}).get("objects") or []
    rgba = result.image_data if objects else None
    if objects and rgba is not None:
        saved["json"], saved["rgba"] = result.json_data, rgba
    elif objects and saved["rgba"] is not None:
        rgba = saved["rgba"]
    if not objects:
        saved["json"], saved["rgba"] = None, None
        st.info("Draw a digit on the black canvas (white ink); it is centred and scaled like MNIST.")
        return None
    if rgba is None:
        return None
    return canvas_to_image(np.asarray(rgba))


def _upload(page: str, side: str, disabled: bool) -> tuple[np.ndarray | None, str]:
    import streamlit as st

    from .images import load_image

    state = page_state(page)
    key = _key(page, side, "upload")
    fresh = key not in st.session_state
    file = st.file_uploader("Image file (PNG, JPEG, GIF, BMP or WebP)", type=UPLOAD_TYPES, key=key,
                            disabled=disabled)
    if file is None:
        if fresh and side in state.uploads:
            name, image = state.uploads[side]
            return image, f"Uploaded earlier: {name}"
        state.uploads.pop(side, None)
        st.info("Upload a picture of a digit: any size, dark ink on light paper or light on dark.")
        return None, ""
    image = load_image(file.getvalue())
    state.uploads[side] = (file.name, image)
    return image, f"Uploaded: {file.name}"


def digit_problem(page: str, source: np.ndarray | None, target: np.ndarray | None,
                  samples: int) -> Problem | None:
    """The digit-morph problem, or None when an image is missing or unusable (shown)."""
    import streamlit as st

    if source is None or target is None:
        return None
    bandwidth = _bandwidth("digits")
    try:
        return Problem(page, _side("source", lambda im: ImageDensity(im, bandwidth=bandwidth), source),
                       _side("target", lambda im: ImageDensity(im, bandwidth=bandwidth), target),
                       truth="barycentric", samples=samples)
    except ValueError as err:
        st.error(str(err))
        return None


# =============================================================================================
# Training panel
# =============================================================================================
def _objective_settings(page: str, objectives: Sequence[str], disabled: bool) -> dict[str, Any]:
    """The objective select box (when there is a choice) and, for the constrained flow, its steps."""
    import streamlit as st

    if len(objectives) < 2:
        return dict(presets.OBJECTIVES[objectives[0]])
    key = _key(page, "objective")
    st.session_state.setdefault(key, objectives[0])
    label = st.selectbox("Training objective", list(objectives), key=key, disabled=disabled,
                         persist_state="session",
                         help="Monge–Ampère and KL use the target density; the constrained gradient flow "
                              "(Dumont et al. 2026) needs a log-concave target such as a Gaussian; the "
                              "sample-only losses see target samples, not its density.")
    overrides = dict(presets.OBJECTIVES[label])
    if overrides.get("scheme") == "constrained-flow":
        a, b, c = st.columns(3)
        for name, col, title in (("flow_outer_steps", a, "Outer steps"), ("flow_inner_steps", b, "Inner steps")):
            fkey = _key(page, label, name)
            st.session_state.setdefault(fkey, int(overrides.get(name, getattr(presets.TrainConfig, name))))
            overrides[name] = int(col.number_input(title, min_value=1, max_value=1000, step=1, key=fkey,
                                                   disabled=disabled, persist_state="session"))
        tkey = _key(page, label, "flow_tau")
        st.session_state.setdefault(tkey, float(overrides.get("flow_tau", presets.TrainConfig.flow_tau)))
        overrides["flow_tau"] = float(c.number_input("Step size tau", min_value=1e-3, max_value=10.0, format="%g",
                                                     key=tkey, disabled=disabled, persist_state="session"))
        overrides["steps"] = overrides["flow_outer_steps"] * overrides["flow_inner_steps"]
        st.caption("The flow ignores Steps and Learning rate below: it runs outer x inner Adam steps.")
    return overrides


def _network_settings(page: str, preset: str, networks: Sequence[str], disabled: bool,
                      objectives: Sequence[str] = (presets.DEFAULT_OBJECTIVE,)
                      ) -> tuple[str, dict[str, int], dict[str, Any]]:
    import streamlit as st

    preset_network, preset_kwargs = presets.MODEL_PRESETS[preset]
    config = presets.TRAIN_PRESETS[preset]
    with st.expander("Network and training settings", expanded=False):
        net_key = _key(page, "network")
        st.session_state.setdefault(net_key, preset_network if preset_network in networks else networks[0])
        network = st.selectbox("Map", list(networks), key=net_key, disabled=disabled, persist_state="session",
                               help="The mGradNets are monotone by construction; the MLP baseline is not.")
        objective = _objective_settings(page, objectives, disabled)
        params = inspect.signature(NETWORKS[network].__init__).parameters
        arch = {}
        sizes = [name for name in ("width", "depth", "modules") if name in params]
        for name, col in zip(sizes, st.columns(len(sizes))):
            default = (preset_kwargs[name] if network == preset_network and name in preset_kwargs
                       else params[name].default)
            key = _key(page, network, name)
            st.session_state.setdefault(key, int(default))
            arch[name] = int(col.number_input(name.capitalize(), min_value=2 if name == "width" else 1,
                                              max_value=LIMITS[name], step=1, key=key, disabled=disabled,
                                              persist_state="session"))
        a, b, c = st.columns(3)
        for name, value in (("steps", config.steps), ("lr", config.lr), ("seed", config.seed)):
            st.session_state.setdefault(_key(page, name), value)
        steps = a.number_input("Steps", min_value=1, max_value=LIMITS["steps"], step=100,
                               key=_key(page, "steps"), disabled=disabled, persist_state="session")
        lr = b.number_input("Learning rate", min_value=1e-5, max_value=10.0, format="%g",
                            key=_key(page, "lr"), disabled=disabled, persist_state="session")
        seed = c.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=_key(page, "seed"),
                              disabled=disabled, persist_state="session")
        shown = presets.train_preset(preset, **objective)
        loss = (f"{shown.flow_variant} constrained gradient flow" if shown.scheme == "constrained-flow"
                else f"{shown.loss} loss" + (f" ({shown.residual})" if shown.loss == "monge-ampere" else ""))
        st.caption(f"Optimiser {shown.optimizer}, batch {shown.batch_size}, learning-rate schedule "
                   f"{shown.lr_schedule}; {loss}.")
    return network, arch, {"steps": int(steps), "lr": float(lr), "seed": int(seed), **objective}


def _start(page: str, problem: Problem, preset: str, network: str, arch: dict[str, int],
           overrides: dict[str, Any]) -> None:
    state = page_state(page)
    config = presets.train_preset(preset, **overrides)
    if config.scheme == "constrained-flow":
        from .flow import log_concave_target

        log_concave_target(problem.target)      # refuses a target the flow cannot use, with a message
    model = seeded_map(network, overrides["seed"], dim=2, **arch)
    gen = torch.Generator().manual_seed(problem.seed + 1)
    source, target = problem.source.to("cpu"), problem.target.to("cpu")
    preview = source.sample(PREVIEW_POINTS, gen)
    state.preview_points = _to_numpy(preview)
    state.preview_target = _to_numpy(target.sample(PREVIEW_POINTS, gen))
    cached = state.reference if state.reference and state.reference.signature == problem.signature else None
    settings = {"network": network, **arch, "training": config.to_dict(), "problem": problem.describe()}

    def finish(trained: TransportMap, result: TrainResult) -> tuple[Run, Reference]:
        reference = cached or compute_reference(problem)
        return evaluate_run(problem, reference, trained, result, network, settings), reference

    state.job = TrainingJob(model, problem.source, problem.target, config, preview_points=preview,
                            preview_every=min(max(config.steps // 10, PREVIEW_EVERY[0]), PREVIEW_EVERY[1]),
                            finish=finish, cpu_threads=CPU_THREADS).start()
    state.job_network, state.notices = network, []
    state.cache.pop("live", None)


def training_panel(page: str, problem: Problem | None, preset: str,
                   networks: Sequence[str] = tuple(NETWORKS),
                   objectives: Sequence[str] = (presets.DEFAULT_OBJECTIVE,)) -> None:
    """Settings (defaults from ``presets``' ``preset``), the Train button and, while training, the
    live panel, refreshed every ``POLL_SECONDS``."""
    import streamlit as st

    state = page_state(page)
    # Not is_training(): a job that ended after the page drew its (locked) inputs is collected by
    # the live panel's rerun, so the inputs are drawn unlocked again.
    training = state.job is not None
    network, arch, overrides = _network_settings(page, preset, networks, disabled=training,
                                                 objectives=objectives)
    left, right = st.columns([1, 4], vertical_alignment="center")
    clicked = left.button("Train", type="primary", key=_key(page, "train"),
                          disabled=training or problem is None)
    right.caption(f"Training runs on the {device_label()}."
                  + ("" if problem is not None or training else " Fix the input above to train."))
    if clicked and problem is not None:
        try:
            _start(page, problem, preset, network, arch, overrides)
        except ValueError as err:
            st.error(str(err))
        else:
            st.rerun()
    if training:
        st.fragment(run_every=POLL_SECONDS)(_live_panel)(page)
    for kind, text in state.notices:
        getattr(st, kind)(text)


def _live_panel(page: str) -> None:
    import streamlit as st

    from .plotting import loss_figure, preview_figure, square_bounds

    state = page_state(page)
    job = state.job
    if job is None or job.done:
        st.rerun()
        return
    snap = job.snapshot()
    if snap.phase == "waiting":
        text = "Waiting for the GPU: another session is training on it…"
    elif snap.phase == "finishing":
        text = "Training finished; computing the ground truth and the metrics…"
    else:
        outer = (f"outer step {snap.outer_step} / {snap.outer_total} · " if snap.outer_total else "")
        text = (f"{outer}Step {snap.step:,} / {snap.total:,} · {snap.steps_per_second:,.0f} steps/s · "
                f"ETA {_duration(snap.eta)} · {state.job_network} on {snap.device}")
    bar, stop = st.columns([5, 1], vertical_alignment="bottom")
    bar.progress(snap.fraction, text=text)
    if stop.button("Stop", key=_key(page, "stop"), disabled=job.stopping or snap.phase != "training"):
        job.stop()
    loss_col, preview_col = st.columns(2)
    live = state.cache.setdefault("live", {})
    with loss_col:
        if snap.losses:
            # One figure per job, its curve updated in place: a new figure costs ~10x more.
            live["loss"] = loss_figure(snap.loss_steps, snap.losses, height=280, figure=live.get("loss"))
            st.plotly_chart(live["loss"], key=_key(page, "live_loss"), config={"displayModeBar": False})
    with preview_col:
        if snap.preview is not None and state.preview_points is not None:
            if live.get("preview_step") != snap.preview_step or "preview" not in live:
                bounds = square_bounds(state.preview_points, state.preview_target)
                live["preview"] = preview_figure(state.preview_points, snap.preview, bounds,
                                                 state.preview_target, height=280,
                                                 title=f"T(x) at step {snap.preview_step:,}")
                live["preview_step"] = snap.preview_step
            st.plotly_chart(live["preview"], key=_key(page, "live_preview"), config={"displayModeBar": False})


# =============================================================================================
# Results panel
# =============================================================================================
def _panels(state: PageState) -> list:
    from .plotting import Panel

    ref = state.reference
    panels = []
    learned = state.runs.get("learned")
    if learned is not None:
        panels.append(Panel(f"{learned.network} (learned)", learned.mapped, (ref.grid, learned.grid_mapped)))
    panels.append(Panel(ref.name, ref.mapped, (ref.grid, ref.grid_mapped)))
    baseline = state.runs.get("baseline")
    if baseline is not None:
        panels.append(Panel(f"{baseline.network} (not monotone)", baseline.mapped,
                            (ref.grid, baseline.grid_mapped)))
    return panels


def _cached(state: PageState, key: Any, make: Callable[[], Any]) -> Any:
    if key not in state.cache:
        state.cache[key] = make()
    return state.cache[key]


def results_panel(page: str, problem: Problem | None) -> None:
    """The animation with its toggles, the metrics, the loss curves and the downloads."""
    import streamlit as st

    from .plotting import animation_figure, animation_gif, loss_figure

    state = page_state(page)
    if not state.runs or state.reference is None:
        return
    ref = state.reference
    runs = [state.runs[role] for role in ("learned", "baseline") if role in state.runs]
    st.divider()
    st.subheader("Results")
    if problem is None or problem.signature != ref.signature:
        st.caption("These results are for the problem as it was when you pressed Train.")
    a, b, c = st.columns(3)
    arrows = a.toggle("Displacement arrows", key=_key(page, "arrows"), persist_state="session")
    paths = b.toggle("Trajectories", key=_key(page, "paths"), persist_state="session",
                     help="Straight paths x → T(x); they never cross for a monotone map.")
    show_target = c.toggle("Target samples", key=_key(page, "show_target"), persist_state="session")
    panels = _panels(state)
    figure = _cached(state, ("animation", arrows, paths, show_target), lambda: animation_figure(
        ref.points, panels, ref.target_samples, frames=ANIMATION_FRAMES, arrows=arrows,
        trajectories=paths, show_target=show_target))
    st.plotly_chart(figure, key=_key(page, "animation"), config={"displayModeBar": False})
    st.caption("Points move along x_t = (1 − t) x + t T(x); colours mark where each point started.")

    st.markdown("**Metrics** against the ground truth on the "
                f"{len(ref.points):,} source samples shown above")
    table = metrics_table(runs)
    st.dataframe(table, hide_index=True, column_config={
        "MSE": st.column_config.NumberColumn(format="%.3e"),
        "L2-UVP (%)": st.column_config.NumberColumn(format="%.3f"),
        "cosine": st.column_config.NumberColumn(format="%.4f"),
        "Monge–Ampère residual": st.column_config.NumberColumn(format="%.4f"),
        "smallest Jacobian eigenvalue": st.column_config.NumberColumn(format="%.4f"),
        "training time (s)": st.column_config.NumberColumn(format="%.1f"),
    })
    steps = [run.result.history["step"] for run in runs]
    losses = [run.result.history["loss"] for run in runs]
    loss_col, files_col = st.columns([3, 2])
    with loss_col:
        for run, s, l in zip(runs, steps, losses):
            st.plotly_chart(loss_figure(s, l, height=240, title=f"Training loss: {run.network}"),
                            key=_key(page, "loss", run.role), config={"displayModeBar": False})
    with files_col:
        st.markdown("**Downloads**")
        for run in runs:
            st.download_button(f"Trained map: {run.network} (.safetensors)",
                               _cached(state, ("map", run.role), lambda run=run: map_to_bytes(run.model, run.settings)),
                               file_name=f"{page}-{run.network.replace(' ', '-')}.safetensors",
                               mime="application/octet-stream", key=_key(page, "download_map", run.role))
        st.download_button("Metrics (.csv)", table.to_csv(index=False), file_name=f"{page}-metrics.csv",
                           mime="text/csv", key=_key(page, "download_csv"))
        st.download_button("Animation (.gif)", lambda: _cached(state, ("gif", show_target), lambda: animation_gif(
            ref.points, panels, ref.target_samples, frames=ANIMATION_FRAMES, show_target=show_target)),
            file_name=f"{page}-animation.gif", mime="image/gif", key=_key(page, "download_gif"))
