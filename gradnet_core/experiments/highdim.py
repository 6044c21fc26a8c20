"""Paper Fig. 2: Gaussian -> N(0, I) in d = 2 ... 128 dimensions, against the exact map (whitening).

The source of dimension d has mean m ~ N(0, I) and covariance S ~ Wishart(d + 1, I), drawn from a
generator seeded with (seed, d), so each d's problem does not depend on which other d are run.
Two settings run in the same sweep:

* authors: mGradNet-C 4 x 32 (tanh) and mGradNet-M 4 modules x 32, width 32 at every d. The
  C network's Jacobian W^T diag(delta) W has rank <= 32, so for d > 32 its log det is -inf and
  training diverges at once; M's rank is <= 4 x 31 = 124, so it is singular at d = 128.
* ours: the same networks plus the strict-convexity term (eps I + V^T V) x (reference §2). The
  Jacobian is then positive definite for every d, and the linear term holds the affine part of the
  map (whitening is affine), leaving the network the curvature.

Both use Adam 1e-2, batch 1000 and 1000 steps (``steps`` to shrink). MSE against whitening on
``n_test`` source samples (1000 as in the paper).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..densities import Gaussian
from ..ground_truth import gaussian_map
from ..jobs import seeded_map
from ..metrics import map_mse
from ..presets import train_preset
from ..training import train
from .common import (ExperimentResult, ProgressFn, ProgressTracker, finite_or_none, machine_description,
                     output_dir, run_tasks, write_csv, write_html, write_json)
from .figures import line_chart_png
from .paper import PAPER_HIGHDIM

__all__ = ["HIGHDIM_DIMS", "HIGHDIM_SETTINGS", "HIGHDIM_MODELS", "highdim_problem", "highdim_model",
           "run_highdim"]

HIGHDIM_DIMS = (2, 4, 8, 16, 32, 64, 128)

#: The two networks of the sweep: label -> (registry name, constructor arguments).
HIGHDIM_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "mGradNet-C": ("mGradNet-C", {"width": 32, "depth": 4, "activation": "tanh"}),
    "mGradNet-M": ("mGradNet-M", {"width": 32, "modules": 4}),
}

#: Extra constructor arguments of each setting.
HIGHDIM_SETTINGS: dict[str, dict[str, Any]] = {
    "authors": {},
    "ours": {"strict": True},
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
    return seeded_map(name, seed, dim=int(dim), **kwargs, **HIGHDIM_SETTINGS[setting])


def run_highdim(out: str | Path | None = None, dims: Sequence[int] = HIGHDIM_DIMS, steps: int | Sequence[int] = 1000,
                seed: int = 1234, model_seed: int = 0, n_test: int = 1000,
                settings: Sequence[str] = tuple(HIGHDIM_SETTINGS), models: Sequence[str] = tuple(HIGHDIM_MODELS),
                on_progress: ProgressFn | None = None, write_files: bool = True, jobs: int = 1) -> ExperimentResult:
    """Train every (d, setting, model) and measure MSE against whitening; write CSV, PNG and HTML.

    ``steps``: one number for every d, or one per entry of ``dims``. ``seed`` draws the problems
    (paper: 1234), ``model_seed`` the initial weights and batches. ``jobs`` runs that many trainings
    at once in worker processes.
    """
    dims = [int(d) for d in dims]
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"dimensions must be positive integers; got {dims}")
    steps_list = [int(steps)] * len(dims) if isinstance(steps, (int, np.integer)) else [int(s) for s in steps]
    if len(steps_list) != len(dims):
        raise ValueError(f"give one number of steps, or one per dimension ({len(dims)}); got {len(steps_list)}")
    steps_of = dict(zip(dims, steps_list))
    for name, chosen, allowed in (("setting", settings, HIGHDIM_SETTINGS), ("model", models, HIGHDIM_MODELS)):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise ValueError(f"unknown {name} {bad[0] if bad else '(none)'!r}; choose from {', '.join(allowed)}")
    started = time.perf_counter()
    runs = [(d, s, m, steps_of[d], seed, model_seed, n_test) for d in dims for s in settings for m in models]
    labels = [f"{m}, d = {d}, {s}" for d, s, m, *_ in runs]
    tracker = ProgressTracker([r[3] for r in runs], on_progress)
    # a step costs about d^3 (the Cholesky factorisations of the log det)
    rows = run_tasks(_highdim_run, runs, labels, tracker, jobs, cost=[r[0] ** 3 * r[3] for r in runs])
    figures = {"mse": _mse_figure(rows, dims, settings, models)}
    summary = {
        "dims": dims, "steps": {str(d): steps_of[d] for d in dims}, "seed": seed, "n_test": n_test, "jobs": jobs,
        "mse": {f"{r['model']} {r['setting']}": {} for r in rows},
        "stopped": {f"{r['model']} {r['setting']}": {} for r in rows},
        "train_s": {f"{r['model']} {r['setting']}": {} for r in rows},
        "paper": PAPER_HIGHDIM, "machine": machine_description(),
    }
    for r in rows:
        key = f"{r['model']} {r['setting']}"
        summary["mse"][key][str(r["dim"])] = finite_or_none(r["mse"])
        summary["stopped"][key][str(r["dim"])] = r["stopped"]
        summary["train_s"][key][str(r["dim"])] = r["train_s"]
    summary["ours_at_or_below_authors"] = _ours_vs_authors(rows)
    files: list[Path] = []
    if write_files:
        folder = output_dir(out, "highdim")
        files.append(write_csv(folder / "highdim.csv", rows))
        series, dashed = [], []
        for m in models:
            for s in settings:
                series.append((f"{m} ({s})", [_lookup(rows, d, s, m) for d in dims]))
                dashed.append(s == "authors")
        files.append(line_chart_png(folder / "mse.png", dims, series,
                                    _chart_title(steps_of, n_test),
                                    "dimension d", "MSE", dashed=dashed))
        files.append(write_html(folder / "mse.html", figures["mse"]))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("highdim", rows, summary, files, time.perf_counter() - started, figures)


def _highdim_run(task: tuple, callback) -> dict[str, Any]:
    """Train one (d, setting, model) of the sweep and measure it; a table row. Module level: workers run it."""
    d, setting, model_name, steps, seed, model_seed, n_test = task
    source, target = highdim_problem(d, seed)
    x = source.sample(n_test, torch.Generator().manual_seed(seed + d))
    truth = gaussian_map(source, target)(x)
    config = train_preset("gaussian-paper", steps=steps, seed=model_seed, device="cpu")
    model = highdim_model(model_name, setting, d, model_seed)
    result = train(model, source, target, config, callback=callback)
    with torch.no_grad():
        pred = model(x.to(torch.float32))
    finite = bool(torch.isfinite(pred).all())
    # A run that diverged at its first report keeps its untrained weights: no MSE to speak of.
    mse = map_mse(pred, truth) if finite and result.steps > 0 else float("nan")
    return {
        "dim": d, "setting": setting, "model": model_name, "width": model.width,
        "strict": model.strict, "max_rank": _max_rank(model), "stopped": result.stopped,
        "steps": result.steps, "planned_steps": config.steps, "mse": mse,
        "final_loss": result.final_loss if result.steps else float("nan"),
        "train_s": result.elapsed, "s_per_step": result.elapsed / max(result.steps, 1),
        "message": result.message,
    }


def _chart_title(steps_of: dict[int, int], n_test: int) -> str:
    groups: list[tuple[int, list[int]]] = []          # runs of consecutive dims with equal steps
    for d, s in steps_of.items():
        if groups and groups[-1][0] == s:
            groups[-1][1].append(d)
        else:
            groups.append((s, [d]))
    if len(groups) == 1:
        steps = f"{groups[0][0]} steps"
    else:
        steps = "steps: " + ", ".join(f"{s} (d = {ds[0]}" + (f"-{ds[-1]})" if len(ds) > 1 else ")")
                                      for s, ds in groups)
    return f"MSE against whitening; {steps}; {n_test} test samples"


def _max_rank(model) -> int:
    """Largest rank the network's own Jacobian can reach (the strict term adds full rank)."""
    if hasattr(model, "n_modules"):
        return min(model.dim, model.n_modules * (model.width - 1))
    return min(model.dim, model.width)


