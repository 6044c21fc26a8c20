"""Digit generation (ICASSP 2023 example, docs/method.md §8.4): a monotone map from N(0, I_64) onto scikit-learn's 8 x 8
handwritten digits (pixel values scaled to [0, 1]), trained from samples with the adversarial
Wasserstein-1 loss, for C-MGN, M-MGN and an ICNN.

The digits are shuffled (seeded) and split: the map trains against the training part and is judged
on the held-out part, with as many generated digits as held-out ones:
* ``w2_to_test``: exact W2 (POT's EMD) between generated and held-out digits; the "real digits" row
  is W2 between as many training digits and the held-out ones (two samples of the real distribution).
* ``energy_to_test``: energy distance to the held-out digits (``metrics.energy_distance``).
* ``nn_to_train``: mean Euclidean distance from a generated digit to its nearest training digit
  (the "real digits" row: what the held-out digits score).
* ``outside_unit``: share of generated pixel values outside [0, 1] (they are clipped for display).
A Gaussian with the training digits' mean and covariance is the reference a moment-matching map
would reach at best.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..densities import Gaussian
from ..metrics import energy_distance, exact_w2
from ..networks import seeded_map
from ..objectives import AdversarialW1
from ..training import TrainConfig, train
from .common import (ExperimentResult, ProgressFn, ProgressTracker, machine_description, output_dir, write_csv,
                     write_json)
from .gmm import binned_history

__all__ = ["GENERATE_NETWORKS", "GENERATE_CONFIG", "load_digit_vectors", "digit_grid_png", "run_generate",
           "add_arguments", "run"]

#: The maps compared: registry name -> constructor arguments (dim 64 added).
GENERATE_NETWORKS: dict[str, dict[str, Any]] = {
    "C-MGN": {"width": 128, "depth": 3},
    "M-MGN": {"width": 64, "modules": 4},
    "ICNN": {"width": 128, "depth": 3},
}

#: Adversarial training: the critic of docs/method.md §3.4 (3 layers of 64, leaky ReLU, gradient penalty
#: 10) with 5 critic steps per map step and 256 digits per step. Adam 1e-3 for both the map and the
#: critic: with a critic rate of 1e-4 an M-MGN was at W2 6.5 after 300 steps, at 1e-3 at W2 2.5.
GENERATE_CONFIG = TrainConfig(steps=1000, batch_size=256, lr=1e-3, device="cpu",
                              objective=AdversarialW1(critic_lr=1e-3, critic_steps=5))

GRID_COLUMNS = 6           # generated digits per row of each panel of the PNG
GRID_ROWS = 5
TILE = 4                   # pixels per digit pixel in the PNG


def load_digit_vectors() -> np.ndarray:
    """scikit-learn's 1797 handwritten digits as ``(1797, 64)`` float64 in [0, 1] (gray levels 0-16 / 16)."""
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float64) / 16.0


def digit_grid_png(path: Path, panels: Sequence[tuple[str, np.ndarray]], columns: int = GRID_COLUMNS,
                   tile: int = TILE) -> Path:
    """Side-by-side panels of 8 x 8 digits: ``panels`` = (title, ``(k, 64)`` values, clipped to [0, 1]),
    each laid out ``columns`` digits wide, white ink on black."""
    font = ImageFont.load_default(size=13)
    side, gap, pad, top = 8 * tile, 2, 14, 22
    rows = max(int(np.ceil(len(d) / columns)) for _, d in panels)
    panel_w = columns * (side + gap) - gap
    width = len(panels) * (panel_w + pad) + pad
    height = top + rows * (side + gap) - gap + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for p, (title, digits) in enumerate(panels):
        x0 = pad + p * (panel_w + pad)
        draw.text((x0 + (panel_w - draw.textlength(title, font=font)) / 2, 4), title, fill=(20, 20, 20), font=font)
        for k, vector in enumerate(np.clip(np.asarray(digits, np.float64), 0.0, 1.0)):
            gray = Image.fromarray(np.round(vector.reshape(8, 8) * 255).astype(np.uint8))
            r, c = divmod(k, columns)
            canvas.paste(gray.resize((side, side), Image.Resampling.NEAREST).convert("RGB"),
                         (x0 + c * (side + gap), top + r * (side + gap)))
    canvas.save(path, optimize=True)
    return path


