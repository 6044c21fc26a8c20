"""2-D transport problems as the pages set them up: the problem, its ground truth, the evaluated runs.

No Streamlit here: pages build a ``Problem`` from their widgets (``studio.inputs``), the training panel
trains on it, and ``compute_reference`` / ``evaluate_run`` give the results panel what it draws.
``density_morph_of``, ``residual_of`` and ``morph_back`` compute the density pictures of a run (each
once; the results panel caches them). ``gaussian_row``, ``gaussian_from_row`` and ``mixture_from_table``
turn widget values into densities.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from gradnet_core import presets
from gradnet_core.densities import Density, Gaussian, GaussianMixture, ImageDensity
from gradnet_core.ground_truth import (barycentric_projection, barycentric_projections, gaussian_map,
                                       reference_sample)
from gradnet_core.metrics import evaluate_map
from gradnet_core.networks import TransportMap
from gradnet_core.plotting import grid_points, square_bounds
from gradnet_core.pushforward import DensityMorph, Grid, monge_ampere_field, morph_picture
from gradnet_core.training import TrainResult
from gradnet_core.verdict import Verdict, assess_map

__all__ = [
    "Problem", "Reference", "Run", "compute_reference", "evaluate_run", "evaluate_training", "metrics_table",
    "to_numpy", "picked_objective", "TRAINED_ON",
    "gaussian_row", "gaussian_from_row", "mixture_from_table", "MIXTURE_COLUMNS", "METRIC_COLUMNS", "TRUTH_METRICS",
    "CHECK_METRICS",
    "density_morph_of", "residual_of", "morph_back", "PICTURE_RESOLUTION", "PICTURE_FRAMES",
    "density_from_description", "problem_from_description", "without_strokes",
]

ARROW_GRID = 12                  # arrows on a 12 x 12 grid, kept where the source has mass
PICTURE_RESOLUTION = 100         # density pictures: grid points per side
PICTURE_FRAMES = 30              # frames of the density morph, as in the point animation
MIXTURE_COLUMNS = ("weight", "mean_x", "mean_y", "std_x", "std_y", "corr")
#: A Gaussian's fields as the mixture table's headers, the Gaussians page's sliders and the messages name them.
MIXTURE_HEADERS = {"weight": "weight", "mean_x": "mean x", "mean_y": "mean y", "std_x": "std x", "std_y": "std y",
                   "corr": "correlation"}
METRIC_COLUMNS = {                # metrics key -> table column
    "verdict": "verdict", "mse": "MSE", "l2_uvp": "L2-UVP (%)", "cosine": "cosine",
    "error_bound": "W2 excess, RMS",
    "ma_residual": "Monge–Ampère residual", "distance_ratio": "energy distance ÷ target's own",
    "kl_estimate": "KL(T#p ‖ q) estimate", "uncovered": "target mass left uncovered (%)",
    "misplaced": "source mass sent where the target is thin (%)",
    "min_eigenvalue": "smallest Jacobian eigenvalue",
    "training_time": "training time (s)", "steps": "steps",
}

#: The page's two metrics tables: the map against the ground truth, with what its training took, and the checks that
#: need no ground truth (the verdict's, the Monge–Ampère residual and the Jacobian's eigenvalues). Together the 13
#: columns did not fit a 1400 px page, and most of them were out of sight.
TRUTH_METRICS = ("mse", "l2_uvp", "cosine", "training_time", "steps")
CHECK_METRICS = ("verdict", "error_bound", "distance_ratio", "kl_estimate", "uncovered", "misplaced", "ma_residual",
                 "min_eigenvalue")


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


def density_from_description(described: dict[str, Any]) -> Density:
    """The density ``_describe`` described (a run kept on disk brings its problem back this way)."""
    kind = described.get("type")
    if kind == "Gaussian":
        return Gaussian(described["mean"], described["cov"])
    if kind == "GaussianMixture":
        return GaussianMixture(described["weights"], described["means"], described["covs"])
    if kind == "ImageDensity":
        return ImageDensity(np.asarray(described["image"], dtype=np.float64), bandwidth=described["bandwidth"])
    raise ValueError(f"cannot rebuild a density of type {kind!r}")


def without_strokes(described: dict[str, Any]) -> dict[str, Any]:
    """A problem's description (``Problem.describe``) less the canvas strokes and the table cells it was set up with:
    the same images drawn anew, the same mixtures typed another way ("1" for "1.0"), are the same problem."""
    return {k: v for k, v in described.items() if k not in ("drawings", "tables")}


def problem_from_description(page: str, described: dict[str, Any]) -> Problem:
    """The problem ``Problem.describe`` described, on ``page``."""
    return Problem(page, density_from_description(described["source"]), density_from_description(described["target"]),
                   truth=described["ground_truth"], samples=int(described["samples"]),
                   drawings=dict(described.get("drawings") or {}), tables=dict(described.get("tables") or {}))


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
    # The canvas's strokes (its JSON) of a side drawn on the Digits page, kept with the runs so that a reload brings
    # the drawing back as strokes to go on with, not a picture; not part of the problem (the images are).
    drawings: dict[str, Any] = field(default_factory=dict, compare=False)
    # The mixture tables' rows as typed, by side, kept with the runs likewise: set back from the densities, a weight
    # typed 1 beside 0.5 came back as 0.666667, another problem to the last digit (a review).
    tables: dict[str, Any] = field(default_factory=dict, compare=False)

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
        described = {"source": _describe(self.source), "target": _describe(self.target),
                     "ground_truth": self.truth, "samples": self.samples}
        if self.drawings:
            described["drawings"] = dict(self.drawings)
        if self.tables:
            described["tables"] = dict(self.tables)
        return described


@dataclass
class Reference:
    """Ground truth at the shared source samples, and the samples themselves."""

    signature: str
    name: str                  # panel title
    source: Density            # the problem's densities, on the CPU
    target: Density
    points: np.ndarray         # source samples x: (n, 2)
    mapped: np.ndarray         # T*(x): (n, 2)
    target_samples: np.ndarray  # (n, 2)
    inverse_mapped: np.ndarray  # the ground truth's inverse at the target samples: (n, 2)
    grid: np.ndarray           # arrow starts: (g, 2)
    grid_mapped: np.ndarray    # T* at the arrow starts: (g, 2)
    seconds: float             # time to compute it
    problem: dict[str, Any] = field(default_factory=dict)   # Problem.describe() of its problem
    # The barycentric ground truth's own error, estimated: half the MSE and L2-UVP between it and a second one from
    # other target samples (None for the closed form). What an exact map scores against it, about.
    noise_mse: float | None = None
    noise_l2_uvp: float | None = None


@dataclass
class Run:
    """A map on the page's problem (trained here or loaded from a file) and what the results panel shows."""

    network: str               # registry name
    model: TransportMap
    result: TrainResult | None  # None for a map loaded from a file
    signature: str             # the problem its metrics are measured on
    settings: dict[str, Any]   # network arguments, training configuration and the problem it was trained on
    mapped: np.ndarray         # T(x) at the reference's source samples
    grid_mapped: np.ndarray    # T at the reference's arrow starts
    metrics: dict[str, Any]
    origin: str = ""           # "" when trained here; the file's name when loaded
    number: int = 0            # set when the page files it: #1, #2, ...

    @property
    def name(self) -> str:
        """"#2 mGradNet-M": the run's number and network, where the whole label is too long (panel titles, tables)."""
        return f"#{self.number} {self.network}"

    @property
    def label(self) -> str:
        """"#2 mGradNet-M (KL divergence, 500 steps)", "#4 mGradNet-M (KL divergence, 500 steps, seed 7)",
        "#5 mGradNet-M (KL divergence, 1,100 steps, the 500-step map kept)" (a later phase's map not kept), or
        "#3 mGradNet-C (from map.safetensors)"."""
        if self.origin:
            how = f"from {self.origin}"
        else:
            objective = self.settings.get("objective_label") or self.settings.get("training", {}).get(
                "objective", {}).get("name", "")
            inverted = "inverse of the map trained back" if self.result and self.result.direction == "reverse" else ""
            # the seed where it is not the default: two runs of one network told apart (a review saw #2 and #5 alike)
            seed = self.settings.get("training", {}).get("seed", 0)
            steps = _count(self.metrics.get("steps", 0), "step")
            if self.metrics.get("kept_steps"):
                steps += f", the {self.metrics['kept_steps']:,.0f}-step map kept"
            how = ", ".join(part for part in (str(objective), steps, inverted, f"seed {seed}" if seed else "") if part)
        return f"{self.name} ({how})"


