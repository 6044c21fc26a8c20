"""Shared helpers of the benchmarks: problems, timing, the machine's description, table printing.

Timings on a shared machine are noisy, so every figure is a median over rounds, the paths being
compared are interleaved within a round, and CPU time of this thread is reported beside wall time
(other processes on the same cores inflate wall time but much less the CPU time of this thread).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from gradnet_core import ImageDensity, TrainConfig, build_map, train
from gradnet_core.densities import Density
from gradnet_core.networks import TransportMap

#: The fixed digit pair of the benchmarks, as the authors pair MNIST images: the first bundled
#: example of the source digit and the second of the target digit (docs/method.md §7).
DIGIT_PAIR = ((0, 0), (4, 1))


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The two 28 x 28 images of ``DIGIT_PAIR`` (bundled assets, float32)."""
    from gradnet_core.images import load_bundled

    (a, i), (b, j) = DIGIT_PAIR
    return load_bundled(a, i).astype(np.float32), load_bundled(b, j).astype(np.float32)


def digit_densities(bandwidth: float = 1e-4) -> tuple[ImageDensity, ImageDensity]:
    src, tgt = digit_images()
    return ImageDensity(src, bandwidth=bandwidth), ImageDensity(tgt, bandwidth=bandwidth)


def seeded_model(name: str, seed: int, **kwargs: Any) -> TransportMap:
    torch.manual_seed(seed)
    return build_map(name, **kwargs)


@dataclass
class Timing:
    wall: float        # seconds per step, median over rounds
    cpu: float         # CPU seconds of this thread per step, median over rounds


def time_train(model: TransportMap, source: Density, target: Density, config: TrainConfig) -> tuple[float, float]:
    """Wall and CPU seconds per step of one ``train`` call (``config.steps`` steps)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    result = train(model, source, target, config)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    if result.stopped != "completed":
        raise RuntimeError(f"benchmark run did not complete: {result.message}")
    return wall / config.steps, cpu / config.steps


def steps_for(seconds_per_step: float, budget: float, lo: int = 2, hi: int = 200) -> int:
    """How many steps fill about ``budget`` seconds."""
    return int(min(hi, max(lo, round(budget / max(seconds_per_step, 1e-6)))))


def interleaved(runs: dict[str, Callable[[int], tuple[float, float]]], rounds: int,
                budget: float) -> dict[str, Timing]:
    """Median per-step timing of each run, the runs interleaved round by round.

    ``runs[name](steps) -> (wall, cpu)`` seconds per step. A first short call per run warms it up
    and sizes the later calls to about ``budget`` seconds each. Odd rounds run the runs in reverse
    order, so that neither side always follows the other (whose allocations and cache it inherits).
    """
    sizes = {name: steps_for(run(2)[0], budget) for name, run in runs.items()}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for k in range(rounds):
        for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
            samples[name].append(runs[name](sizes[name]))
    return {name: Timing(statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in samples.items()}


def with_steps(config: TrainConfig, steps: int, **overrides: Any) -> TrainConfig:
    # Steps only: no verdict after training (it would add a fixed ~0.1 s to every timed call).
    return replace(config, steps=steps, report_seconds=3600.0, assess=False, **overrides)


def machine() -> str:
    """One paragraph: CPU, cores, torch, threads, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} logical cores; torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op thread(s); GPU: {cuda}; load average (1/5/15 min) {load}")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