def _nearest_distance(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean over ``points`` of the distance to the nearest row of ``reference``."""
    d2 = (points ** 2).sum(1)[:, None] + (reference ** 2).sum(1)[None, :] - 2.0 * points @ reference.T
    return float(np.sqrt(np.clip(d2.min(axis=1), 0.0, None)).mean())


def _scores(generated: np.ndarray, test: np.ndarray, train_digits: np.ndarray) -> dict[str, float]:
    return {"w2_to_test": exact_w2(generated, test), "energy_to_test": energy_distance(generated, test),
            "nn_to_train": _nearest_distance(generated, train_digits),
            "outside_unit": float(((generated < 0) | (generated > 1)).mean())}


def run_generate(out: str | Path | None = None, steps: int | None = None,
                 networks: Sequence[str] = tuple(GENERATE_NETWORKS), seed: int = 0, n_test: int = 300,
                 on_progress: ProgressFn | None = None, write_files: bool = True) -> ExperimentResult:
    """Train each network to generate digits from N(0, I_64); write generate.csv, loss.csv (means over
    ``LOSS_BIN`` steps), digits.png and summary.json to ``out``.

    ``steps`` overrides ``GENERATE_CONFIG.steps``; ``n_test`` digits are held out for the metrics and
    as many are generated.
    """
    unknown = [n for n in networks if n not in GENERATE_NETWORKS]
    if unknown:
        raise ValueError(f"unknown network {unknown[0]!r}; choose from {', '.join(GENERATE_NETWORKS)}")
    digits = load_digit_vectors()
    if not 2 <= n_test <= len(digits) // 2:
        raise ValueError(f"n_test must be between 2 and {len(digits) // 2}; got {n_test}")
    started = time.perf_counter()
    order = np.random.default_rng(seed).permutation(len(digits))
    test, train_digits = digits[order[:n_test]], digits[order[n_test:]]
    dim = digits.shape[1]
    source = Gaussian(np.zeros(dim), np.eye(dim))
    latent = source.sample(n_test, torch.Generator().manual_seed(seed + 1)).to(torch.float32)
    config = replace(GENERATE_CONFIG, seed=seed, **({} if steps is None else {"steps": steps}))
    tracker = ProgressTracker([config.steps] * len(networks), on_progress)

    rows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    generated: dict[str, np.ndarray] = {}
    for k, net in enumerate(networks):
        model = seeded_map(net, seed, dim=dim, **GENERATE_NETWORKS[net])
        result = train(model, source, train_digits, config, callback=tracker.callback(k, net))
        tracker.finish(k, net)
        with torch.no_grad():
            generated[net] = model(latent).double().numpy()
        rows.append({"network": net, "steps": result.steps, "stopped": result.stopped,
                     "final_w1_estimate": result.final_loss, "train_s": result.elapsed,
                     **_scores(generated[net], test, train_digits),
                     "parameters": sum(p.numel() for p in model.parameters())})
        history += [{"network": net, "step": s, "w1_estimate": v} for s, v in binned_history(result.history)]
    rng = np.random.default_rng(seed + 2)
    real = train_digits[rng.choice(len(train_digits), n_test, replace=False)]
    # Real digits: distances from training digits to the held-out ones, nearest-neighbour distance of
    # the held-out digits themselves (a training digit's own nearest neighbour would be itself).
    rows.append({"network": "real digits (floor)", "w2_to_test": exact_w2(real, test),
                 "energy_to_test": energy_distance(real, test), "nn_to_train": _nearest_distance(test, train_digits),
                 "outside_unit": 0.0})
    mean, cov = train_digits.mean(0), np.cov(train_digits, rowvar=False)
    gaussian = rng.multivariate_normal(mean, cov, n_test, method="eigh")
    rows.append({"network": "Gaussian fit (moments only)", **_scores(gaussian, test, train_digits)})

    summary = {"steps": config.steps, "seed": seed, "n_test": n_test, "n_train": len(train_digits),
               "w2_to_test": {r["network"]: r["w2_to_test"] for r in rows},
               "nn_to_train": {r["network"]: r["nn_to_train"] for r in rows},
               "train_s": {r["network"]: r["train_s"] for r in rows if "train_s" in r},
               "machine": machine_description()}
    files: list[Path] = []
    if write_files:
        folder = output_dir(out, "generate")
        files.append(write_csv(folder / "generate.csv", rows))
        files.append(write_csv(folder / "loss.csv", history))
        shown = GRID_COLUMNS * GRID_ROWS
        panels = [(f"{net} (W2 {r['w2_to_test']:.2f})", generated[net][:shown]) for net, r in zip(networks, rows)]
        panels += [("held-out digits", test[:shown]), ("Gaussian fit", gaussian[:shown])]
        files.append(digit_grid_png(folder / "digits.png", panels))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("generate", rows, summary, files, time.perf_counter() - started)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``generate`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--steps", type=int, default=None, help="training steps per network (default: 1000)")
    parser.add_argument("--networks", nargs="+", default=["C-MGN", "M-MGN", "ICNN"], choices=["C-MGN", "M-MGN", "ICNN"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and the held-out split")
    parser.add_argument("--n-test", type=int, default=300, help="held-out digits (and generated digits) for the metrics")


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``generate`` subcommand from parsed arguments."""
    return run_generate(args.out, steps=args.steps, networks=args.networks, seed=args.seed, n_test=args.n_test,
                        on_progress=on_progress)
