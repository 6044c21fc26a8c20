"""Paper Fig. 2: Gaussian -> N(0, I) in d = 2 ... 128 dimensions, against the exact map (whitening).

The source of dimension d has mean m ~ N(0, I) and covariance S ~ Wishart(d + 1, I), drawn from a
generator seeded with (seed, d), so each d's problem does not depend on which other d are run.
Two settings run in the same sweep, on the same problems, initial weights and batches:

* authors: mGradNet-C 4 x 32 (tanh) and mGradNet-M 4 modules x 32, width 32 at every d, Adam at a
  constant 1e-2, gradients clipped at 2. Where the float32 Cholesky of a nearly singular Jacobian
  fails, log |det| comes from LU, as the authors' slogdet does. The C network's Jacobian
  W^T diag(delta) W has rank <= 32, so for d > 32 its |det| is rounding noise (as in their code);
  M's rank is <= 4 x 31 = 124, singular at d = 128.
* ours: the same networks plus the strict-convexity term (eps I + V^T V) x (docs/method.md §2), and the
  same learning rate decayed to zero along a cosine. The Jacobian is positive definite at every d,
  so log det is always finite; the linear term holds the affine part of the map (whitening is
  affine), leaving the network the curvature; the decay removes the noise of the last steps.

Both use batch 1000 and 1000 steps (``steps`` to shrink). Each (d, setting, model) trains from
``seeds`` initial weights; the MSE against whitening on ``n_test`` source samples (1000 as in the
paper) is reported per seed and as the median over seeds.
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
from ..metrics import map_mse
from ..networks import seeded_map
from ..presets import train_preset
from ..training import train
from .common import (ExperimentResult, ProgressFn, ProgressTracker, finite_or_none, machine_description,
                     output_dir, run_tasks, write_csv, write_html, write_json)
from .figures import line_chart_png
from .paper import PAPER_HIGHDIM

__all__ = ["HIGHDIM_DIMS", "HIGHDIM_SETTINGS", "HIGHDIM_MODELS", "highdim_problem", "highdim_model",
           "run_highdim", "grouped_by_dim", "add_arguments", "run"]

HIGHDIM_DIMS = (2, 4, 8, 16, 32, 64, 128)

#: The two networks of the sweep: label -> (registry name, constructor arguments).
HIGHDIM_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "mGradNet-C": ("mGradNet-C", {"width": 32, "depth": 4, "activation": "tanh"}),
    "mGradNet-M": ("mGradNet-M", {"width": 32, "modules": 4}),
}

#: Each setting: extra constructor arguments of the networks, and changes to the authors' training
#: settings (preset "gaussian-paper": Adam 1e-2, batch 1000, 1000 steps).
HIGHDIM_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "authors": {"network": {}, "training": {}},
    "ours": {"network": {"strict": True}, "training": {"lr_schedule": "cosine"}},
}


def highdim_problem(dim: int, seed: int = 1234) -> tuple[Gaussian, Gaussian]:
    """Source N(m, S), m ~ N(0, I), S ~ Wishart(d + 1, I), and target N(0, I), in float64."""
    from scipy import stats

    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dimension must be a positive integer; got {dim!r}")
    rng = np.random.default_rng([seed, int(dim)])
    mean = rng.standard_normal(dim)
    cov = np.atleast_2d(stats.wishart(df=dim + 1, scale=np.eye(dim)).rvs(random_state=rng))
    cov = 0.5 * (cov + cov.T)
    return Gaussian(mean, cov), Gaussian(np.zeros(dim), np.eye(dim))


def highdim_model(model: str, setting: str, dim: int, seed: int = 0):
    """The network ``model`` ("mGradNet-C" or "mGradNet-M") of ``setting`` ("authors" or "ours")."""
    if model not in HIGHDIM_MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(HIGHDIM_MODELS)}")
    if setting not in HIGHDIM_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {', '.join(HIGHDIM_SETTINGS)}")
    name, kwargs = HIGHDIM_MODELS[model]
    return seeded_map(name, seed, dim=int(dim), **kwargs, **HIGHDIM_SETTINGS[setting]["network"])


def run_highdim(out: str | Path | None = None, dims: Sequence[int] = HIGHDIM_DIMS, steps: int | Sequence[int] = 1000,
                seed: int = 1234, model_seed: int = 0, n_test: int = 1000,
                settings: Sequence[str] = tuple(HIGHDIM_SETTINGS), models: Sequence[str] = tuple(HIGHDIM_MODELS),
                on_progress: ProgressFn | None = None, write_files: bool = True, jobs: int | None = 1,
                seeds: int | Sequence[int] = 1, backend: str = "local") -> ExperimentResult:
    """Train every (d, setting, model, seed) and measure MSE against whitening; write CSV, PNG and HTML.

    ``steps`` and ``seeds`` (how many initial weights to train from): one number for every d, or one
    per entry of ``dims``. ``seed`` draws the problems (paper: 1234); run k of a (d, setting, model)
    uses weight and batch seed ``model_seed + k``, the same for both settings. ``jobs`` runs that
    many trainings at once, in worker processes or on Ray (``backend``, see ``run_tasks``).
    """
    dims = [int(d) for d in dims]
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"dimensions must be positive integers; got {dims}")
    steps_of = dict(zip(dims, _per_dim(steps, dims, "number of steps")))
    seeds_of = dict(zip(dims, _per_dim(seeds, dims, "number of seeds")))
    if any(n < 1 for n in [*steps_of.values(), *seeds_of.values()]):
        raise ValueError("steps and seeds must be at least 1")
    for name, chosen, allowed in (("setting", settings, HIGHDIM_SETTINGS), ("model", models, HIGHDIM_MODELS)):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise ValueError(f"unknown {name} {bad[0] if bad else '(none)'!r}; choose from {', '.join(allowed)}")
    started = time.perf_counter()
    runs = [(d, s, m, steps_of[d], seed, model_seed + k, n_test)
            for d in dims for s in settings for m in models for k in range(seeds_of[d])]
    labels = [f"{m}, d = {d}, {s}, seed {k}" for d, s, m, _, _, k, _ in runs]
    tracker = ProgressTracker([r[3] for r in runs], on_progress)
    rows = run_tasks(_highdim_run, runs, labels, tracker, jobs, cost=[_cost(*r[:4]) for r in runs], backend=backend)
    table = _medians(rows, dims, settings, models)
    figures = {"mse": _mse_figure(rows, table, dims, settings, models)}
    summary: dict[str, Any] = {
        "dims": dims, "steps": {str(d): steps_of[d] for d in dims}, "seeds": {str(d): seeds_of[d] for d in dims},
        "seed": seed, "model_seed": model_seed, "n_test": n_test, "jobs": jobs, "backend": backend,
        "settings": {s: HIGHDIM_SETTINGS[s] for s in settings},
        "mse": {}, "completed": {}, "train_s": {}, "paper": PAPER_HIGHDIM, "machine": machine_description(),
    }
    for t in table:
        key = f"{t['model']} {t['setting']}"
        summary["mse"].setdefault(key, {})[str(t["dim"])] = t["median_mse"]
        summary["completed"].setdefault(key, {})[str(t["dim"])] = f"{t['completed']}/{t['runs']}"
        summary["train_s"].setdefault(key, {})[str(t["dim"])] = t["median_train_s"]
    summary["ours_at_or_below_authors"] = _ours_vs_authors(table)
    files: list[Path] = []
    if write_files:
        folder = output_dir(out, "highdim")
        files.append(write_csv(folder / "highdim.csv", rows))
        files.append(write_csv(folder / "medians.csv", table))
        series, dashed = [], []
        for m in models:
            for s in settings:
                series.append((f"{m} ({s})", [_lookup(table, d, s, m) for d in dims]))
                dashed.append(s == "authors")
        files.append(line_chart_png(folder / "mse.png", dims, series,
                                    _chart_title(steps_of, seeds_of, n_test),
                                    "dimension d", "MSE", dashed=dashed))
        files.append(write_html(folder / "mse.html", figures["mse"]))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("highdim", rows, summary, files, time.perf_counter() - started, figures)


def _per_dim(value: int | Sequence[int], dims: list[int], what: str) -> list[int]:
    """One number for every d, or one per d."""
    if isinstance(value, (int, np.integer)):
        return [int(value)] * len(dims)
    values = [int(v) for v in value]
    if len(values) == 1:
        return values * len(dims)
    if len(values) != len(dims):
        raise ValueError(f"give one {what}, or one per dimension ({len(dims)}); got {len(values)}")
    return values


def _cost(d: int, setting: str, model: str, steps: int) -> float:
    """A guess at a run's cost: a step costs about d^3 (the Cholesky factorisations of the log det)."""
    return float(d) ** 3 * steps


