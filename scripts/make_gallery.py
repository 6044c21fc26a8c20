"""Build ``assets/gallery/``: the app's instant demos, maps trained in advance with the pages' own presets.

One small ``.safetensors`` file per demo (``save_map``: weights and a JSON description, no pickle): the
paper's 2-D Gaussian, each mixture preset, and MNIST digit pairs. Each problem is built exactly as its
page builds it from the demo's inputs (``studio.inputs`` sets those inputs when the demo is opened),
trained with the page's default network, preset and objective, seed 0, on one thread. Deterministic up to
floating-point summation order; takes about a minute.

Run from the repository root:  python scripts/make_gallery.py [STEM ...]
(with stems, e.g. ``mixtures-0 mixtures-1``, only those demos are trained again and the others kept)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradnet_core import ImageDensity, presets, save_map, seeded_map, train  # noqa: E402
from gradnet_core.images import load_bundled  # noqa: E402
from studio.gallery import GALLERY_DIR  # noqa: E402
from studio.inputs import GAUSSIAN_SAMPLES, TRUTH_SAMPLES  # noqa: E402
from studio.problems import Problem, gaussian_from_row, gaussian_row, mixture_from_table  # noqa: E402

#: (file stem, page, title, inputs): the page inputs that set each demo's problem up.
DEMOS = [
    ("gaussians-paper", "gaussians", "The paper's Gaussian: N([1, -1], [[1, .7], [.7, 1]]) to N(0, I)",
     {"preset": next(iter(presets.gaussian_presets()))}),
    *[(f"mixtures-{i}", "mixtures", name, {"preset": name}) for i, name in enumerate(presets.MIXTURE_ROWS)],
    *[(f"digits-{a}-{b}", "digits", f"MNIST {a} to {b}", {"set": "mnist", "source": [a, 0], "target": [b, 1]})
      for a, b in ((0, 4), (1, 7), (3, 8), (2, 5))],
]
PRESET_OF_PAGE = {"gaussians": "gaussian", "mixtures": "mixture", "digits": "digits"}


def problem_of(page: str, inputs: dict) -> Problem:
    """The problem the page builds from these inputs (studio.inputs)."""
    if page == "gaussians":
        source, target = presets.gaussian_presets()[inputs["preset"]]
        return Problem(page, gaussian_from_row(gaussian_row(source)), gaussian_from_row(gaussian_row(target)),
                       truth="gaussian", samples=GAUSSIAN_SAMPLES)
    if page == "mixtures":
        source_rows, target_rows = presets.MIXTURE_ROWS[inputs["preset"]]
        return Problem(page, mixture_from_table(source_rows, "source")[0], mixture_from_table(target_rows, "target")[0],
                       truth="barycentric", samples=TRUTH_SAMPLES[1])
    bandwidth = presets.TRAIN_PRESETS["digits"].objective.bandwidth_end
    source, target = (ImageDensity(load_bundled(*inputs[side], collection=inputs["set"]), bandwidth=bandwidth)
                      for side in ("source", "target"))
    return Problem(page, source, target, truth="barycentric", samples=TRUTH_SAMPLES[1])


def main(stems: list[str]) -> None:
    known = [demo[0] for demo in DEMOS]
    unknown = [stem for stem in stems if stem not in known]
    if unknown:
        raise SystemExit(f"no demo {unknown[0]!r}; the demos are {', '.join(known)}")
    torch.set_num_threads(1)
    GALLERY_DIR.mkdir(parents=True, exist_ok=True)
    if not stems:
        for old in GALLERY_DIR.glob("*.safetensors"):
            old.unlink()
    for stem, page, title, inputs in DEMOS:
        if stems and stem not in stems:
            continue
        problem = problem_of(page, inputs)
        preset = PRESET_OF_PAGE[page]
        network, arch = presets.MODEL_PRESETS[preset]
        objective = presets.MIXTURE_OBJECTIVES[0] if page == "mixtures" else presets.DEFAULT_OBJECTIVE
        config = presets.train_preset(preset, **presets.objective_overrides(objective, preset))
        model = seeded_map(network, 0, dim=2, **arch)
        started = time.perf_counter()
        result = train(model, problem.source, problem.target, config)
        path = GALLERY_DIR / f"{stem}.safetensors"
        save_map(result.map, path, extra={"network": network, **arch, "objective_label": objective,
                                     "training": config.to_dict(), "problem": problem.describe(),
                                     "demo": {"page": page, "title": title, "inputs": inputs}})
        print(f"{path.name}: {result.message} ({time.perf_counter() - started:.1f} s, {path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