def _count(n: float, noun: str) -> str:
    """"1 step", "1,600 steps"."""
    return f"{n:,.0f} {noun}" + ("" if n == 1 else "s")


def to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float64 NumPy copy of a tensor (or array), on the CPU."""
    return t.detach().cpu().to(torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)


def _arrow_grid(source: Density, x: np.ndarray) -> np.ndarray:
    """Nodes of an ``ARROW_GRID``-square grid over the samples ``x: (n, 2)`` where the source has
    mass (log p at least its 5% quantile over the samples): ``(g, 2)``. Where under ``ARROW_GRID`` nodes have mass (a
    source of small blobs far apart: blobs 100 apart of standard deviation 1 fell between the nodes, and the page
    drew no arrow; a review), ``ARROW_GRID`` x 3 of the samples, evenly spread through them, instead."""
    grid = grid_points(square_bounds(x, margin=0.0, quantile=0.01), ARROW_GRID)
    with torch.no_grad():
        log_p = source.log_prob(torch.as_tensor(x, dtype=source.dtype)).double()
        keep = source.log_prob(torch.as_tensor(grid, dtype=source.dtype)).double() >= torch.quantile(log_p, 0.05)
    if int(keep.sum()) >= ARROW_GRID:
        return grid[keep.numpy()]
    return x[np.linspace(0, len(x) - 1, min(len(x), 3 * ARROW_GRID)).astype(int)]


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
    x = to_numpy(reference_sample(source, problem.samples, gen))
    y = to_numpy(reference_sample(target, problem.samples, gen))
    grid = _arrow_grid(source, x)
    noise: dict[str, float] = {}
    if problem.truth == "gaussian":
        truth = gaussian_map(source, target)
        mapped, grid_mapped = truth(x), truth(grid)
        inverse_mapped = gaussian_map(target, source)(y)
        name = "Ground truth (closed form)"
    else:
        forward, backward = barycentric_projections(x, y)
        mapped, inverse_mapped = to_numpy(forward), to_numpy(backward)
        index = _nearest_samples(grid, x)
        grid, grid_mapped = x[index], mapped[index]
        name = f"Ground truth (barycentric, n={problem.samples})"
        # A second ground truth from other target samples: a review found right maps above the thresholds in the
        # metrics table (the identity at 1.8 % L2-UVP, a drawn "=" -> "||" at MSE 7.9e-4 to 6.8e-3 by the sampling
        # seed alone), the ground truth's own error at n = 1000.
        again = to_numpy(barycentric_projection(x, to_numpy(reference_sample(target, problem.samples, gen))))
        gap = float(np.mean(np.sum((mapped - again) ** 2, axis=1))) / 2.0
        noise = {"noise_mse": gap / x.shape[1], "noise_l2_uvp": 100.0 * gap / float(torch.trace(target.cov.double()))}
    return Reference(signature=problem.signature, name=name, source=source, target=target, points=x,
                     mapped=np.asarray(mapped), target_samples=y, inverse_mapped=np.asarray(inverse_mapped),
                     grid=grid, grid_mapped=np.asarray(grid_mapped), seconds=time.perf_counter() - start,
                     problem=problem.describe(), **noise)


#: What a run's label adds when its fallback trained the same objective on (TrainResult.longer).
TRAINED_ON = ", trained on"


def picked_objective(label: str) -> str:
    """The objective picked for a run, from its label: without what its fallback added (" → Sinkhorn divergence")."""
    return label.split(" → ")[0].removesuffix(TRAINED_ON)


def evaluate_run(problem: Problem, reference: Reference, model: TransportMap, result: TrainResult | None,
                 network: str, settings: dict[str, Any], origin: str = "") -> Run:
    """Map the reference's samples and arrow starts and compute every metric of the map (``result`` is
    None for a map loaded from ``origin``, a file: no training time or steps then, and the verdict is taken here,
    on this problem: ``file_verdict``)."""
    source, target = problem.source.to("cpu"), problem.target.to("cpu")
    metrics: dict[str, Any] = evaluate_map(model, source, target, reference.points, reference.mapped)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        mapped = to_numpy(model(torch.as_tensor(reference.points, dtype=dtype)))
        grid_mapped = (to_numpy(model(torch.as_tensor(reference.grid, dtype=dtype)))
                       if len(reference.grid) else reference.grid)
    if result is not None and result.fallback:
        # the map shown is the fallback's: the run's label names both objectives, or says that it trained on (a review
        # read "Monge–Ampère loss (Adam) → Monge–Ampère loss" as a switch to the loss it had)
        then = TRAINED_ON if result.longer else f" → {result.fallback}"
        settings = {**settings, "objective_label": f"{settings.get('objective_label', '')}{then}"}
    if result is not None:
        metrics["training_time"] = result.elapsed
        # every step trained, the progress bar's count: the first run's and those after it (a run back, the
        # Sinkhorn phase), not only the kept run's (TrainResult.steps)
        metrics["steps"] = float(result.history["step"][-1] if result.history.get("step") else result.steps)
        if not result.fallback and result.steps < metrics["steps"]:
            # a later phase (the Sinkhorn continuation) trained and its map was not kept: the label says which was
            metrics["kept_steps"] = float(result.steps)
    verdict = result.verdict if result is not None else file_verdict(problem, model, settings)
    if verdict is not None:
        metrics["verdict"] = "ok" if verdict.ok else "flagged"
        excess = verdict.transport_excess
        metrics["error_bound"] = math.nan if excess is None else math.sqrt(max(excess, 0.0))
        metrics["distance_ratio"] = verdict.distance_ratio
        metrics["kl_estimate"] = math.nan if verdict.kl is None else verdict.kl
        metrics["uncovered"] = math.nan if verdict.uncovered is None else 100.0 * verdict.uncovered
        metrics["misplaced"] = math.nan if verdict.misplaced is None else 100.0 * verdict.misplaced
    return Run(network=network, model=model, result=result, signature=problem.signature, settings=settings,
               mapped=mapped, grid_mapped=grid_mapped, metrics=metrics, origin=origin)


def file_verdict(problem: Problem, model: TransportMap, settings: dict[str, Any]) -> Verdict:
    """The verdict on a map read from a file (a saved map, a gallery demo), as a training judges its map, on the
    page's problem, whose densities are those a training on it is judged against; with the seed it was trained
    with, so that a run and its own file loaded back get the same numbers. (A review loaded a map of another
    problem, 498 % off, and nothing said so.)"""
    training = settings.get("training")
    seed = training.get("seed", 0) if isinstance(training, dict) else 0
    return assess_map(model, problem.source.to("cpu"), problem.target.to("cpu"), seed=int(seed))


def evaluate_training(model: TransportMap, result: TrainResult, *, problem: Problem, reference: Reference | None,
                      network: str, settings: dict[str, Any]) -> tuple[Run, Reference]:
    """A training job's finish hook (run where the training ran): the problem's ground truth, unless
    ``reference`` already holds it, and the trained map's run."""
    reference = reference or compute_reference(problem)
    return evaluate_run(problem, reference, model, result, network, settings), reference