def _highdim_run(task: tuple, callback) -> dict[str, Any]:
    """Train one (d, setting, model, seed) of the sweep and measure it; a table row. Module level: workers run it."""
    d, setting, model_name, steps, seed, model_seed, n_test = task
    source, target = highdim_problem(d, seed)
    x = source.sample(n_test, torch.Generator().manual_seed(seed + d))
    truth = gaussian_map(source, target)(x)
    config = train_preset("gaussian-paper", steps=steps, seed=model_seed, device="cpu",
                          **HIGHDIM_SETTINGS[setting]["training"])
    model = highdim_model(model_name, setting, d, model_seed)
    result = train(model, source, target, config, callback=callback)
    with torch.no_grad():
        pred = model(x.to(torch.float32))
    finite = bool(torch.isfinite(pred).all())
    # A run that diverged at its first report keeps its untrained weights: no MSE to speak of.
    mse = map_mse(pred, truth) if finite and result.steps > 0 else float("nan")
    return {
        "dim": d, "setting": setting, "model": model_name, "seed": model_seed, "width": model.width,
        "strict": model.strict, "lr_schedule": config.lr_schedule, "max_rank": _rank_bound(model_name, d),
        "stopped": result.stopped, "steps": result.steps, "planned_steps": config.steps, "mse": mse,
        "final_loss": result.final_loss if result.steps else float("nan"),
        "train_s": result.elapsed, "s_per_step": result.elapsed / max(result.steps, 1),
        "message": result.message,
    }


