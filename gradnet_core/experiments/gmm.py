"""The ICASSP 2023 mixture experiment (docs/method.md §8.2): a 2-component Gaussian mixture (means (-2, 0),
(2, 0)) mapped onto a 3-component one (means (-3, 1), (0, -1), (3, 1)), all components with standard
deviation 0.5, by the ICASSP baselines C-MGN, M-MGN and an ICNN, trained from samples with the
Gaussian-moment KL and the adversarial Wasserstein-1 losses.

Each map is judged on test samples x ~ p against target samples y ~ q (same number n):
* ``w2_to_target``: exact W2 between the mapped points T(x) and y (POT's EMD); the noise floor is W2
  between two independent target samples.
* ``mse_vs_ot``: the paper's MSE between T(x) and the barycentric projection of the exact plan between
  x and y (the discrete OT map, docs/method.md §5); ``l2_uvp`` the same in percent of Var(q).
* ``min_eigenvalue``: smallest eigenvalue of sym(J_T) over x (>= 0: monotone).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..ground_truth import barycentric_projection
from ..metrics import exact_w2, l2_uvp, map_mse, monotonicity
from ..networks import seeded_map
from ..presets import SAMPLE_LOSS_SETTINGS, mixture_presets, train_preset
from ..training import TrainConfig, train
from .common import (ExperimentResult, ProgressFn, ProgressTracker, machine_description, output_dir, write_csv,
                     write_json)
from .figures import snapshot_grid_png

__all__ = ["GMM_PRESET", "GMM_NETWORKS", "GMM_LOSSES", "LOSS_BIN", "gmm_pair", "binned_history",
           "run_gmm", "add_arguments", "run"]

GMM_PRESET = "ICASSP 2023 example: 2 -> 3 components"

#: The maps compared: registry name -> constructor arguments (dim added).
GMM_NETWORKS: dict[str, dict[str, Any]] = {
    "C-MGN": {"width": 32, "depth": 4},
    "M-MGN": {"width": 32, "modules": 4},
    "ICNN": {"width": 64, "depth": 3},
}

#: Training per loss: the mixture preset with the shared sample-loss settings (what the app uses too).
GMM_LOSSES: dict[str, TrainConfig] = {loss: train_preset("mixture", device="cpu", **settings)
                                      for loss, settings in SAMPLE_LOSS_SETTINGS.items()}

OT_LABEL = "discrete OT (barycentric projection)"
LOSS_BIN = 10              # steps averaged per row of loss.csv (keeps the file small)


def gmm_pair():
    """The ICASSP 2023 example's source (2 components) and target (3 components) mixtures, float64."""
    source, target = mixture_presets()[GMM_PRESET]
    return source.to(dtype=torch.float64), target.to(dtype=torch.float64)


def binned_history(history: dict[str, list[float]], width: int = LOSS_BIN) -> list[tuple[int, float]]:
    """(last step, mean loss) over consecutive windows of ``width`` steps of a ``TrainResult.history``."""
    steps, values = history["step"], history["loss"]
    return [(steps[min(i + width, len(steps)) - 1], float(np.mean(values[i:i + width])))
            for i in range(0, len(steps), width)]


