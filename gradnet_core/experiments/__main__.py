"""``python -m gradnet_core.experiments SUBCOMMAND``: reproduce the GradNetOT paper's figures and tables.

Subcommands: gaussian2d (Fig. 1), highdim (Fig. 2), digits-table (Table I), morph (one digit pair),
gmm (the seed slides' 2 -> 3 mixture with sample-only losses), generate (digits from N(0, I_64)),
flow (the constrained gradient flow against Adam at equal time, issue 8).
Each writes CSV, PNG and HTML to ``--out`` (default ``results/SUBCOMMAND/``), shows a progress bar
on stderr, prints a short summary, and with ``--json`` prints one JSON line last on stdout.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gradnet_core.experiments",
        description="Reproduce the GradNetOT paper's figures and tables (reference sheet §7).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", default=None, help="output folder (default: results/SUBCOMMAND/)")
        p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
        p.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's choice; 1 is often faster on a busy machine)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("gaussian2d", help="paper Fig. 1: MLP, mGradNet-C/M and whitening on the 2-D Gaussian pair")
    common(p)
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default: the authors' 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and test samples")
    p.add_argument("--n-test", type=int, default=1000, help="test samples for the MSE")
    p.add_argument("--n-paths", type=int, default=300, help="trajectories for the crossing counts")

    p = sub.add_parser("highdim", help="paper Fig. 2: Gaussian -> N(0, I) in d dimensions, authors' and our settings")
    common(p)
    p.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128], help="dimensions")
    p.add_argument("--steps", type=int, nargs="+", default=[1000],
                   help="training steps: one number, or one per dimension (default: the authors' 1000)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the random problems (paper: 1234)")
    p.add_argument("--model-seed", type=int, default=0, help="seed of the weights and batches of the first run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1],
                   help="initial weights to train from per network and d (median reported): one number, or "
                        "one per dimension")
    p.add_argument("--n-test", type=int, default=1000, help="test samples for the MSE")
    p.add_argument("--settings", nargs="+", default=["authors", "ours"], choices=["authors", "ours"])
    p.add_argument("--models", nargs="+", default=["mGradNet-C", "mGradNet-M"], choices=["mGradNet-C", "mGradNet-M"])
    p.add_argument("--jobs", type=int, default=1, help="trainings to run at once, in worker processes")

    p = sub.add_parser("digits-table", help="paper Table I: MSE against the barycentric projection for digit pairs")
    common(p)
    p.add_argument("--digits", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="digits; all ordered pairs run")
    p.add_argument("--preset", choices=["fast", "paper"], default="fast",
                   help='"fast": the app\'s digits preset; "paper": 32 modules x 128, 10000 steps, AdamW lr 1')
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--mnist", default=None, metavar="DIR",
                   help="folder with MNIST's train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    p.add_argument("--pairs", nargs="+", default=None, metavar="A-B",
                   help="run only these ordered pairs, e.g. 0-4 3-1 (default: all pairs of --digits)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and test samples")
    p.add_argument("--n-test", type=int, default=1000, help="samples for the barycentric projection")
    p.add_argument("--jobs", type=int, default=1, help="pairs to train at once, in worker processes")

    p = sub.add_parser("morph", help="one digit pair: train, metrics, GIF of the morph, optionally save the map")
    common(p)
    p.add_argument("--source", default="0", help="a digit 0-9 (bundled example 0, or MNIST with --mnist) or an image path")
    p.add_argument("--target", default="4", help="a digit 0-9 (bundled example 1, or MNIST with --mnist) or an image path")
    p.add_argument("--preset", choices=["fast", "paper"], default="fast")
    p.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    p.add_argument("--mnist", default=None, metavar="DIR", help="read digits from MNIST IDX files in DIR")
    p.add_argument("--save", default=None, metavar="PATH", help="save the trained map (safetensors) here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=1000, help="samples for the barycentric projection")

    p = sub.add_parser("gmm", help="seed slides: 2 -> 3 Gaussian mixture, C-MGN/M-MGN/ICNN, KL-moment, adversarial and Sinkhorn losses")
    common(p)
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run (default: 1000 KL, 1500 adversarial, 500 Sinkhorn)")
    p.add_argument("--losses", nargs="+", default=["gaussian-kl", "wasserstein", "sinkhorn"],
                   choices=["gaussian-kl", "wasserstein", "sinkhorn"], help="sample-only losses to compare")
    p.add_argument("--networks", nargs="+", default=["C-MGN", "M-MGN", "ICNN"], choices=["C-MGN", "M-MGN", "ICNN"])
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and test samples")
    p.add_argument("--n-test", type=int, default=1000, help="test and target samples for W2 and the OT map")

    p = sub.add_parser("generate", help="seed slides: monotone maps from N(0, I_64) to 8 x 8 digits, adversarial loss")
    common(p)
    p.add_argument("--steps", type=int, default=None, help="training steps per network (default: 1000)")
    p.add_argument("--networks", nargs="+", default=["C-MGN", "M-MGN", "ICNN"], choices=["C-MGN", "M-MGN", "ICNN"])
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and the held-out split")
    p.add_argument("--n-test", type=int, default=300, help="held-out digits (and generated digits) for the metrics")

    p = sub.add_parser("flow", help="constrained gradient flow vs Adam (KL, Monge-Ampere), four corners -> N(0, I)")
    common(p)
    from .flow import add_arguments as flow_arguments
    flow_arguments(p)
    return parser


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


def _parse_pairs(pairs: Sequence[str] | None) -> list[tuple[int, int]] | None:
    if pairs is None:
        return None
    parsed = []
    for text in pairs:
        try:
            a, b = text.split("-")
            parsed.append((int(a), int(b)))
        except ValueError:
            raise ValueError(f"a pair is written SOURCE-TARGET, e.g. 0-4; got {text!r}") from None
    return parsed


def _run(args: argparse.Namespace, bar: _Bar):
    if args.command == "gaussian2d":
        from .gaussian2d import run_gaussian2d
        return run_gaussian2d(args.out, steps=args.steps, seed=args.seed, n_test=args.n_test,
                              n_paths=args.n_paths, on_progress=bar)
    if args.command == "highdim":
        from .highdim import run_highdim
        return run_highdim(args.out, dims=args.dims, steps=args.steps, seed=args.seed, model_seed=args.model_seed,
                           n_test=args.n_test, settings=args.settings, on_progress=bar, jobs=args.jobs,
                           seeds=args.seeds, models=args.models)
    if args.command == "digits-table":
        from .digits_table import run_digits_table
        return run_digits_table(args.out, digits=args.digits, preset=args.preset, steps=args.steps,
                                mnist=args.mnist, pairs=_parse_pairs(args.pairs), seed=args.seed,
                                n_test=args.n_test, on_progress=bar, jobs=args.jobs)
    if args.command == "gmm":
        from .gmm import run_gmm
        return run_gmm(args.out, steps=args.steps, losses=args.losses, networks=args.networks, seed=args.seed,
                       n_test=args.n_test, on_progress=bar)
    if args.command == "generate":
        from .generate import run_generate
        return run_generate(args.out, steps=args.steps, networks=args.networks, seed=args.seed, n_test=args.n_test,
                            on_progress=bar)
    if args.command == "flow":
        from .flow import run as run_flow_command
        return run_flow_command(args, on_progress=bar)
    from .morph import run_morph
    return run_morph(args.source, args.target, args.out, preset=args.preset, steps=args.steps, mnist=args.mnist,
                     save=args.save, seed=args.seed, n_test=args.n_test, on_progress=bar)


def _print_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    shown = [c for c in columns if any(c in r for r in rows)]
    print("  ".join(f"{c:>14}" for c in shown))
    for r in rows:
        cells = []
        for c in shown:
            v = r.get(c, "")
            cells.append(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}")
        print("  ".join(cells))


_COLUMNS = {
    "gaussian2d": ["model", "stopped", "mse", "crossing_share", "order_reversal_share", "final_loss", "train_s"],
    "highdim": ["dim", "setting", "model", "seed", "stopped", "steps", "mse", "train_s"],
    "digits-table": ["source", "target", "mse", "paper_mse", "stopped", "train_s"],
    "morph": ["source", "target", "mse", "l2_uvp", "cosine", "stopped", "train_s"],
    "gmm": ["loss", "network", "stopped", "w2_to_target", "mse_vs_ot", "min_eigenvalue", "train_s"],
    "generate": ["network", "stopped", "w2_to_test", "energy_to_test", "nn_to_train", "train_s"],
    "flow": ["method", "variant", "tau", "seed", "status", "energy_distance", "mse", "kl", "steps", "outer_steps"],
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print("error: --threads must be at least 1", file=sys.stderr)
            return 2
        import torch
        torch.set_num_threads(args.threads)
    bar = _Bar(enabled=not args.no_progress)
    try:
        result = _run(args, bar)
    except (ValueError, OSError) as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar.close()
    _print_rows(result.rows, _COLUMNS[args.command])
    print(f"{args.command}: {result.elapsed:.1f} s; files in {result.files[0].parent if result.files else '-'}")
    if args.json:
        print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