def _medians(rows: list[dict[str, Any]], dims: list[int], settings: Sequence[str],
             models: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (d, setting, model): median MSE over the seeds whose run completed with a finite map."""
    table = []
    for d in dims:
        for s in settings:
            for m in models:
                runs = [r for r in rows if (r["dim"], r["setting"], r["model"]) == (d, s, m)]
                good = [r for r in runs if r["stopped"] == "completed" and np.isfinite(r["mse"])]
                table.append({
                    "dim": d, "setting": s, "model": m, "runs": len(runs), "completed": len(good),
                    "median_mse": float(np.median([r["mse"] for r in good])) if good else None,
                    "min_mse": min(r["mse"] for r in good) if good else None,
                    "max_mse": max(r["mse"] for r in good) if good else None,
                    "steps": runs[0]["planned_steps"],
                    "median_train_s": float(np.median([r["train_s"] for r in runs])),
                    "stopped": ", ".join(sorted({r["stopped"] for r in runs})),
                })
    return table


def _chart_title(steps_of: dict[int, int], seeds_of: dict[int, int], n_test: int) -> str:
    return (f"MSE against whitening (median over seeds); {grouped_by_dim(steps_of, 'steps')}; "
            f"{grouped_by_dim(seeds_of, 'seeds')}; {n_test} test samples")


def grouped_by_dim(value_of: dict[Any, int], what: str) -> str:
    """A per-dimension setting as text: "1000 steps", or "seeds: 3 (d = 2-64), 1 (d = 128)", grouping
    runs of consecutive dimensions with the same value."""
    if not value_of:
        return f"{what}: not recorded"
    groups: list[tuple[int, list[int]]] = []
    for d, v in value_of.items():
        if groups and groups[-1][0] == v:
            groups[-1][1].append(d)
        else:
            groups.append((v, [d]))
    if len(groups) == 1:
        return f"{groups[0][0]} {what}"
    return f"{what}: " + ", ".join(f"{v} (d = {ds[0]}" + (f"-{ds[-1]})" if len(ds) > 1 else ")") for v, ds in groups)


def _rank_bound(model: str, dim: int) -> int:
    """Largest rank the Jacobian of the sweep's network ``model`` can reach (the strict term, where a
    setting adds it, adds full rank)."""
    kwargs = HIGHDIM_MODELS[model][1]
    if "modules" in kwargs:
        return min(dim, kwargs["modules"] * (kwargs["width"] - 1))
    return min(dim, kwargs["width"])


def _lookup(table: list[dict[str, Any]], d: int, setting: str, model: str) -> float | None:
    for t in table:
        if (t["dim"], t["setting"], t["model"]) == (d, setting, model):
            return finite_or_none(t["median_mse"])
    return None


def _ours_vs_authors(table: list[dict[str, Any]]) -> dict[str, dict[str, bool | None]]:
    """Per model and d: is our median MSE at or below the authors' (True also where theirs has no number)?"""
    verdict: dict[str, dict[str, bool | None]] = {}
    for t in table:
        if t["setting"] != "ours":
            continue
        ours = finite_or_none(t["median_mse"])
        theirs = _lookup(table, t["dim"], "authors", t["model"])
        verdict.setdefault(t["model"], {})[str(t["dim"])] = (
            None if ours is None else (True if theirs is None else ours <= theirs))
    return verdict