def run_gmm(out: str | Path | None = None, steps: int | None = None,
            losses: Sequence[str] = ("gaussian-kl", "wasserstein", "sinkhorn"),
            networks: Sequence[str] = tuple(GMM_NETWORKS), seed: int = 0, n_test: int = 1000,
            on_progress: ProgressFn | None = None, write_files: bool = True) -> ExperimentResult:
    """Train every network with every loss on the 2 -> 3 mixture problem and compare them with the
    discrete OT map; write gmm.csv, loss.csv (means over ``LOSS_BIN`` steps), gmm.png and summary.json
    to ``out``.

    ``steps`` overrides every loss's default (``GMM_LOSSES``); ``n_test`` test and target samples give
    the metrics (exact EMD is about n^2).
    """
    for name, allowed, kind in ((losses, GMM_LOSSES, "loss"), (networks, GMM_NETWORKS, "network")):
        unknown = [v for v in name if v not in allowed]
        if unknown:
            raise ValueError(f"unknown {kind} {unknown[0]!r}; choose from {', '.join(allowed)}")
    if n_test < 2:
        raise ValueError("n_test must be at least 2")
    started = time.perf_counter()
    source, target = gmm_pair()
    gen = torch.Generator().manual_seed(seed + 1)
    x = source.sample(n_test, gen)
    y = target.sample(n_test, gen).numpy()
    y_other = target.sample(n_test, gen).numpy()
    x_np = x.numpy()
    ot_map = barycentric_projection(x, y).numpy()
    variance = float(np.trace(target.cov.numpy()))

    configs = {loss: replace(GMM_LOSSES[loss], seed=seed, **({} if steps is None else {"steps": steps}))
               for loss in losses}
    runs = [(loss, net) for loss in losses for net in networks]
    tracker = ProgressTracker([configs[loss].steps for loss, _ in runs], on_progress)
    train_target = target.sample(20_000, torch.Generator().manual_seed(seed + 2)).numpy()

    rows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    mapped: dict[tuple[str, str], np.ndarray] = {}
    for k, (loss, net) in enumerate(runs):
        label = f"{net}, {loss}"
        model = seeded_map(net, seed, dim=2, **GMM_NETWORKS[net])
        # The map only ever sees target samples: a fixed set of 20 000, as a user with data would have.
        result = train(model, source, train_target, configs[loss], callback=tracker.callback(k, label))
        tracker.finish(k, label)
        with torch.no_grad():
            t_x = model(x.to(torch.float32)).double().numpy()
        mapped[(loss, net)] = t_x
        rows.append({
            "loss": loss, "network": net, "steps": result.steps, "stopped": result.stopped,
            "final_loss": result.final_loss, "train_s": result.elapsed,
            "w2_to_target": exact_w2(t_x, y), "mse_vs_ot": map_mse(t_x, ot_map),
            "l2_uvp": l2_uvp(t_x, ot_map, variance),
            "min_eigenvalue": monotonicity(model, x.to(torch.float32))["min_eigenvalue"],
            "parameters": sum(p.numel() for p in model.parameters()),
        })
        history += [{"loss": loss, "network": net, "step": s, "value": v} for s, v in binned_history(result.history)]
    rows.append({"loss": "-", "network": OT_LABEL, "w2_to_target": exact_w2(ot_map, y), "mse_vs_ot": 0.0})
    rows.append({"loss": "-", "network": "identity (no map)", "w2_to_target": exact_w2(x_np, y),
                 "mse_vs_ot": map_mse(x_np, ot_map), "l2_uvp": l2_uvp(x_np, ot_map, variance)})
    floor = exact_w2(y_other, y)
    rows.append({"loss": "-", "network": "second target sample (noise floor)", "w2_to_target": floor})

    summary = {
        "problem": GMM_PRESET, "seed": seed, "n_test": n_test,
        "steps": {loss: c.steps for loss, c in configs.items()},
        "w2_to_target": {f"{r['network']}, {r['loss']}": r["w2_to_target"] for r in rows},
        "mse_vs_ot": {f"{r['network']}, {r['loss']}": r.get("mse_vs_ot") for r in rows},
        "w2_noise_floor": floor,
        "machine": machine_description(),
    }
    files: list[Path] = []
    if write_files:
        from ..plotting import position_colours, square_bounds

        folder = output_dir(out, "gmm")
        files.append(write_csv(folder / "gmm.csv", rows))
        files.append(write_csv(folder / "loss.csv", history))
        frames = [[mapped[(loss, net)] for net in networks] + [ot_map] for loss in losses]
        w2 = {(r["loss"], r["network"]): r["w2_to_target"] for r in rows}
        row_titles = [f"{loss}, {configs[loss].steps} steps\nW2 to target:\n"
                      + " / ".join(f"{w2[(loss, net)]:.2f}" for net in networks) for loss in losses]
        col_titles = list(networks) + ["discrete OT"]
        files.append(snapshot_grid_png(folder / "gmm.png", frames, position_colours(x_np), row_titles, col_titles,
                                       square_bounds(x_np, y, ot_map), background=y))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("gmm", rows, summary, files, time.perf_counter() - started)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gmm`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: 1000 KL, 1500 adversarial, 500 Sinkhorn)")
    parser.add_argument("--losses", nargs="+", default=["gaussian-kl", "wasserstein", "sinkhorn"],
                        choices=["gaussian-kl", "wasserstein", "sinkhorn"], help="sample-only losses to compare")
    parser.add_argument("--networks", nargs="+", default=["C-MGN", "M-MGN", "ICNN"], choices=["C-MGN", "M-MGN", "ICNN"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and test samples")
    parser.add_argument("--n-test", type=int, default=1000, help="test and target samples for W2 and the OT map")


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``gmm`` subcommand from parsed arguments."""
    return run_gmm(args.out, steps=args.steps, losses=args.losses, networks=args.networks, seed=args.seed,
                   n_test=args.n_test, on_progress=on_progress)