def metrics_table(runs: Sequence[Run], details: bool = False, metrics: Sequence[str] = tuple(METRIC_COLUMNS)
                  ) -> pd.DataFrame:
    """One row per run, the columns of ``METRIC_COLUMNS`` named in ``metrics`` (all by default); with ``details``,
    also each run's settings and the problem it was trained on, as JSON (the CSV download)."""
    labels = {key: METRIC_COLUMNS[key] for key in metrics}
    rows = []
    for run in runs:
        row = {"map": run.label, **{label: run.metrics.get(key, math.nan) for key, label in labels.items()}}
        if details:
            settings = {k: v for k, v in run.settings.items() if k != "problem"}
            row["settings"] = json.dumps(settings, sort_keys=True, default=str)
            trained_on = run.settings.get("problem")
            # the pictures say what it was trained on; the strokes are long
            row["trained on"] = json.dumps(without_strokes(trained_on) if isinstance(trained_on, dict) else trained_on,
                                           default=str)
        rows.append(row)
    columns = ["map", *labels.values(), *(("settings", "trained on") if details else ())]
    table = pd.DataFrame(rows, columns=columns)
    # whole numbers, a loaded map's missing ones left empty: the CSV wrote 200.0 (a review)
    return table.astype({"steps": "Int64"}) if len(table) and "steps" in table else table


