"""Training-step speed: closed-form vs autograd Jacobian, and steps per second of every preset.

    python benchmarks/step_speed.py                    # both tables, 1 thread, 5 rounds
    python benchmarks/step_speed.py --only ratio       # closed-form vs autograd only
    python benchmarks/step_speed.py --threads 2 --rounds 7

One step is everything ``train`` does per step: draw the batch, log p, the map and its log det,
log q(T(x)), the loss, backward, gradient clipping where the preset has it, the optimiser step.
The closed-form and autograd paths (``MongeAmpere(jacobian="autograd")``: vmap of jacrev, then
slogdet, the GradNetOT authors' way) train the same model, interleaved round by round; each figure
is the median over rounds, in wall and CPU seconds per step.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from _common import (digit_densities, interleaved, machine, seeded_model, table, time_train,
                     with_steps)
from gradnet_core.experiments.highdim import highdim_problem
from gradnet_core.experiments.gaussian2d import paper_gaussian_pair
from gradnet_core.presets import MODEL_PRESETS, mixture_presets, train_preset

#: (label, network, constructor arguments, problem, training preset) for the closed-form/autograd table.
RATIO_CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("paper MNIST: mGradNet-M 32 x 128, d=2", "mGradNet-M", {"dim": 2, "width": 128, "modules": 32},
     "digits", "digits-paper"),
    *[(f"mGradNet-{kind} 4 x 32, d={d}", f"mGradNet-{kind}",
       {"dim": d, "width": 32, ("depth" if kind == "C" else "modules"): 4, "strict": d > 32},
       f"gaussian-{d}", "gaussian")
      for d in (2, 16, 64) for kind in ("C", "M")],
]

#: Bandwidth of the image densities while timing single steps: the middle of the default schedule.
STEP_BANDWIDTH = 1e-3


def problem(name: str):
    if name == "digits":
        return digit_densities(STEP_BANDWIDTH)
    if name.startswith("gaussian-"):
        return highdim_problem(int(name.split("-")[1]))
    raise ValueError(name)


def ratio_table(rounds: int, budget: float) -> str:
    rows = []
    for label, network, kwargs, problem_name, preset in RATIO_CASES:
        source, target = problem(problem_name)
        model = seeded_model(network, 0, **kwargs)
        base = train_preset(preset, device="cpu").with_objective(bandwidth_start=STEP_BANDWIDTH,
                                                                 bandwidth_end=STEP_BANDWIDTH)
        configs = {jac: base.with_objective(jacobian=jac) for jac in ("closed-form", "autograd")}
        runs = {jac: (lambda steps, c=c: time_train(model, source, target, with_steps(c, steps)))
                for jac, c in configs.items()}
        t = interleaved(runs, rounds, budget)
        closed, auto = t["closed-form"], t["autograd"]
        rows.append([label, 1e3 * closed.wall, 1e3 * auto.wall, f"{auto.wall / closed.wall:.1f}x",
                     1e3 * closed.cpu, 1e3 * auto.cpu, f"{auto.cpu / closed.cpu:.1f}x"])
        print(f"  {label}: closed {1e3 * closed.wall:.1f} ms, autograd {1e3 * auto.wall:.1f} ms", flush=True)
    return table(["configuration (batch 1000)", "closed-form ms", "autograd ms", "ratio (wall)",
                  "closed-form CPU ms", "autograd CPU ms", "ratio (CPU)"], rows)


def preset_cases() -> dict[str, tuple[str, dict[str, Any], Any, Any, str]]:
    """Preset label -> (network, kwargs, source, target, training preset)."""
    gaussian = paper_gaussian_pair()
    mixture = next(iter(mixture_presets().values()))
    digits = digit_densities()
    highdim = highdim_problem(64)
    cases = {
        "gaussian": (*MODEL_PRESETS["gaussian"], *gaussian, "gaussian"),
        "mixture": (*MODEL_PRESETS["mixture"], *mixture, "mixture"),
        "digits": (*MODEL_PRESETS["digits"], *digits, "digits"),
        "digits-paper": (*MODEL_PRESETS["digits-paper"], *digits, "digits-paper"),
        "highdim d=64 (mGradNet-M 4 x 32, strict)": ("mGradNet-M", {"width": 32, "modules": 4, "strict": True},
                                                    *highdim, "gaussian"),
    }
    return {label: (net, {"dim": src.dim, **kw}, src, tgt, preset) for label, (net, kw, src, tgt, preset) in cases.items()}


def preset_table(rounds: int, budget: float) -> str:
    rows = []
    for label, (network, kwargs, source, target, preset) in preset_cases().items():
        model = seeded_model(network, 0, **kwargs)
        base = train_preset(preset, device="cpu")
        t = interleaved({label: lambda steps: time_train(model, source, target, with_steps(base, steps))},
                        rounds, budget)[label]
        full = train_preset(preset).steps
        rows.append([label, base.batch_size, 1.0 / t.wall, 1.0 / t.cpu, full, full * t.wall])
        print(f"  {label}: {1.0 / t.wall:.1f} steps/s", flush=True)
    return table(["preset", "batch", "steps/s (wall)", "steps/s (CPU)", "preset steps", "preset wall s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per timed call (sets its steps)")
    parser.add_argument("--only", choices=("ratio", "presets"), help="print one table only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}\n", flush=True)
    if args.only != "presets":
        print("Closed-form vs autograd, one training step (median of interleaved rounds):", flush=True)
        print(ratio_table(args.rounds, args.budget) + "\n", flush=True)
    if args.only != "ratio":
        print("Steps per second of each preset (its own training settings):", flush=True)
        print(preset_table(args.rounds, args.budget) + "\n", flush=True)
    print(f"Load average at the end: {machine().rsplit('load average', 1)[1].strip()}")


if __name__ == "__main__":
    main()
