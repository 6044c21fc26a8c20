"""The density pictures' cost: each picture the results panel computes for a trained 2-D map.

    python benchmarks/pictures.py                  # 5 rounds, one thread
    python benchmarks/pictures.py --rounds 3 --problems digits

For each problem a map is trained once with the page's preset (the paper-sized digit network for a
few hundred steps only: its pictures cost the same whatever it learned), then every picture is
computed ``--rounds`` times, the pictures interleaved within a round. Reported: median wall and CPU
seconds of this thread, with the range over rounds. Pictures, as the app computes them
(``studio.problems``, docs/method.md §2.7):

* **morph**: the exact density of x_t at 30 times on a 100 x 100 grid (its last frame is T#p, so the
  "Pushforward vs target" view reuses it);
* **pushforward alone**: T#p on the same grid by an 8-step continuation, for a caller that wants only it;
* **residual**: the Monge–Ampère residual on a 100 x 100 grid over the source;
* **morph back**: T^-1 at the reference's 1000 target samples;
* **figure** and **GIF**: the morph as a Plotly figure (to JSON, what is sent to the browser) and as a GIF.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from _common import machine, table

from gradnet_core import ImageDensity, presets, seeded_map, train
from gradnet_core.images import load_bundled
from gradnet_core.plotting import density_morph_figure, density_morph_gif
from gradnet_core.pushforward import pushforward_density

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from studio.problems import (PICTURE_FRAMES, PICTURE_RESOLUTION, Problem, compute_reference,  # noqa: E402
                             density_morph_of, morph_back, residual_of)


def _problem(name: str) -> tuple[Problem, str, str, dict[str, Any], int | None]:
    """(problem, training preset, network, architecture, steps or None for the preset's)."""
    if name.startswith("digits"):
        bandwidth = presets.TRAIN_PRESETS["digits"].objective.bandwidth_end
        source, target = (ImageDensity(load_bundled(d, i), bandwidth=bandwidth) for d, i in ((0, 0), (4, 1)))
        problem = Problem("bench", source, target, truth="barycentric", samples=1000)
        if name == "digits-paper":
            return problem, "digits", "mGradNet-M", {"width": 128, "modules": 32}, 200
        return problem, "digits", *presets.MODEL_PRESETS["digits"], None
    if name == "gaussian":
        source, target = next(iter(presets.gaussian_presets().values()))      # the page's first preset
        return Problem("bench", source, target, truth="gaussian", samples=1000), "gaussian", \
            *presets.MODEL_PRESETS["gaussian"], None
    source, target = next(iter(presets.mixture_presets().values()))           # the page's default, 2 -> 3
    return Problem("bench", source, target, truth="barycentric", samples=1000), "mixture", \
        *presets.MODEL_PRESETS["mixture"], None


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--problems", nargs="+", default=["digits", "digits-paper", "gaussian", "mixture"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    rows = []
    for name in args.problems:
        problem, preset, network, arch, steps = _problem(name)
        config = presets.train_preset(preset, **({} if steps is None else {"steps": steps}))
        model = train(seeded_map(network, 0, dim=2, **arch), problem.source, problem.target, config).map
        reference = compute_reference(problem)
        with torch.no_grad():
            mapped = model(torch.as_tensor(reference.points, dtype=torch.float32)).double().numpy()
        run = SimpleNamespace(model=model, mapped=mapped)
        morph = density_morph_of(reference, run)
        pictures: dict[str, Callable[[], Any]] = {
            "morph (30 frames)": lambda: density_morph_of(reference, run),
            "pushforward alone": lambda: pushforward_density(model, reference.source, morph.grid),
            "residual": lambda: residual_of(reference, run),
            "morph back": lambda: morph_back(reference, run),
            "morph figure + JSON": lambda: density_morph_figure(morph, (reference.points, reference.mapped)).to_json(),
            "morph GIF": lambda: density_morph_gif(morph),
        }
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in pictures}
        for _ in range(args.rounds):
            for key, fn in pictures.items():
                times[key].append(_timed(fn))
        for key, samples in times.items():
            walls, cpus = [w for w, _ in samples], [c for _, c in samples]
            rows.append([name, f"{network} {'x'.join(str(v) for v in arch.values())}", key,
                         f"{statistics.median(walls):.3f} [{min(walls):.3f}–{max(walls):.3f}]",
                         f"{statistics.median(cpus):.3f}"])
        print(f"{name}: unsolved grid points at t = 1: {morph.unsolved[-1]}", flush=True)
    print(f"\nGrid {PICTURE_RESOLUTION} x {PICTURE_RESOLUTION}, {PICTURE_FRAMES} frames, one thread, "
          f"{args.rounds} rounds; seconds, median [range]\n")
    print(table(["problem", "network", "picture", "wall s", "CPU s"], rows))


if __name__ == "__main__":
    main()