def density_morph_of(reference: Reference, run: Run) -> DensityMorph:
    """The density of the run's interpolant x_t at ``PICTURE_FRAMES`` times, on a grid over the source, its image and
    the target (the point animation's box); the last frame is T#p. Exact at the cell centres, unless the source, the
    target or a frame is narrower than the cells (a thin Gaussian drew as dashes): then histograms of carried points
    (``morph.samples`` > 0)."""
    grid = Grid(square_bounds(reference.points, run.mapped, reference.target_samples), PICTURE_RESOLUTION)
    return morph_picture(run.model.cpu(), reference.source, grid, PICTURE_FRAMES,
                         generator=torch.Generator().manual_seed(run.number), target=reference.target)


def residual_of(reference: Reference, run: Run) -> tuple[np.ndarray, Grid]:
    """The Monge–Ampère residual of the run on a grid over the source samples, and that grid."""
    grid = Grid(square_bounds(reference.points), PICTURE_RESOLUTION)
    return monge_ampere_field(run.model.cpu(), reference.source, reference.target, grid), grid


def morph_back(reference: Reference, run: Run) -> tuple[np.ndarray, np.ndarray]:
    """T^-1 at the target samples ``(n, 2)`` and which of them converged ``(n,)``: each solve starts
    from the source sample whose image is nearest, so Newton starts close."""
    model = run.model.cpu()
    dtype, _ = model.dtype_and_device()
    y = torch.as_tensor(reference.target_samples, dtype=dtype)
    nearest = torch.cdist(y, torch.as_tensor(run.mapped, dtype=dtype)).argmin(dim=1)
    solution = model.solve_inverse(y, torch.as_tensor(reference.points, dtype=dtype)[nearest])
    return to_numpy(solution.x), solution.converged.numpy()


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


