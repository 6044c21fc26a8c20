"""Before/after: the same training steps with gradnet_core at another git revision and as checked out.

    python benchmarks/compare_revisions.py --base 9600ae8        # the library before the speed work
    python benchmarks/compare_revisions.py --base HEAD~3 --rounds 7

The base revision's ``gradnet_core`` is extracted with ``git archive`` into a temporary directory
and imported under another name, so both versions run in this process, interleaved round by round,
on the same initial weights, data seed and training settings (explicit settings, not presets, so
only the code differs). Reported: median wall and CPU milliseconds per step and the speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gradnet_core
from _common import digit_images, interleaved, machine, table

REPO = Path(__file__).resolve().parents[1]

#: label -> (network, constructor kwargs, problem, TrainConfig kwargs)
CASES: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
    "paper MNIST step (mGradNet-M 32 x 128, AdamW lr 1, clip 10)": (
        "mGradNet-M", {"dim": 2, "width": 128, "modules": 32}, "digits",
        {"lr": 1.0, "optimizer": "adamw", "weight_decay": 1e-4, "clip_grad": 10.0}),
    "same, autograd Jacobian (the authors' way)": (
        "mGradNet-M", {"dim": 2, "width": 128, "modules": 32}, "digits",
        {"lr": 1.0, "optimizer": "adamw", "weight_decay": 1e-4, "clip_grad": 10.0, "jacobian": "autograd"}),
    "digits, mGradNet-M 8 x 64, batch 500": (
        "mGradNet-M", {"dim": 2, "width": 64, "modules": 8}, "digits",
        {"lr": 1.0, "optimizer": "adamw", "weight_decay": 1e-4, "clip_grad": 10.0, "batch_size": 500}),
    "paper Gaussian, mGradNet-M 4 x 32 (Adam 1e-2)": (
        "mGradNet-M", {"dim": 2, "width": 32, "modules": 4}, "gaussian", {"lr": 1e-2}),
    "paper Gaussian, mGradNet-C 4 x 32 (Adam 1e-2)": (
        "mGradNet-C", {"dim": 2, "width": 32, "depth": 4}, "gaussian", {"lr": 1e-2}),
    "d=64 Gaussian, mGradNet-M 4 x 32 strict": (
        "mGradNet-M", {"dim": 64, "width": 32, "modules": 4, "strict": True}, "gaussian-64", {"lr": 1e-2}),
    "d=64 Gaussian, mGradNet-C 4 x 32 strict": (
        "mGradNet-C", {"dim": 64, "width": 32, "depth": 4, "strict": True}, "gaussian-64", {"lr": 1e-2}),
}

#: Kernel variance of the image densities while timing (the middle of the default schedule).
BANDWIDTH = 1e-3


def load_revision(revision: str, into: Path):
    """Import ``gradnet_core`` of ``revision`` as the package ``gradnet_core_base``."""
    archive = subprocess.run(["git", "archive", revision, "gradnet_core"], cwd=REPO, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "gradnet_core").rename(into / "gradnet_core_base")
    sys.path.insert(0, str(into))
    return importlib.import_module("gradnet_core_base")


def problem(lib, name: str):
    if name == "digits":
        src, tgt = digit_images()
        return lib.ImageDensity(src, bandwidth=BANDWIDTH), lib.ImageDensity(tgt, bandwidth=BANDWIDTH)
    if name == "gaussian":
        return (lib.Gaussian(np.array([1.0, -1.0]), np.array([[1.0, 0.7], [0.7, 1.0]])),
                lib.Gaussian(np.zeros(2), np.eye(2)))
    d = int(name.split("-")[1])
    rng = np.random.default_rng(1234)
    a = rng.standard_normal((d, d + 1))
    return lib.Gaussian(rng.standard_normal(d), a @ a.T / (d + 1) + 0.1 * np.eye(d)), lib.Gaussian(np.zeros(d), np.eye(d))


#: Settings that belong to the objective (``MongeAmpere``) since the single training loop; older
#: revisions took them as ``TrainConfig`` fields.
OBJECTIVE_SETTINGS = ("jacobian", "bandwidth_start", "bandwidth_end", "residual")


def make_config(lib, steps: int, settings: dict[str, Any]):
    """The same training settings as a TrainConfig of ``lib``, whichever API that revision has."""
    if not hasattr(lib, "MongeAmpere"):
        return lib.TrainConfig(steps=steps, device="cpu", report_seconds=3600.0, **settings)
    loop = {k: v for k, v in settings.items() if k not in OBJECTIVE_SETTINGS}
    objective = lib.MongeAmpere(**{k: v for k, v in settings.items() if k in OBJECTIVE_SETTINGS})
    extra = {"assess": False} if "assess" in {f.name for f in dataclasses.fields(lib.TrainConfig)} else {}
    return lib.TrainConfig(steps=steps, device="cpu", report_seconds=3600.0, objective=objective, **loop, **extra)


def runner(lib, network: str, kwargs: dict[str, Any], problem_name: str, settings: dict[str, Any],
           weights: dict[str, torch.Tensor]):
    model = lib.build_map(network, **kwargs)
    model.load_state_dict(weights)
    source, target = problem(lib, problem_name)
    extra = {"bandwidth_start": BANDWIDTH, "bandwidth_end": BANDWIDTH} if problem_name == "digits" else {}

    def run(steps: int) -> tuple[float, float]:
        # Every call from the same weights: a model trained on between calls changes what a step
        # costs (softmax blocks that saturate take the clamped path), differently on each side.
        model.load_state_dict(weights)
        config = make_config(lib, steps, {**settings, **extra})
        wall, cpu = time.perf_counter(), time.thread_time()
        result = lib.train(model, source, target, config)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if result.stopped != "completed":
            raise RuntimeError(result.message)
        return wall / steps, cpu / steps
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare with, e.g. 9600ae8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per timed call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    print(f"Machine: {machine()}\nbase {args.base} vs working tree at {head}\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = load_revision(args.base, Path(tmp))
        for label, (network, kwargs, problem_name, settings) in CASES.items():
            torch.manual_seed(0)
            weights = gradnet_core.build_map(network, **kwargs).state_dict()
            runs = {"base": runner(base, network, kwargs, problem_name, settings, weights),
                    "new": runner(gradnet_core, network, kwargs, problem_name, settings, weights)}
            t = interleaved(runs, args.rounds, args.budget)
            (bw, bc), (nw, nc) = (t["base"].wall, t["base"].cpu), (t["new"].wall, t["new"].cpu)
            rows.append([label, 1e3 * bw, 1e3 * nw, f"{bw / nw:.1f}x", 1e3 * bc, 1e3 * nc, f"{bc / nc:.1f}x"])
            print(f"  {label}: {1e3 * bw:.1f} -> {1e3 * nw:.1f} ms", flush=True)
    print("\n" + table(["training step (batch 1000 unless noted)", "base ms", "new ms", "speed-up (wall)",
                        "base CPU ms", "new CPU ms", "speed-up (CPU)"], rows))
    print(f"\nLoad average at the end: {machine().rsplit('load average', 1)[1].strip()}")


if __name__ == "__main__":
    main()
