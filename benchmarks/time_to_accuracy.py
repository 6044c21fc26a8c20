"""Time to accuracy: wall seconds until a preset's map is within MSE 1e-3 of the truth.

    python benchmarks/time_to_accuracy.py                   # digits and gaussian presets, seeds 0-2
    python benchmarks/time_to_accuracy.py --only digits --seeds 5 --every 25
    python benchmarks/time_to_accuracy.py --pair 3,0,8,1    # another digit pair (digit, example, ...)

Digits: the app's preset (MODEL_PRESETS / TRAIN_PRESETS["digits"]) pushes bundled digit 0 (first
example) onto digit 4 (second example), the authors' pairing. The truth is the barycentric projection
of the exact OT plan between 1000 source and 1000 target samples drawn at bandwidth 1e-4, the end of
the authors' schedule, whatever the preset's own schedule; the map is scored on those 1000 source
points. Gaussian: the paper's N([1,-1], [[1,.7],[.7,1]]) -> N(0, I) against whitening.

Each seed is trained twice with identical numbers: once with the error measured every ``--every``
steps (untimed), once plainly, as the app runs it, recording the clock at every progress report.
The time to accuracy is the clock of the plain run at the first measured step whose MSE is <= 1e-3.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch

from _common import DIGIT_PAIR, machine, seeded_model, table
from gradnet_core import ImageDensity, train
from gradnet_core.experiments.gaussian2d import paper_gaussian_pair
from gradnet_core.ground_truth import barycentric_projection, gaussian_map
from gradnet_core.images import load_bundled
from gradnet_core.metrics import map_mse
from gradnet_core.presets import MODEL_PRESETS, TRAIN_PRESETS

TARGET_MSE = 1e-3
EVAL_BANDWIDTH = 1e-4        # where the digit truth is drawn (the end of the authors' schedule)
N_EVAL = 1000


def digit_problem(pair: tuple[tuple[int, int], tuple[int, int]]):
    """Source and target densities and the scoring function for a digit pair."""
    (a, i), (b, j) = pair
    src_img, tgt_img = (load_bundled(a, i).astype(np.float32), load_bundled(b, j).astype(np.float32))
    source, target = ImageDensity(src_img, bandwidth=EVAL_BANDWIDTH), ImageDensity(tgt_img, bandwidth=EVAL_BANDWIDTH)
    xs = source.sample(N_EVAL, torch.Generator().manual_seed(101))
    xt = target.sample(N_EVAL, torch.Generator().manual_seed(202))
    truth = barycentric_projection(xs, xt)
    return source, target, _scorer(xs, truth)


def gaussian_problem():
    source, target = paper_gaussian_pair()
    xs = source.sample(N_EVAL, torch.Generator().manual_seed(7)).float()
    return source, target, _scorer(xs, gaussian_map(source, target)(xs))


def _scorer(xs: torch.Tensor, truth: torch.Tensor) -> Callable[[torch.nn.Module], float]:
    def score(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return map_mse(model(xs), truth)
    return score


def measure(preset: str, source, target, score, seed: int, every: int) -> dict[str, Any]:
    """One seed: the error curve (untimed run) and the clock (plain run) of the preset."""
    network, kwargs = MODEL_PRESETS[preset]
    config = TRAIN_PRESETS[preset]

    curve: list[tuple[int, float]] = []

    def evaluate(progress) -> None:
        if progress.step % every == 0 or progress.step == progress.total:
            curve.append((progress.step, score(progress.model)))

    model = seeded_model(network, seed, dim=source.dim, **kwargs)
    scored = train(model, source, target, replace(config, report_seconds=0.0), evaluate)

    clock: list[tuple[int, float, float]] = [(0, 0.0, 0.0)]      # step, wall, CPU seconds
    model = seeded_model(network, seed, dim=source.dim, **kwargs)
    wall, cpu = time.perf_counter(), time.thread_time()
    plain = train(model, source, target, config,
                  lambda p: clock.append((p.step, p.elapsed, time.thread_time() - cpu)))
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    if plain.history["loss"] != scored.history["loss"]:
        print(f"  warning: seed {seed}: the timed run's losses differ from the scored run's", flush=True)

    first = next((step for step, mse in curve if mse <= TARGET_MSE), None)
    return {
        "seed": seed, "stopped": plain.stopped, "steps": config.steps, "first_step": first,
        "seconds_to_target": None if first is None else _clock_at(clock, first, 1),
        "cpu_to_target": None if first is None else _clock_at(clock, first, 2),
        "final_mse": score(plain.map), "wall": wall, "cpu": cpu, "best_mse": min(m for _, m in curve),
    }


def _clock_at(clock: list[tuple[int, float, float]], step: int, column: int) -> float:
    """Seconds (wall: column 1, CPU: column 2) at ``step``, linear between progress reports."""
    columns = list(zip(*clock))
    return float(np.interp(step, columns[0], columns[column]))


def describe(preset: str) -> str:
    network, kwargs = MODEL_PRESETS[preset]
    c = TRAIN_PRESETS[preset]
    size = ", ".join(f"{k} {v}" for k, v in kwargs.items())
    return (f"{network} ({size}); {c.optimizer} lr {c.lr:g} ({c.lr_schedule}), batch {c.batch_size}, {c.steps} steps"
            + (f", clip {c.clip_grad:g}" if c.clip_grad else "")
            + (f", bandwidth {c.objective.bandwidth_start:g} -> {c.objective.bandwidth_end:g}"
               if preset.startswith("digits") else ""))


def report(name: str, preset: str, runs: list[dict[str, Any]]) -> str:
    rows = [[r["seed"], r["first_step"] if r["first_step"] is not None else "never",
             r["seconds_to_target"] if r["seconds_to_target"] is not None else "-",
             r["cpu_to_target"] if r["cpu_to_target"] is not None else "-",
             r["final_mse"], r["best_mse"], r["wall"], r["cpu"]] for r in runs]
    reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    summary = (f"median wall seconds to MSE <= {TARGET_MSE:g}: "
               + (f"{statistics.median(reached):.2f} ({len(reached)}/{len(runs)} seeds reached it)" if reached
                  else "never reached"))
    return (f"{name}: {describe(preset)}\n"
            + table(["seed", "steps to 1e-3", "wall s to 1e-3", "CPU s to 1e-3", "final MSE", "best MSE",
                     "run wall s", "run CPU s"], rows) + "\n" + summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seeds", type=int, default=3, help="model seeds 0 .. seeds-1")
    parser.add_argument("--every", type=int, default=25, help="measure the error every this many steps")
    parser.add_argument("--only", choices=("digits", "gaussian"))
    parser.add_argument("--pair", help="digit pair as source,example,target,example (default 0,0,4,1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}\n", flush=True)
    problems = {}
    if args.only != "gaussian":
        pair = DIGIT_PAIR
        if args.pair:
            a, i, b, j = (int(v) for v in args.pair.split(","))
            pair = ((a, i), (b, j))
        problems[f"Digit {pair[0][0]} (example {pair[0][1]}) -> {pair[1][0]} (example {pair[1][1]})"] = (
            "digits", digit_problem(pair))
    if args.only != "digits":
        problems["Paper Gaussian -> N(0, I)"] = ("gaussian", gaussian_problem())
    for name, (preset, (source, target, score)) in problems.items():
        runs = []
        for seed in range(args.seeds):
            runs.append(measure(preset, source, target, score, seed, args.every))
            r = runs[-1]
            print(f"  {name}, seed {seed}: first <= 1e-3 at step {r['first_step']}, "
                  f"final MSE {r['final_mse']:.2e}, run {r['wall']:.1f} s", flush=True)
        print(report(name, preset, runs) + "\n", flush=True)
    print(f"Load average at the end: {machine().rsplit('load average', 1)[1].strip()}")


if __name__ == "__main__":
    main()