#: The narrowest component a mixture may have: a fraction of its extent, and an absolute floor. Far
#: narrower ones are point masses in all but name, whose density no network matches (a std of 1e-9
#: "trained" to MSE 1.7-5.7).
MIN_RELATIVE_STD, MIN_STD = 1e-3, 1e-4


#: How far from the origin a component's mean may lie, in its own narrower standard deviation. Samples and densities
#: are float32 (7 significant digits): 1e6 standard deviations out a point is rounded to 6 % of one, and the 2 -> 3
#: preset moved by 1e6 (2e6 of its standard deviations) still trained right (L2-UVP 0.8-0.9 %); moved by 1e7 its points
#: were rounded to a fifth of one and the maps were 38-40 % off (flagged). A review typed such means.
MAX_OFFSET_IN_STDS = 1e6


def _check_widths(rows: list[dict[str, float]], side: str) -> None:
    means = np.array([[r["mean_x"], r["mean_y"]] for r in rows])
    stds = np.array([[r["std_x"], r["std_y"]] for r in rows])
    spread = float(np.ptp(means, axis=0).max()) if len(rows) > 1 else 0.0
    extent = max(float(stds.max()), spread)
    floor = max(MIN_RELATIVE_STD * extent, MIN_STD)
    smallest = float(stds.min())
    if smallest < floor:
        i, j = np.unravel_index(stds.argmin(), stds.shape)
        # What makes an ordinary std a point mass is named: means far apart (0.5 beside means 1e6 apart) or a wide
        # std (0.5 beside a typed 1e6, the likelier slip), so that fixing the narrow cells one by one, which a review
        # did as the message said, each fix moving the message on to the next, is not the only way offered.
        def cell(k: int, m: int) -> str:
            owner = "its" if k == i else f"row {k + 1}'s"
            return f"{owner} std {'xy'[m]}"
        k, m = np.unravel_index(stds.argmax(), stds.shape)
        if spread > float(stds.max()):
            scale = f"beside means up to {spread:.3g} apart"
        elif floor > MIN_STD:
            scale = f"beside {cell(k, m)} of {extent:.3g}"
        else:
            scale = f"(the mixture spans {extent:.3g})"
        narrow = int((stds < floor).sum())
        remedy = f"Use at least {floor:.3g}" + (f" in each of the {narrow} cells that narrow" if narrow > 1 else "")
        if smallest >= MIN_STD:
            # the other way, whole: everything wider than this std allows, and the means' spread
            limit = smallest / MIN_RELATIVE_STD
            wide = [cell(int(a), int(b)) for a, b in zip(*np.nonzero(stds > limit))]
            ways = ([f"make {', '.join(wide[:-1]) + ' and ' if len(wide) > 1 else ''}{wide[-1]} at most {limit:.3g}"]
                    if wide else [])
            if spread > limit:
                ways.append(f"bring the means within {limit:.3g} of each other")
            remedy += ", or " + " and ".join(ways) if ways else ""
        raise ValueError(f"{side.capitalize()} row {i + 1}: std {'xy'[j]} is {smallest:.3g}, almost a point mass "
                         f"{scale}; no network can match its density. {remedy}.")
    offsets = np.abs(means).max(axis=1) / stds.min(axis=1)
    if float(offsets.max()) > MAX_OFFSET_IN_STDS:
        i = int(offsets.argmax())
        raise ValueError(f"{side.capitalize()} row {i + 1}: the mean ({means[i, 0]:.6g}, {means[i, 1]:.6g}) lies "
                         f"{offsets[i]:.3g} standard deviations ({stds[i].min():.3g}) from the origin; the app "
                         f"computes with 7 significant digits, which would round the component's shape away. "
                         f"Subtract the same offset from every mean of both tables: moving both sides moves the "
                         f"optimal map with them and changes nothing else.")


