"""Paper Fig. 1: the 2-D Gaussian N([1,-1], [[1,.7],[.7,1]]) -> N(0, I), learned by the MLP baseline,
mGradNet-C and mGradNet-M, against the exact map (whitening).

Each model is trained with the authors' settings (Adam 1e-2, batch 1000, 1000 steps) and compared
with whitening on test samples: MSE, L2-UVP, monotonicity, and two counts over pairs of trajectories
x -> T(x):

* order reversals: pairs with <x_i - x_j, T(x_i) - T(x_j)> < 0. Zero for every monotone map (the
  definition of monotone), so zero for mGradNets and for whitening by construction.
* crossing segments: pairs whose straight paths [x_i, T(x_i)] and [x_j, T(x_j)] intersect in the
  plane. This is what a picture of the paths shows, but it is not zero for a monotone map: two
  particles may pass the same point at different times. The exact OT map (whitening) itself has
  crossing pairs here, so the baseline is judged against whitening's share, not against zero.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..densities import Gaussian
from ..ground_truth import gaussian_map
from ..metrics import evaluate_map
from ..networks import seeded_map
from ..presets import MODEL_PRESETS, PAPER_GAUSSIAN, train_preset
from ..training import train
from .common import (ExperimentResult, ProgressFn, ProgressTracker, machine_description, output_dir,
                     write_csv, write_html, write_json)
from .figures import snapshot_grid_png
from .paper import PAPER_GAUSSIAN_2D

__all__ = ["GAUSSIAN2D_MODELS", "SNAPSHOT_TIMES", "segment_crossings", "crossing_share", "order_reversal_share",
           "paper_gaussian_pair", "run_gaussian2d", "add_arguments", "run"]

#: The paper's Fig. 1 models: label -> (registry name, constructor arguments, Jacobian method).
GAUSSIAN2D_MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "MLP baseline": ("MLP baseline", {"width": 128, "depth": 3}, "autograd"),
    "mGradNet-C": ("mGradNet-C", {"width": 32, "depth": 4, "activation": "tanh"}, "closed-form"),
    "mGradNet-M": (MODEL_PRESETS["gaussian-paper"][0], dict(MODEL_PRESETS["gaussian-paper"][1]), "closed-form"),
}

#: Times of the displacement-interpolation snapshots x_t = (1 - t) x + t T(x).
SNAPSHOT_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)

WHITENING = "whitening (exact)"


def paper_gaussian_pair() -> tuple[Gaussian, Gaussian]:
    """The paper's source N([1,-1], [[1,.7],[.7,1]]) and target N(0, I), in float64."""
    p = PAPER_GAUSSIAN
    return (Gaussian(np.asarray(p["source"]["mean"], float), np.asarray(p["source"]["cov"], float)),
            Gaussian(np.asarray(p["target"]["mean"], float), np.asarray(p["target"]["cov"], float)))


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Twice the signed area of triangles (a, b, c), row by row: > 0 counter-clockwise."""
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def segment_crossings(starts: np.ndarray, ends: np.ndarray, chunk: int = 200_000) -> tuple[int, int]:
    """Count pairs i < j of segments [starts_i, ends_i] that cross: ``(crossing pairs, all pairs)``.

    ``starts, ends: (n, 2)``. Two segments cross when each one's endpoints lie strictly on opposite
    sides of the other's line (a proper intersection); segments that only touch at an endpoint or
    overlap on a common line are not counted. Vectorised over pairs in chunks of ``chunk``.
    """
    p = np.asarray(starts, dtype=np.float64)
    q = np.asarray(ends, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape != q.shape:
        raise ValueError(f"segment starts and ends must both be (n, 2) arrays; got {p.shape} and {q.shape}")
    i, j = np.triu_indices(len(p), k=1)
    crossing = 0
    for s in range(0, len(i), chunk):
        a, b = i[s:s + chunk], j[s:s + chunk]
        d1 = _orientation(p[a], q[a], p[b])
        d2 = _orientation(p[a], q[a], q[b])
        d3 = _orientation(p[b], q[b], p[a])
        d4 = _orientation(p[b], q[b], q[a])
        crossing += int(np.count_nonzero((d1 * d2 < 0) & (d3 * d4 < 0)))
    return crossing, len(i)


def crossing_share(starts: np.ndarray, ends: np.ndarray) -> float:
    """Share of segment pairs that cross (``segment_crossings`` divided by the number of pairs)."""
    crossing, pairs = segment_crossings(starts, ends)
    return crossing / pairs if pairs else 0.0


def order_reversal_share(x: np.ndarray, mapped: np.ndarray, rtol: float = 1e-6) -> float:
    """Share of pairs i < j with <x_i - x_j, T(x_i) - T(x_j)> < 0: zero for a monotone map.

    ``x, mapped: (n, d)``. Inner products above ``-rtol |x_i - x_j| |T(x_i) - T(x_j)|`` count as
    non-negative (float32 networks round at about 1e-7).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(mapped, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"points and mapped points must both be (n, d); got {x.shape} and {y.shape}")
    i, j = np.triu_indices(len(x), k=1)
    if not len(i):
        return 0.0
    dx, dy = x[i] - x[j], y[i] - y[j]
    inner = (dx * dy).sum(axis=1)
    scale = np.linalg.norm(dx, axis=1) * np.linalg.norm(dy, axis=1)
    return float(np.count_nonzero(inner < -rtol * scale)) / len(i)


