"""Reproductions of the GradNetOT paper's experiments (reference sheet §7), one module each.

Run them with ``python -m gradnet_core.experiments SUBCOMMAND`` or call the functions:
``run_gaussian2d`` (Fig. 1), ``run_highdim`` (Fig. 2), ``run_digits_table`` (Table I) and
``run_morph`` (one digit pair). Each returns an ``ExperimentResult`` and writes CSV, PNG and HTML.
Imports are lazy: plotting, POT and scipy load only when an experiment runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "ExperimentResult", "RunProgress",
    "run_gaussian2d", "segment_crossings", "crossing_share", "order_reversal_share",
    "run_highdim", "highdim_problem",
    "run_digits_table", "digit_pair_images", "digit_pair_metrics",
    "run_morph",
    "run_gmm", "run_generate",
    "PAPER_TABLE_I", "paper_table_value", "paper_table_median",
]

_HOME = {
    "ExperimentResult": "common", "RunProgress": "common",
    "run_gaussian2d": "gaussian2d", "segment_crossings": "gaussian2d", "crossing_share": "gaussian2d",
    "order_reversal_share": "gaussian2d",
    "run_highdim": "highdim", "highdim_problem": "highdim",
    "run_digits_table": "digits_table", "digit_pair_images": "digits_table", "digit_pair_metrics": "digits_table",
    "run_morph": "morph",
    "run_gmm": "gmm", "run_generate": "generate",
    "PAPER_TABLE_I": "paper", "paper_table_value": "paper", "paper_table_median": "paper",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