def _blank(value: Any) -> bool:
    """An empty table cell: None, NaN or whitespace."""
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float)
                                                                                and math.isnan(value))


#: A cell that reads two ways: "1,500" is 1.5 with a decimal comma and 1500 with a thousands separator (a review typed
#: "1,000" for a thousand and got 1). "0,125" is not ambiguous: a thousands separator does not follow a leading 0.
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2},\d{3}")


def _cell_number(raw: Any) -> float:
    """A table cell's number, NaN where it has none; "-2,5" (a decimal comma, no point) reads as -2.5 (a review
    typed it, as much of Europe writes it)."""
    if isinstance(raw, str) and raw.count(",") == 1 and "." not in raw:
        raw = raw.replace(",", ".")
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def mixture_from_table(rows: Sequence[dict[str, Any]], side: str) -> tuple[GaussianMixture, str | None]:
    """A mixture from editor rows (cells as numbers or text); weights not summing to 1 are normalised and rows left
    wholly empty are left out, with a note saying so.

    Raises ValueError naming the row for an empty table, a blank or non-numeric cell, or a
    negative weight.
    """
    # A row with every cell empty is one just added and not yet filled in: left out, and said so.
    empty = [i for i, row in enumerate(rows, start=1) if all(_blank(row.get(col)) for col in MIXTURE_COLUMNS)]
    if len(empty) == len(rows):
        raise ValueError(f"The {side} table has no rows: add at least one component.")
    clean = []
    for i, row in enumerate(rows, start=1):
        if i in empty:
            continue
        values = {}
        for col in MIXTURE_COLUMNS:
            raw = row.get(col)
            if isinstance(raw, str) and _THOUSANDS.fullmatch(raw.strip()):
                text = raw.strip()
                raise ValueError(f'{side.capitalize()} row {i}: {MIXTURE_HEADERS[col]} "{text}" could be '
                                 f'{_cell_number(text):g} with a decimal comma or {float(text.replace(",", "")):g} '
                                 f'with a thousands separator; type it with a point, or without the comma.')
            value = _cell_number(raw)
            if not math.isfinite(value):
                typed = f' ("{raw.strip()}")' if isinstance(raw, str) and raw.strip() else ""
                raise ValueError(f"{side.capitalize()} row {i}: {MIXTURE_HEADERS[col]} is empty or not a finite "
                                 f"number{typed}.")
            values[col] = value
        if values["weight"] < 0:
            raise ValueError(f"{side.capitalize()} row {i}: the weight must not be negative "
                             f"(got {values['weight']:g}).")
        for col in ("std_x", "std_y"):
            if values[col] <= 0:
                raise ValueError(f"{side.capitalize()} row {i}: {MIXTURE_HEADERS[col]} is a standard deviation, so it "
                                 f"must be positive (got {values[col]:g}).")
        clean.append(values)
    _check_widths(clean, side)
    largest = max(r["weight"] for r in clean)
    if largest <= 0:
        raise ValueError(f"The {side} weights are all zero: give at least one component a positive weight.")
    # Divided by the largest first: weights near the float limit (1e308 + 1e308) would sum to infinity.
    scaled = sum(r["weight"] / largest for r in clean)
    total = largest * scaled
    notes = []
    if empty:
        rows_named = ", ".join(str(i) for i in empty)
        notes.append(f"{side.capitalize()} row{'s' if len(empty) > 1 else ''} {rows_named} "
                     f"{'are' if len(empty) > 1 else 'is'} empty and left out until filled in.")
    # 1e-5: the tables show a preset's thirds to 6 digits (0.333333), which sum to 0.999999 and need no note
    if not math.isfinite(total) or abs(total - 1.0) > 1e-5:
        notes.append(f"The {side} weights summed to {total:.4g}; they were divided by that so they sum to 1."
                     if math.isfinite(total) else
                     f"The {side} weights sum to more than the largest float; they were rescaled so they sum to 1.")
        clean = [{**r, "weight": r["weight"] / largest / scaled} for r in clean]
    note = " ".join(notes) or None
    try:
        return presets.mixture_from_rows(clean), note
    except ValueError as err:
        raise ValueError(f"{side.capitalize()}: {err}") from err
