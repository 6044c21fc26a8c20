"""GPU timings: the closed-form/autograd step table, and steps per second of the paper and app presets.

    python benchmarks/gpu.py                     # needs CUDA; prints a note and exits without one
    python benchmarks/gpu.py --full              # also train the paper preset's 10000 steps end to end
    python benchmarks/gpu.py --device cpu --steps 20   # exercise the same code paths on the CPU
    python benchmarks/gpu.py --device cpu --only ops   # torch operations per step: a GPU step's host work

Four variants of the digit presets are timed: eager (what ``train`` does), the map's
``map_and_logdet`` under ``torch.compile`` in its default mode and in "reduce-overhead" mode (CUDA
graphs), and its forward and backward passes captured as they are in two CUDA graphs
(``torch.cuda.make_graphed_callables``; a GPU only). The compile or capture time is the first step's
extra seconds. The densities, the loss and the fused
optimiser stay eager: the image densities' bandwidth is a Python number that changes every step,
which a captured graph would freeze. ``train`` itself never synchronises with the GPU between
progress reports (every 0.25 s), so each timing below covers queued work up to the last step.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from _common import digit_densities, machine, seeded_model, table
from gradnet_core import train
from gradnet_core.presets import MODEL_PRESETS, train_preset
from step_speed import RATIO_CASES, STEP_BANDWIDTH, problem

VARIANTS = {"eager": None, "compile": "default", "compile + CUDA graphs": "reduce-overhead",
            "CUDA graphs of the network": "graphed"}


class _MapAndLogdet(torch.nn.Module):
    """A map's ``map_and_logdet`` as a module, so that ``torch.cuda.make_graphed_callables`` finds its parameters."""

    def __init__(self, model, method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x):
        return self.method(x)


def with_variant(model, mode, batch_size: int, device: str):
    """``model`` with its ``map_and_logdet`` (what ``train`` calls each step) compiled in ``mode``, or for "graphed"
    captured forward and backward in two CUDA graphs (``torch.cuda.make_graphed_callables``: the training-mode call
    at a fixed batch replays them; an evaluation-mode call runs eagerly)."""
    if mode == "graphed":
        if not device.startswith("cuda"):
            raise RuntimeError("CUDA graphs need a GPU")
        sample = torch.rand(batch_size, model.dim, device=device)
        model.map_and_logdet = torch.cuda.make_graphed_callables(_MapAndLogdet(model, model.map_and_logdet),
                                                                 (sample,))
    elif mode is not None:
        model.map_and_logdet = torch.compile(model.map_and_logdet, mode=mode)
    return model


def timed_train(model, source, target, config) -> float:
    """Wall seconds of one ``train`` call (it reads its losses back at the end, so the queue is drained)."""
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = train(model, source, target, config)
    if result.stopped != "completed":
        raise RuntimeError(f"benchmark run did not complete: {result.message}")
    return time.perf_counter() - start


def ratio_rows(device: str, steps: int, cases: int) -> list[list]:
    rows = []
    for label, network, kwargs, problem_name, preset in RATIO_CASES[:cases]:
        source, target = problem(problem_name)
        model = seeded_model(network, 0, **kwargs).to(device)
        base = train_preset(preset, device=device, report_seconds=3600.0, assess=False).with_objective(
            bandwidth_start=STEP_BANDWIDTH, bandwidth_end=STEP_BANDWIDTH)
        per_step = {}
        for jac in ("closed-form", "autograd"):
            config = base.with_objective(jacobian=jac)
            timed_train(model, source, target, replace(config, steps=3))                 # warm-up
            per_step[jac] = timed_train(model, source, target, replace(config, steps=steps)) / steps
        rows.append([label, 1e3 * per_step["closed-form"], 1e3 * per_step["autograd"],
                     f"{per_step['autograd'] / per_step['closed-form']:.1f}x"])
        print(f"  {label}: {rows[-1][1]:.2f} ms vs {rows[-1][2]:.2f} ms", flush=True)
    return rows


def preset_rows(device: str, steps: int, full: bool) -> list[list]:
    rows = []
    source, target = digit_densities()
    for preset in ("digits", "digits-paper"):
        network, kwargs = MODEL_PRESETS[preset]
        config = train_preset(preset, device=device, report_seconds=3600.0, assess=False)
        for variant, mode in VARIANTS.items():
            if mode is not None and not hasattr(torch, "compile"):
                continue
            model = seeded_model(network, 0, dim=2, **kwargs).to(device)    # no moves inside train()
            try:
                # train() calls model.map_and_logdet; the variant replaces it on this instance.
                model.train()
                start = time.perf_counter()
                model = with_variant(model, mode, config.batch_size, device)
                first = time.perf_counter() - start + timed_train(model, source, target, replace(config, steps=1))
                seconds = timed_train(model, source, target, replace(config, steps=steps))
            except Exception as err:                                       # compile unavailable here
                print(f"  {preset}, {variant}: failed ({type(err).__name__}: {err})", flush=True)
                continue
            rate = steps / seconds
            row = [preset, variant, first, rate, config.steps / rate]
            if full and mode in (None, "graphed") and preset == "digits-paper":
                model = seeded_model(network, 0, dim=2, **kwargs).to(device)
                model.train()
                start = time.perf_counter()
                model = with_variant(model, mode, config.batch_size, device)
                row[-1] = time.perf_counter() - start + timed_train(model, source, target, config)
            rows.append(row)
            print(f"  {preset}, {variant}: {rate:.1f} steps/s, first step {first:.1f} s", flush=True)
    return rows


