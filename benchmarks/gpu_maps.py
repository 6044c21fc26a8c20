"""Maps trained on a GPU with the app's settings, scored on the CPU against the exact discrete OT map.

    python benchmarks/gpu_maps.py train --out DIR      # on the GPU machine: train, save maps and timings
    python benchmarks/gpu_maps.py score DIR            # here: MSE against the barycentric projection

``train`` runs the morph's default pair (bundled digits 0 -> 4) as the app and ``experiments morph`` do
(the verdict and its fallback phase included) on CUDA: the fast preset with seeds 0, 1, 2 and the paper
preset with seed 0. It writes each map (``save_map``: safetensors, no pickle) and ``gpu_maps.json`` with
the wall times. ``score`` trains the same fast-preset runs on this CPU and scores both sets with the
same evaluation draws (``digit_pair_metrics``), so a GPU map that differs from the CPU's shows here.
The GPU machine needs POT for the verdict's exact W2 (carry its wheel: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from gradnet_core import load_map, save_map, train
from gradnet_core.experiments.digits_table import (EVAL_BANDWIDTH, digit_densities, digit_pair_images,
                                                   digit_pair_metrics, preset_config, train_digit_pair)
from gradnet_core.networks import seeded_map

RUNS = (("fast", 0), ("fast", 1), ("fast", 2), ("paper", 0))
PAIR = ("0", "4")
DRAWS = (0, 1, 2)          # evaluation draws per map


def _train_cuda(preset: str, seed: int, device: str):
    source, target = digit_pair_images(*PAIR)
    model_name, kwargs, config = preset_config(preset, None, seed)
    config = replace(config, device=device)
    src, tgt = digit_densities(source, target, config.objective.bandwidth_start)
    model = seeded_map(model_name, seed, dim=2, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = train(model, src, tgt, config)
    wall = time.perf_counter() - started
    return result, config, wall


def run_train(out: Path, device: str, runs: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset, seed in RUNS[:runs]:
        result, config, wall = _train_cuda(preset, seed, device)
        verdict = result.verdict
        row = {"preset": preset, "seed": seed, "device": result.device, "wall_s": wall, "train_s": result.elapsed,
               "steps": result.steps, "planned_steps": config.steps, "stopped": result.stopped,
               "phases": [list(p) for p in result.phases], "final_loss": result.final_loss,
               "verdict_ok": None if verdict is None else verdict.ok,
               "verdict": None if verdict is None else verdict.message}
        name = f"{preset}-seed{seed}.gradnet"
        save_map(result.map.to("cpu"), out / name, extra={"preset": preset, "seed": seed, "pair": list(PAIR)})
        row["file"] = name
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "runs": rows}
    (out / "gpu_maps.json").write_text(json.dumps(summary, indent=1))


def _mse(model, draws=DRAWS) -> list[float]:
    source, target = digit_pair_images(*PAIR)
    return [digit_pair_metrics(model, source, target, EVAL_BANDWIDTH, 1000, draw)[0]["mse"] for draw in draws]


def run_score(folder: Path) -> None:
    summary = json.loads((folder / "gpu_maps.json").read_text())
    source, target = digit_pair_images(*PAIR)
    print(f"GPU: {summary['gpu']}, torch {summary['torch']}; pair {PAIR[0]} -> {PAIR[1]} (bundled digits); "
          f"MSE against the barycentric projection, median of {len(DRAWS)} evaluation draws (min-max)\n")
    print("| preset | seed | GPU wall s | GPU steps (phases) | GPU verdict | GPU MSE | CPU wall s | CPU MSE |")
    print("|---|---|---|---|---|---|---|---|")
    for row in summary["runs"]:
        gpu = _mse(load_map(folder / row["file"]))
        cpu_cell, cpu_wall = "not run (see results/)", ""
        if row["preset"] == "fast":
            started = time.perf_counter()
            model, _, _ = train_digit_pair(source, target, row["preset"], None, row["seed"])
            cpu_wall = f"{time.perf_counter() - started:.1f}"
            cpu = _mse(model)
            cpu_cell = f"{statistics.median(cpu):.2e} ({min(cpu):.1e}-{max(cpu):.1e})"
        phases = ", ".join(f"{title} from {start}" for start, title in row["phases"]) or "one phase"
        print(f"| {row['preset']} | {row['seed']} | {row['wall_s']:.1f} | {row['steps']} ({phases}) | "
              f"{'pass' if row['verdict_ok'] else 'flagged'} | {statistics.median(gpu):.2e} "
              f"({min(gpu):.1e}-{max(gpu):.1e}) | {cpu_wall} | {cpu_cell} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train on the GPU and save the maps")
    p_train.add_argument("--out", type=Path, required=True)
    p_train.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    p_train.add_argument("--runs", type=int, default=len(RUNS), help="the first N of the runs")
    p_score = sub.add_parser("score", help="score saved maps here")
    p_score.add_argument("folder", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "train":
        if args.device.startswith("cuda"):
            if not torch.cuda.is_available():
                print("No CUDA device here: nothing trained.")
                return
            torch.backends.cuda.matmul.allow_tf32 = False
        run_train(args.out, args.device, args.runs)
    else:
        run_score(args.folder)


if __name__ == "__main__":
    main()