def run_gaussian2d(out: str | Path | None = None, steps: int | None = None, seed: int = 0, n_test: int = 1000,
                   n_paths: int = 300, models: Sequence[str] = tuple(GAUSSIAN2D_MODELS),
                   on_progress: ProgressFn | None = None, write_files: bool = True, seeds: int = 1) -> ExperimentResult:
    """Train the Fig. 1 models and compare them with whitening; write CSV, PNG and HTML to ``out``.

    ``steps`` defaults to the authors' 1000; ``n_test`` test samples give the MSE; the first
    ``n_paths`` of them the pair counts (n_paths (n_paths - 1) / 2 pairs). Run k of ``seeds`` trains
    from weight and batch seed ``seed + k`` and is scored on its own test draw; the summary gives the
    median over runs and their range, the figures show the first run.
    """
    from ..plotting import Panel, animation_figure, position_colours, square_bounds

    unknown = [m for m in models if m not in GAUSSIAN2D_MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(GAUSSIAN2D_MODELS)}")
    if n_test < 2 or n_paths < 2:
        raise ValueError("n_test and n_paths must each be at least 2")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer; got {seeds!r}")
    started = time.perf_counter()
    source, target = paper_gaussian_pair()
    truth_map = gaussian_map(source, target)
    paths = min(n_paths, n_test)
    tracker = ProgressTracker([steps or train_preset("gaussian-paper").steps for _ in range(seeds) for _ in models],
                              on_progress)

    rows: list[dict[str, Any]] = []
    losses: list[dict[str, Any]] = []
    for run in range(seeds):
        run_seed = seed + run
        x_test = source.sample(n_test, torch.Generator().manual_seed(run_seed + 1))
        truth = truth_map(x_test)
        x_np = x_test.numpy()
        overrides: dict[str, Any] = {"seed": run_seed, "device": "cpu"}
        if steps is not None:
            overrides["steps"] = steps
        mapped: dict[str, np.ndarray] = {}
        for k, label in enumerate(models):
            name, kwargs, jacobian = GAUSSIAN2D_MODELS[label]
            config = train_preset("gaussian-paper", **overrides).with_objective(jacobian=jacobian)
            model = seeded_map(name, run_seed, dim=2, **kwargs)
            task = run * len(models) + k
            result = train(model, source, target, config, callback=tracker.callback(task, label))
            tracker.finish(task, label)
            metrics = evaluate_map(model, source, target, x_test, truth)
            with torch.no_grad():
                y = model(x_test.to(torch.float32)).double().numpy()
            mapped[label] = y
            rows.append({
                "model": label, "seed": run_seed, "monotone": bool(model.monotone), "steps": result.steps,
                "stopped": result.stopped, "final_loss": result.final_loss, "train_s": result.elapsed,
                "steps_per_s": result.steps / result.elapsed if result.elapsed > 0 else float("nan"),
                **metrics,
                "crossing_share": crossing_share(x_np[:paths], y[:paths]),
                "order_reversal_share": order_reversal_share(x_np[:paths], y[:paths]),
                "parameters": sum(p.numel() for p in model.parameters()),
            })
            losses += [{"model": label, "seed": run_seed, "step": s, "loss": v}
                       for s, v in zip(result.history["step"], result.history["loss"])]
        exact = truth.numpy()
        rows.append({"model": WHITENING, "seed": run_seed, "monotone": True, "steps": 0, "stopped": "exact", "mse": 0.0,
                     "crossing_share": crossing_share(x_np[:paths], exact[:paths]),
                     "order_reversal_share": order_reversal_share(x_np[:paths], exact[:paths])})
        if run == 0:
            first_x, first_mapped = x_np, {**mapped, WHITENING: exact}

    labels = list(models) + [WHITENING]
    bounds = square_bounds(first_x, *first_mapped.values())
    # Rounded to 3 decimals and 600 points: the HTML stays a few hundred kB.
    figures = {"animation": animation_figure(first_x.round(3),
                                             [Panel(title=m, mapped=first_mapped[m].round(3)) for m in labels],
                                             frames=16, trajectories=True, max_points=600, max_paths=150,
                                             bounds=bounds)}

    def median(key: str) -> dict[str, float]:
        return {m: float(np.median(v)) for m in labels
                if (v := [r[key] for r in rows if r["model"] == m and key in r])}

    summary = {
        "steps": {m: steps or train_preset("gaussian-paper").steps for m in models}, "seed": seed, "seeds": seeds,
        "n_test": n_test, "pairs": paths * (paths - 1) // 2,
        "mse": median("mse"),
        "mse_range": {m: [min(r["mse"] for r in rows if r["model"] == m), max(r["mse"] for r in rows if r["model"] == m)]
                      for m in labels},
        "crossing_share": median("crossing_share"), "order_reversal_share": median("order_reversal_share"),
        "train_s": median("train_s"), "final_loss": median("final_loss"),
        "stopped": {m: [r["stopped"] for r in rows if r["model"] == m] for m in labels},
        "paper": PAPER_GAUSSIAN_2D,
        "machine": machine_description(),
    }
    files: list[Path] = []
    if write_files:
        folder = output_dir(out, "gaussian2d")
        files.append(write_csv(folder / "gaussian2d.csv", rows))
        files.append(write_csv(folder / "loss.csv", losses))
        colours = position_colours(first_x)
        frames = [[(1 - t) * first_x + t * first_mapped[m] for t in SNAPSHOT_TIMES] for m in labels]
        first_rows = {r["model"]: r for r in rows if r["seed"] == seed}
        titles = [m + ("" if m == WHITENING else f"\nseed {seed}: MSE {first_rows[m]['mse']:.2e}") for m in labels]
        files.append(snapshot_grid_png(folder / "snapshots.png", frames, colours, titles,
                                       [f"t = {t:g}" for t in SNAPSHOT_TIMES], bounds))
        files.append(write_html(folder / "animation.html", figures["animation"]))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("gaussian2d", rows, summary, files, time.perf_counter() - started, figures)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gaussian2d`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default: the authors' 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and test samples")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs from seeds seed, seed + 1, ...; each scored on its own test draw (medians reported)")
    parser.add_argument("--n-test", type=int, default=1000, help="test samples for the MSE")
    parser.add_argument("--n-paths", type=int, default=300, help="trajectories for the crossing counts")


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``gaussian2d`` subcommand from parsed arguments."""
    return run_gaussian2d(args.out, steps=args.steps, seed=args.seed, n_test=args.n_test, n_paths=args.n_paths,
                          on_progress=on_progress, seeds=args.seeds)