def _lookup(rows: list[dict[str, Any]], d: int, setting: str, model: str) -> float | None:
    for r in rows:
        if (r["dim"], r["setting"], r["model"]) == (d, setting, model):
            return finite_or_none(r["mse"])
    return None


def _ours_vs_authors(rows: list[dict[str, Any]]) -> dict[str, dict[str, bool | None]]:
    """Per model and d: is our MSE at or below the authors' (True also where theirs has no number)?"""
    verdict: dict[str, dict[str, bool | None]] = {}
    for r in rows:
        if r["setting"] != "ours":
            continue
        ours = finite_or_none(r["mse"])
        theirs = _lookup(rows, r["dim"], "authors", r["model"])
        verdict.setdefault(r["model"], {})[str(r["dim"])] = (
            None if ours is None else (True if theirs is None else ours <= theirs))
    return verdict


def _mse_figure(rows: list[dict[str, Any]], dims: list[int], settings: Sequence[str], models: Sequence[str]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in models:
        for s in settings:
            ys = [_lookup(rows, d, s, m) for d in dims]
            info = [next(r for r in rows if (r["dim"], r["setting"], r["model"]) == (d, s, m)) for d in dims]
            fig.add_trace(go.Scatter(
                x=dims, y=ys, mode="lines+markers", name=f"{m} ({s})",
                line={"dash": "dash" if s == "authors" else "solid"},
                customdata=[[r["stopped"], r["train_s"], r["steps"]] for r in info],
                hovertemplate="d = %{x}<br>MSE %{y:.3e}<br>%{customdata[0]} after %{customdata[2]} steps"
                              "<br>%{customdata[1]:.1f} s<extra></extra>"))
    fig.update_layout(title="MSE against whitening (gaps: diverged, no finite map)",
                      xaxis={"title": "dimension d", "type": "log", "tickvals": dims},
                      yaxis={"title": "MSE", "type": "log", "exponentformat": "e"},
                      template="plotly_white", height=450)
    return fig