def _mse_figure(rows: list[dict[str, Any]], table: list[dict[str, Any]], dims: list[int], settings: Sequence[str],
                models: Sequence[str]):
    """Median MSE per d as lines, every seed's MSE as faint points."""
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for k, (m, s) in enumerate((m, s) for m in models for s in settings):
        color = palette[k % len(palette)]
        info = [next(t for t in table if (t["dim"], t["setting"], t["model"]) == (d, s, m)) for d in dims]
        fig.add_trace(go.Scatter(
            x=dims, y=[finite_or_none(t["median_mse"]) for t in info], mode="lines+markers", name=f"{m} ({s})",
            legendgroup=f"{m} ({s})", line={"dash": "dash" if s == "authors" else "solid", "color": color},
            customdata=[[t["completed"], t["runs"], t["steps"], t["median_train_s"]] for t in info],
            hovertemplate="d = %{x}<br>median MSE %{y:.3e}<br>%{customdata[0]} of %{customdata[1]} seeds completed"
                          " %{customdata[2]} steps<br>%{customdata[3]:.1f} s per run<extra></extra>"))
        seeds = [r for r in rows if (r["setting"], r["model"]) == (s, m) and np.isfinite(r["mse"])]
        fig.add_trace(go.Scatter(
            x=[r["dim"] for r in seeds], y=[r["mse"] for r in seeds], mode="markers", legendgroup=f"{m} ({s})",
            showlegend=False, marker={"color": color, "opacity": 0.35, "size": 6},
            customdata=[r["seed"] for r in seeds],
            hovertemplate="d = %{x}<br>seed %{customdata}: MSE %{y:.3e}<extra></extra>"))
    fig.update_layout(title="MSE against whitening, median over seeds (gaps: diverged, no finite map)",
                      xaxis={"title": "dimension d", "type": "log", "tickvals": dims},
                      yaxis={"title": "MSE", "type": "log", "exponentformat": "e"},
                      template="plotly_white", height=450)
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``highdim`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--dims", type=int, nargs="+", default=list(HIGHDIM_DIMS), help="dimensions")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000],
                        help="training steps: one number, or one per dimension (default: the authors' 1000)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random problems (paper: 1234)")
    parser.add_argument("--model-seed", type=int, default=0, help="seed of the weights and batches of the first run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1],
                        help="initial weights to train from per network and d (median reported): one number, or "
                             "one per dimension")
    parser.add_argument("--n-test", type=int, default=1000, help="test samples for the MSE")
    parser.add_argument("--settings", nargs="+", default=["authors", "ours"], choices=["authors", "ours"])
    parser.add_argument("--models", nargs="+", default=["mGradNet-C", "mGradNet-M"],
                        choices=["mGradNet-C", "mGradNet-M"])


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``highdim`` subcommand from parsed arguments."""
    return run_highdim(args.out, dims=args.dims, steps=args.steps, seed=args.seed, model_seed=args.model_seed,
                       n_test=args.n_test, settings=args.settings, on_progress=on_progress, jobs=args.jobs,
                       seeds=args.seeds, models=args.models, backend=args.backend)