def profile_rows(device: str, steps: int) -> list[list]:
    """Per step: wall ms, kernel launches, host-device syncs, summed kernel ms; and the busiest host ops."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    source, target = digit_densities()
    digits = train_preset("digits", device=device, report_seconds=3600.0, assess=False)
    cases = [("digits", "digits", digits), ("digits-paper", "digits-paper",
                                            train_preset("digits-paper", device=device, report_seconds=3600.0,
                                                         assess=False))]
    if digits.fallback is not None:
        cases.append(("digits, Sinkhorn phase", "digits",
                      replace(digits.fallback, device=device, report_seconds=3600.0, assess=False)))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    for label, preset, config in cases:
        network, kwargs = MODEL_PRESETS[preset]
        model = seeded_model(network, 0, dim=2, **kwargs).to(device)
        timed_train(model, source, target, replace(config, steps=20))               # warm-up
        wall = timed_train(model, source, target, replace(config, steps=steps)) / steps
        with profile(activities=activities) as prof:
            timed_train(model, source, target, replace(config, steps=steps))
        events = prof.key_averages()
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                            "cudaLaunchKernelExC", "cuLaunchKernelEx"))
        syncs = sum(e.count for e in events if "Synchronize" in e.key or e.key == "cudaMemcpy"
                    or e.key == "aten::item" or e.key == "aten::_local_scalar_dense")
        kernel_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events if e.device_type.name == "CUDA")
        rows.append([label, 1e3 * wall, launches / steps, syncs / steps, kernel_us / 1e3 / steps])
        print(f"  {label}: {1e3 * wall:.2f} ms/step, {launches / steps:.0f} launches, {syncs / steps:.1f} syncs,"
              f" kernels {kernel_us / 1e3 / steps:.2f} ms", flush=True)
        print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=48), flush=True)
    return rows


#: Operations that make a view of a tensor: no kernel runs for them.
VIEW_OPS = {"view", "_unsafe_view", "permute", "slice", "select", "unsqueeze", "squeeze", "expand", "transpose", "t",
            "detach", "alias", "unbind", "split", "as_strided", "unflatten", "flatten", "reshape", "lift_fresh"}


def ops_rows(device: str, steps: int) -> list[list]:
    """Per training step of the paper preset: the torch operations dispatched, all and those that run a kernel. On a
    GPU the host's time per step is about proportional to them (15-20 us each). On the CPU the fused kernels are
    switched off, so the count is of torch's path, which a GPU takes too, bar the CPU's exponent clamps."""
    import collections
    from torch.utils._python_dispatch import TorchDispatchMode
    from gradnet_core import _fused

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    source, target = digit_densities()
    network, kwargs = MODEL_PRESETS["digits-paper"]
    config = train_preset("digits-paper", device=device, report_seconds=3600.0, assess=False)
    model = seeded_model(network, 0, dim=2, **kwargs).to(device)
    counts = []
    with _fused.use(False):
        timed_train(model, source, target, replace(config, steps=3))                 # warm-up
        for n in (1, 1 + steps):                    # the difference is steps steps, without train's fixed work
            with Count() as count:
                timed_train(model, source, target, replace(config, steps=n))
            counts.append(count.ops)
    per_step = {k: (counts[1][k] - counts[0][k]) / steps for k in counts[1]}
    launching = sum(v for k, v in per_step.items() if k not in VIEW_OPS)
    print(f"  digits-paper: {sum(per_step.values()):.0f} operations a step, {launching:.0f} of them kernels",
          flush=True)
    return [["digits-paper", sum(per_step.values()), launching]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, ... or cpu for a dry run")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--full", action="store_true",
                        help="train the paper preset's 10000 steps (eager, and with the network in CUDA graphs)")
    parser.add_argument("--cases", type=int, default=len(RATIO_CASES), help="first N rows of the step table")
    parser.add_argument("--only", choices=("ratio", "presets", "profile", "ops"), help="print one table only")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA device here: nothing measured. Run this on a machine with a GPU.")
        return
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False      # full float32 matmuls, as on the CPU
    print(f"Machine: {machine()}; device {args.device}\n", flush=True)
    if args.only == "ops":
        print("Torch operations per training step (fused kernels off):", flush=True)
        print(table(["preset", "operations/step", "of them kernels"], ops_rows(args.device, args.steps)), flush=True)
        return
    if args.only not in ("presets", "profile"):
        print("Closed-form vs autograd, one training step:", flush=True)
        print(table(["configuration (batch 1000)", "closed-form ms", "autograd ms", "ratio"],
                    ratio_rows(args.device, args.steps, args.cases)) + "\n", flush=True)
    if args.only == "profile":
        print("Where a training step's time goes (torch.profiler):", flush=True)
        print(table(["run", "wall ms/step", "kernel launches/step", "syncs/step", "kernel ms/step"],
                    profile_rows(args.device, args.steps)), flush=True)
        return
    if args.only != "ratio":
        print("Digit presets, eager and compiled:", flush=True)
        print(table(["preset", "variant", "first step s", "steps/s", "preset wall s"],
                    preset_rows(args.device, args.steps, args.full)), flush=True)


if __name__ == "__main__":
    main()
