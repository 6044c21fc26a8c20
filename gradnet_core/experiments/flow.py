"""The constrained gradient flow against Adam at equal compute time (issue 8; docs/method.md §3).

Setting (the authors' example): source = the four-corner mixture, components N((±2, ±2), 0.25 I) with
weight 1/4 each (the app's "Four corners -> N(0, I)" preset); target N(0, I), the log-concave target the
flow needs. Model: the app's mixture preset, mGradNet-M with 8 modules of width 32. Every method gets
the same time budget per seed, on one CPU thread, and is stopped when it runs out. The budget is
counted in CPU seconds of the process (equal to wall seconds on an idle core), so that other jobs on a
shared machine do not tilt the comparison:

* flow, explicit (exact score): tau 0.05, 10 inner Adam steps (lr 1e-2) per outer step, pool of 1000;
  with the authors' tau 0.4 and 100 inner steps it blows up on this problem (results/flow/README.md);
* flow, implicit: tau 1, 50 inner steps per outer step, batch 1000;
* flow, explicit (entropic score): the authors' inner settings, tau 0.4, 100 inner steps, lr 0.1,
  batch 100, with the score estimated by entropic self-transport;
* Adam on the KL objective and Adam on the Monge–Ampère (L1) loss: lr 1e-2, batch 1000.

The flows run as many outer steps as the budget allows. Metrics per seed: energy distance between
10 000 mapped source samples and 10 000 target samples; MSE against the barycentric projection of an
exact plan between 4000 source and 4000 target points (one reference for all seeds); and the KL
estimate E_p[log p - log det J - log q(T)] on the same 10 000 points. Results: CSV per run, a
mean ± std table (CSV and markdown), JSON summary and a PNG of the seed-0 maps.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..densities import Gaussian
from ..ground_truth import barycentric_projection
from ..metrics import energy_distance, map_mse
from ..networks import TransportMap, build_map
from ..presets import MODEL_PRESETS, mixture_presets
from ..objectives import ConstrainedFlow, MongeAmpere, ReverseKL
from ..training import Progress, TrainConfig, train
from .common import (ExperimentResult, ProgressFn, RunProgress, machine_description, output_dir, torch_threads,
                     write_csv, write_json)
from .figures import snapshot_grid_png

__all__ = ["FLOW_METHODS", "TAU_SWEEP", "flow_problem", "run_flow", "run_tau_sweep", "add_arguments", "run"]

_MANY = 1_000_000          # steps / outer steps "until the budget runs out"

def _flow_config(inner_steps: int, outer_steps: int = _MANY, **settings: Any) -> TrainConfig:
    """The flow's TrainConfig: ``outer_steps`` outer steps of ``inner_steps`` Adam steps each; ``settings``
    are TrainConfig fields (lr, batch_size) and ConstrainedFlow fields (variant, score, tau)."""
    flow = {k: settings.pop(k) for k in ("variant", "score", "tau") if k in settings}
    return TrainConfig(steps=outer_steps * inner_steps, **settings,
                       objective=ConstrainedFlow(outer_steps=outer_steps, **flow))


def _inner_steps(config: TrainConfig) -> int:
    return config.steps // config.objective.outer_steps if isinstance(config.objective, ConstrainedFlow) else 1


def _shortened(config: TrainConfig, inner_steps: int = 2, **overrides: Any) -> TrainConfig:
    """The same method with one outer step of ``inner_steps`` (a warm-up run)."""
    if isinstance(config.objective, ConstrainedFlow):
        return replace(config, steps=inner_steps, **overrides).with_objective(outer_steps=1)
    return replace(config, steps=inner_steps, **overrides)


#: Method label -> its training configuration (the wall budget stops each run).
FLOW_METHODS: dict[str, TrainConfig] = {
    "flow, explicit (exact score)": _flow_config(10, variant="explicit", score="exact", tau=0.05, lr=1e-2,
                                                 batch_size=1000),
    "flow, implicit": _flow_config(50, variant="implicit", tau=1.0, lr=1e-2, batch_size=1000),
    "flow, explicit (entropic score)": _flow_config(100, variant="explicit", score="entropic", tau=0.4, lr=0.1,
                                                    batch_size=100),
    "Adam, KL": TrainConfig(steps=_MANY, objective=ReverseKL(), lr=1e-2, batch_size=1000),
    "Adam, Monge–Ampère": TrainConfig(steps=_MANY, objective=MongeAmpere(residual="l1"), lr=1e-2, batch_size=1000),
}

_PRESET = "Four corners -> N(0, I)"


def flow_problem() -> tuple[Any, Gaussian]:
    """The four-corner mixture source (app preset) and the N(0, I) target."""
    source, _ = mixture_presets()[_PRESET]
    return source, Gaussian([0.0, 0.0], np.eye(2))


def _check_seeds_and_budget(seeds: Any, budget: Any) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer; got {seeds!r}")
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of seconds; got {budget!r}")


def _build_model(seed: int) -> TransportMap:
    name, kwargs = MODEL_PRESETS["mixture"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_map(name, dim=2, **kwargs)


@torch.no_grad()
def _kl(model: TransportMap, source: Any, target: Gaussian, x: torch.Tensor) -> float:
    y, logdet = model.map_and_logdet(x)
    return (source.log_prob(x) - logdet - target.log_prob(y)).mean().item()


def _summary_rows(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"method": method, "seeds": len(mine),
                                 "diverged": sum(r["status"] == "diverged" for r in mine)}
        for key in ("energy_distance", "mse", "kl", "steps", "outer_steps", "cpu_seconds"):
            values = np.array([r[key] for r in mine if r[key] is not None], dtype=float)
            entry[f"{key}_mean"] = float(values.mean()) if len(values) else None
            entry[f"{key}_std"] = float(values.std()) if len(values) else None
        out.append(entry)
    return out


def _markdown(summary: list[dict[str, Any]], budget: float, floors: dict[str, float], n_eval: int) -> str:
    def pm(row: dict[str, Any], key: str, fmt: str) -> str:
        m, s = row[f"{key}_mean"], row[f"{key}_std"]
        return "–" if m is None else f"{format(m, fmt)} ± {format(s, fmt)}"

    lines = [f"Four-corner mixture -> N(0, I), mGradNet-M 8 x 32, {budget:g} CPU seconds (one thread) per method "
             f"per seed; mean ± std over {summary[0]['seeds']} seeds.", "",
             "| method | energy distance | MSE vs barycentric projection | KL(T#p ‖ q) | inner steps | outer steps | diverged |",
             "|---|---|---|---|---|---|---|"]
    for row in summary:
        lines.append(f"| {row['method']} | {pm(row, 'energy_distance', '.5f')} | {pm(row, 'mse', '.4f')} | "
                     f"{pm(row, 'kl', '.4f')} | {pm(row, 'steps', '.0f')} | {pm(row, 'outer_steps', '.0f')} | "
                     f"{row['diverged']} |")
    lines += ["", f"Floors: energy distance between two independent {n_eval}-point samples of N(0, I): "
              f"{floors['energy_distance']:.5f}; MSE between two barycentric projections with independent "
              f"target samples, halved (the reference's own error): {floors['mse']:.4f}.", ""]
    return "\n".join(lines)


def run_flow(out: str | Path | None = None, seeds: int = 10, budget: float = 15.0, n_eval: int = 10_000,
             n_reference: int = 4000, methods: Sequence[str] = tuple(FLOW_METHODS), threads: int = 1,
             on_progress: ProgressFn | None = None, write_files: bool = True) -> ExperimentResult:
    """Train every method in ``methods`` for ``budget`` seconds on each of ``seeds`` seeds and
    compare them; write the tables and the figure to ``out`` (default ``results/flow/``).

    The budget is CPU time of this process (``time.process_time``), which on one thread is the wall
    time the method would take on an idle core: other load on a shared machine does not change
    which method gets how much compute. ``on_progress`` counts in milliseconds of budget: ``done``
    of ``total`` = seeds x methods x budget. Training runs on the CPU with ``threads`` torch threads
    (restored afterwards).
    """
    _check_seeds_and_budget(seeds, budget)
    for count, name in ((n_eval, "n_eval"), (n_reference, "n_reference"), (threads, "threads")):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be a positive integer; got {count!r}")
    unknown = [m for m in methods if m not in FLOW_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(FLOW_METHODS)}")

    started = time.perf_counter()
    with torch_threads(threads):
        source, target = flow_problem()
        g = torch.Generator().manual_seed(12345)
        x_ref, y_ref = source.sample(n_reference, g), target.sample(n_reference, g)
        reference = barycentric_projection(x_ref, y_ref).float()
        second = barycentric_projection(x_ref, target.sample(n_reference, g)).float()
        floors = {"mse": map_mse(reference, second) / 2,
                  "energy_distance": energy_distance(target.sample(n_eval, g), target.sample(n_eval, g))}

        # One-time costs (lazy imports inside torch on the first optimiser step and the first
        # autograd.grad) would otherwise land in the budget of whichever run comes first.
        for method in methods:
            train(_build_model(0), source, target, _shortened(FLOW_METHODS[method], batch_size=100, device="cpu"))

        budget_ms = round(budget * 1000)
        runs = seeds * len(methods)
        rows: list[dict[str, Any]] = []
        seed0_maps: dict[str, TransportMap] = {}
        for seed in range(seeds):
            ge = torch.Generator().manual_seed(1000 + seed)
            x_eval, y_eval = source.sample(n_eval, ge), target.sample(n_eval, ge)
            for m_index, method in enumerate(methods):
                run_index = seed * len(methods) + m_index
                label = f"{method}, seed {seed}"
                offset = run_index * budget_ms
                model = _build_model(seed)
                config = replace(FLOW_METHODS[method], seed=seed, device="cpu")
                outer_seen = [0]
                t0 = time.process_time()

                def callback(p: Progress, t0: float = t0, offset: int = offset, label: str = label,
                             run_index: int = run_index, outer_seen: list[int] = outer_seen) -> bool:
                    elapsed = time.process_time() - t0
                    if "outer_step" in p.info:
                        i = p.info
                        complete = i["outer_step"] if i["inner_step"] == i["inner_total"] else i["outer_step"] - 1
                        outer_seen[0] = max(outer_seen[0], complete)
                    if on_progress is not None:
                        on_progress(RunProgress(label=label, run=run_index, runs=runs,
                                                done=offset + min(budget_ms, round(elapsed * 1000)),
                                                total=runs * budget_ms, loss=p.loss))
                    return elapsed >= budget

                result = train(model, source, target, config, callback)
                seconds = time.process_time() - t0
                with torch.no_grad():
                    mapped = model(x_eval)
                    ref_pred = model(x_ref)
                finite = bool(torch.isfinite(mapped).all())
                rows.append({
                    "method": method, "seed": seed, "status": result.stopped,
                    "energy_distance": energy_distance(mapped, y_eval) if finite else None,
                    "mse": map_mse(ref_pred, reference) if finite else None,
                    "kl": _kl(model, source, target, x_eval) if finite else None,
                    "steps": result.steps,
                    "outer_steps": outer_seen[0] if isinstance(config.objective, ConstrainedFlow) else None,
                    "cpu_seconds": seconds,
                })
                if seed == 0:
                    seed0_maps[method] = model
        if on_progress is not None:
            on_progress(RunProgress(label="done", run=runs - 1, runs=runs, done=runs * budget_ms,
                                    total=runs * budget_ms, loss=None))

        summary = _summary_rows(rows, methods)
        result = ExperimentResult(name="flow", rows=rows, summary={
            "budget_s": budget, "seeds": seeds, "n_eval": n_eval, "n_reference": n_reference,
            "floors": floors, "methods": summary, "machine": machine_description()})
        if write_files:
            folder = output_dir(out, "flow")
            result.files.append(write_csv(folder / "flow_runs.csv", rows))
            result.files.append(write_csv(folder / "flow_summary.csv", summary))
            table = folder / "flow_table.md"
            table.write_text(_markdown(summary, budget, floors, n_eval), encoding="utf-8")
            result.files.append(table)
            result.files.append(write_json(folder / "flow.json", result.summary))
            result.files.append(_figure(folder / "flow_maps.png", seed0_maps, x_ref, reference, target))
    result.elapsed = time.perf_counter() - started
    return result


#: (variant, tau, inner steps) of the step-size sweep: the explicit scheme with the authors' tau and
#: inner steps and with fewer inner steps and smaller tau; the implicit scheme at and beyond tau 0.4.
TAU_SWEEP: tuple[tuple[str, float, int], ...] = (
    ("explicit", 0.4, 100), ("explicit", 0.4, 10), ("explicit", 0.2, 10), ("explicit", 0.1, 10),
    ("explicit", 0.05, 10), ("implicit", 0.4, 50), ("implicit", 1.0, 50), ("implicit", 4.0, 50),
)


def _rebound(kl: Sequence[float]) -> float | None:
    """How far the KL estimate rose above its best value so far: max_n (KL_n - min_{m <= n} KL_m)."""
    values = [v for v in kl if math.isfinite(v)]
    if not values:
        return None
    best, worst = values[0], 0.0
    for v in values:
        best = min(best, v)
        worst = max(worst, v - best)
    return worst


def run_tau_sweep(out: str | Path | None = None, seeds: int = 3, budget: float = 15.0, n_eval: int = 10_000,
                  sweep: Sequence[tuple[str, float, int]] = TAU_SWEEP, threads: int = 1,
                  on_progress: ProgressFn | None = None, write_files: bool = True) -> ExperimentResult:
    """The constrained flow (exact score) on the same problem for each (variant, tau, inner steps) in
    ``sweep``, ``budget`` CPU seconds per run: final energy distance and KL, and the KL rebound, how far
    the per-outer-step KL estimate rose above its best value so far (about 0.1 is estimator noise on
    1000 points; a flow that blows up and recovers shows a large rebound). Writes
    ``flow_tau_sweep.csv`` and ``flow_tau_sweep.md``.
    """
    _check_seeds_and_budget(seeds, budget)
    started = time.perf_counter()
    with torch_threads(threads):
        source, target = flow_problem()
        base = {"explicit": FLOW_METHODS["flow, explicit (exact score)"], "implicit": FLOW_METHODS["flow, implicit"]}
        train(_build_model(0), source, target, _shortened(base["explicit"], device="cpu"))
        budget_ms = round(budget * 1000)
        runs = seeds * len(sweep)
        rows: list[dict[str, Any]] = []
        for seed in range(seeds):
            ge = torch.Generator().manual_seed(1000 + seed)
            x_eval, y_eval = source.sample(n_eval, ge), target.sample(n_eval, ge)
            for k, (variant, tau, inner) in enumerate(sweep):
                run_index = seed * len(sweep) + k
                config = replace(base[variant], steps=_MANY * inner, seed=seed, device="cpu").with_objective(tau=tau)
                model = _build_model(seed)
                t0 = time.process_time()

                def callback(p: Progress, t0: float = t0, run_index: int = run_index,
                             label: str = f"{variant}, tau {tau:g}, {inner} inner, seed {seed}") -> bool:
                    elapsed = time.process_time() - t0
                    if on_progress is not None:
                        on_progress(RunProgress(label=label, run=run_index, runs=runs,
                                                done=run_index * budget_ms + min(budget_ms, round(elapsed * 1000)),
                                                total=runs * budget_ms, loss=p.loss))
                    return elapsed >= budget

                result = train(model, source, target, config, callback)
                with torch.no_grad():
                    mapped = model(x_eval)
                finite = bool(torch.isfinite(mapped).all())
                rows.append({
                    "variant": variant, "tau": tau, "inner_steps": inner, "seed": seed, "status": result.stopped,
                    "outer_steps": result.history["outer_step"][-1] if result.history["outer_step"] else 0,
                    "energy_distance": energy_distance(mapped, y_eval) if finite else None,
                    "kl": _kl(model, source, target, x_eval) if finite else None,
                    "kl_rebound": _rebound(result.history["kl"]),
                })
        summary = []
        for variant, tau, inner in sweep:
            mine = [r for r in rows if (r["variant"], r["tau"], r["inner_steps"]) == (variant, tau, inner)]
            entry: dict[str, Any] = {"variant": variant, "tau": tau, "inner_steps": inner,
                                     "diverged": sum(r["status"] == "diverged" for r in mine)}
            for key in ("energy_distance", "kl", "kl_rebound", "outer_steps"):
                values = np.array([r[key] for r in mine if r[key] is not None], dtype=float)
                values = values[np.isfinite(values)]
                entry[f"{key}_median"] = float(np.median(values)) if len(values) else None
                entry[f"{key}_max"] = float(values.max()) if len(values) else None
            summary.append(entry)
        result = ExperimentResult(name="flow-tau-sweep", rows=rows, summary={
            "budget_s": budget, "seeds": seeds, "n_eval": n_eval, "sweep": summary, "machine": machine_description()})
        if write_files:
            folder = output_dir(out, "flow")
            result.files.append(write_csv(folder / "flow_tau_sweep.csv", rows))
            lines = [f"Constrained flow (exact score) on the four-corner mixture -> N(0, I), {budget:g} CPU seconds "
                     f"per run; median (worst) over {seeds} seeds.", "",
                     "| variant | tau | inner steps | energy distance | final KL | KL rebound | outer steps | diverged |",
                     "|---|---|---|---|---|---|---|---|"]

            def cell(entry: dict[str, Any], key: str, fmt: str) -> str:
                med, worst = entry[f"{key}_median"], entry[f"{key}_max"]
                return "–" if med is None else f"{format(med, fmt)} ({format(worst, fmt)})"

            for e in summary:
                lines.append(f"| {e['variant']} | {e['tau']:g} | {e['inner_steps']} | "
                             f"{cell(e, 'energy_distance', '.4f')} | {cell(e, 'kl', '.3f')} | "
                             f"{cell(e, 'kl_rebound', '.3g')} | "
                             f"{cell(e, 'outer_steps', '.0f')} | {e['diverged']} |")
            table = folder / "flow_tau_sweep.md"
            table.write_text("\n".join(lines) + "\n", encoding="utf-8")
            result.files.append(table)
    result.elapsed = time.perf_counter() - started
    return result


def _figure(path: Path, maps: dict[str, TransportMap], x_ref: torch.Tensor, reference: torch.Tensor,
            target: Gaussian, n: int = 1500) -> Path:
    """Displacement interpolation (1 - t) x + t T(x) of each seed-0 map and of the reference."""
    x = x_ref[:n]
    ends = {f"reference (barycentric\nprojection, {len(reference)} pts)": reference[:n]}
    with torch.no_grad():
        ends.update({label.replace(" (", "\n("): model(x) for label, model in maps.items()})
    quadrant = (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()
    palette = np.array([(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167)], dtype=np.uint8)
    times = (0.0, 0.5, 1.0)
    frames = [[((1 - t) * x + t * end).numpy() for t in times] for end in ends.values()]
    background = target.sample(n, torch.Generator().manual_seed(7)).numpy()
    return snapshot_grid_png(path, frames, palette[quadrant.numpy()], list(ends), [f"t = {t:g}" for t in times],
                             bounds=(-4.0, 4.0, -4.0, 4.0), cell=180, background=background)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``flow`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per method (default 10; 3 with --tau-sweep)")
    parser.add_argument("--budget", type=float, default=15.0,
                        help="CPU seconds (one thread: wall seconds on an idle core) per method per seed (default 15)")
    parser.add_argument("--n-eval", type=int, default=10_000, help="samples for the energy distance")
    parser.add_argument("--n-reference", type=int, default=4000,
                        help="points of the barycentric-projection reference map")
    parser.add_argument("--methods", nargs="+", default=list(FLOW_METHODS), choices=list(FLOW_METHODS),
                        metavar="METHOD", help=f"subset of: {'; '.join(FLOW_METHODS)}")
    parser.add_argument("--tau-sweep", action="store_true",
                        help="instead of the comparison, run the step-size sweep of the flow (TAU_SWEEP)")


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``flow`` subcommand from parsed arguments; ``args.threads`` None means one thread."""
    threads = getattr(args, "threads", None) or 1
    if args.tau_sweep:
        return run_tau_sweep(out=args.out, seeds=3 if args.seeds is None else args.seeds, budget=args.budget,
                             n_eval=args.n_eval, threads=threads, on_progress=on_progress)
    return run_flow(out=args.out, seeds=10 if args.seeds is None else args.seeds, budget=args.budget,
                    n_eval=args.n_eval, n_reference=args.n_reference, methods=args.methods, threads=threads,
                    on_progress=on_progress)
