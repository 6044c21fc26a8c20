"""The experiments, in one registry: the command line's subcommands, the folders the saved-results
reader looks in and the headings the results page gives them all come from ``EXPERIMENTS``.

Adding an experiment: a module here with ``run_<name>(out=..., on_progress=...)``, ``add_arguments(parser)``
and ``run(args, on_progress)`` (the subcommand), and one entry below. One that trains through
``common.run_tasks`` says ``sweep=True`` and passes ``args.jobs`` and ``args.backend`` on. Nothing heavy
is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

__all__ = ["Experiment", "EXPERIMENTS"]


@dataclass(frozen=True)
class Experiment:
    """One experiment: where it lives, what it writes, how it is shown."""

    name: str                        # the subcommand, and the folder it writes by default (results/<name>/)
    module: str                      # its module in gradnet_core.experiments
    function: str                    # the library entry point in that module, e.g. "run_gaussian2d"
    description: str                 # one line, for --help
    title: str                       # heading of its saved run on the results page
    table: str                       # the CSV it writes, one row per run
    figures: tuple[str, ...]         # static figures, in the order a page shows them
    columns: tuple[str, ...]         # table columns the command line prints
    summary: str = "summary.json"    # the JSON summary the saved-results reader looks for
    variants: tuple[tuple[str, str], ...] = ()   # further results folders of the same command (--out), headings
    sweep: bool = False              # trains its runs through run_tasks: the command line adds --jobs and --backend

    @property
    def folders(self) -> tuple[tuple[str, str], ...]:
        """Results folders this experiment's saved runs live in, with their headings."""
        return ((self.name, self.title), *self.variants)

    def load(self) -> ModuleType:
        """Import the experiment's module (torch and friends come with it)."""
        return import_module(f"{__package__}.{self.module}")


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "gaussian2d", "gaussian2d", "run_gaussian2d",
        "paper Fig. 1: MLP, mGradNet-C/M and whitening on the 2-D Gaussian pair", "Fig. 1: saved run",
        "gaussian2d.csv", ("snapshots.png",),
        ("model", "stopped", "mse", "crossing_share", "order_reversal_share", "final_loss", "train_s")),
    Experiment(
        "highdim", "highdim", "run_highdim",
        "paper Fig. 2: Gaussian -> N(0, I) in d dimensions, authors' and our settings", "Fig. 2: every dimension",
        "highdim.csv", ("mse.png",),
        ("dim", "setting", "model", "seed", "stopped", "steps", "mse", "train_s"), sweep=True),
    Experiment(
        "digits-table", "digits_table", "run_digits_table",
        "paper Table I: MSE against the barycentric projection for digit pairs", "Table I: digit pairs",
        "digits_table.csv", ("heatmap.png",),
        ("source", "target", "mse", "paper_mse", "stopped", "train_s"),
        variants=(("digits-table-mnist", "Table I: digit pairs, real MNIST"),      # --mnist DIR
                  ("digits-table-paper-mnist", "Table I with the authors' settings, real MNIST")),  # --preset paper
        sweep=True),
    Experiment(
        "morph", "morph", "run_morph",
        "one digit pair: train, metrics, GIF of the morph, optionally save the map", "One morph",
        "morph.csv", ("morph.gif", "snapshots.png"),
        ("source", "target", "mse", "l2_uvp", "cosine", "stopped", "train_s")),
    Experiment(
        "gmm", "gmm", "run_gmm",
        "ICASSP 2023 example (docs/method.md §8.2): 2 -> 3 Gaussian mixture, C-MGN/M-MGN/ICNN, KL-moment, adversarial and Sinkhorn losses",
        "Gaussian mixture 2 -> 3, sample-only losses",
        "gmm.csv", ("gmm.png",),
        ("loss", "network", "stopped", "w2_to_target", "mse_vs_ot", "min_eigenvalue", "train_s")),
    Experiment(
        "generate", "generate", "run_generate",
        "ICASSP 2023 example (docs/method.md §8.4): monotone maps from N(0, I_64) to 8 x 8 digits, adversarial loss",
        "Digits generated from N(0, I_64)",
        "generate.csv", ("digits.png",),
        ("network", "stopped", "w2_to_test", "energy_to_test", "nn_to_train", "train_s")),
    Experiment(
        "flow", "flow", "run_flow",
        "constrained gradient flow vs Adam (KL, Monge-Ampere), four corners -> N(0, I)",
        "Constrained gradient flow against Adam",
        "flow_summary.csv", ("flow_maps.png",),
        ("method", "variant", "tau", "seed", "status", "energy_distance", "mse", "kl", "steps", "outer_steps"),
        summary="flow.json"),
    Experiment(
        "robustness", "robustness", "run_robustness",
        "the app's defaults on untuned digits, drawings, photos, mixtures and sample-only losses vs the exact OT map",
        "Robustness: untuned inputs against the exact OT map",
        "robustness.csv", ("robustness.png",),
        ("family", "metric", "threshold", "cases", "runs", "pass_share", "run_pass_share", "no_map", "noise",
         "train_cpu_s"), sweep=True),
)}
