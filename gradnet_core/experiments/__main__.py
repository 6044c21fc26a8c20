"""``python -m gradnet_core.experiments SUBCOMMAND``: reproduce the GradNetOT paper's figures and tables.

Subcommands: the entries of ``EXPERIMENTS`` (``registry.py``): gaussian2d (Fig. 1), highdim (Fig. 2),
digits-table (Table I), morph (one digit pair), gmm (the ICASSP 2023 2 -> 3 mixture with sample-only
losses), generate (digits from N(0, I_64)), flow (the constrained gradient flow against Adam, issue 8).
Each writes CSV, PNG and HTML to ``--out`` (default ``results/SUBCOMMAND/``), shows a progress bar
on stderr, prints a short summary, and with ``--json`` prints one JSON line last on stdout. The sweeps
(``Experiment.sweep``) take ``--jobs`` and ``--backend``: worker processes here, or Ray tasks on the
cluster at RAY_ADDRESS (the default when it is set).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Sequence

from .registry import EXPERIMENTS

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per entry of ``EXPERIMENTS``; each experiment's module adds its own options."""
    parser = argparse.ArgumentParser(
        prog="python -m gradnet_core.experiments",
        description="Reproduce the GradNetOT paper's figures and tables (docs/method.md §7).",
        epilog=f"{', '.join(e.name for e in EXPERIMENTS.values() if e.sweep)} take --jobs and --backend: worker "
               "processes here, or Ray tasks (--backend ray; the default when RAY_ADDRESS names a Ray cluster).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for experiment in EXPERIMENTS.values():
        p = sub.add_parser(experiment.name, help=experiment.description)
        p.add_argument("--out", default=None, help=f"output folder (default: results/{experiment.name}/)")
        p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
        p.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads per process (default 1, one per training job: these small "
                            "steps gain little from more and lose much on a busy machine; --jobs runs "
                            "processes side by side)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        experiment.load().add_arguments(p)
        if experiment.sweep:
            _add_sweep_arguments(p)
    return parser


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how many trainings run at once: the same options for every experiment that sweeps."""
    from .common import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default="ray" if os.environ.get("RAY_ADDRESS") else "local",
                        help="where the trainings run: 'local', worker processes on this machine; 'ray', Ray "
                             "tasks on the cluster at RAY_ADDRESS, or on a Ray instance started for this run when "
                             "RAY_ADDRESS is not set (pip install -r requirements-ray.txt). Default: ray when "
                             "RAY_ADDRESS is set, otherwise local")
    parser.add_argument("--jobs", type=int, default=None,
                        help="trainings to run at once (default: 1 locally; on Ray, as many as the cluster has "
                             "CPUs for, --threads each)")


class _Bar:
    """A tqdm bar over all training steps of an experiment, fed by ``RunProgress`` reports."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, report) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=report.total, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_description(f"[{report.run + 1}/{report.runs}] {report.label}", refresh=False)
        if report.loss is not None and math.isfinite(report.loss):
            self.bar.set_postfix(loss=f"{report.loss:.4g}", refresh=False)
        self.bar.update(report.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    shown = [c for c in columns if any(c in r for r in rows)]
    print("  ".join(f"{c:>14}" for c in shown))
    for r in rows:
        cells = []
        for c in shown:
            v = r.get(c, "")
            cells.append(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}")
        print("  ".join(cells))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    import torch
    torch.set_num_threads(args.threads)
    if EXPERIMENTS[args.command].sweep and args.jobs is None and args.backend == "local":
        args.jobs = 1        # one at a time, in this process; Ray decides for itself how many at once
    bar = _Bar(enabled=not args.no_progress)
    try:
        result = EXPERIMENTS[args.command].load().run(args, on_progress=bar)
    except (ValueError, OSError) as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar.close()
    _print_rows(result.rows, EXPERIMENTS[args.command].columns)
    print(f"{args.command}: {result.elapsed:.1f} s; files in {result.files[0].parent if result.files else '-'}")
    if args.json:
        print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
