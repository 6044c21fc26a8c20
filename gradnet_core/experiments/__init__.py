"""Reproductions of the GradNetOT paper's experiments (docs/method.md §7), one module each.

``EXPERIMENTS`` (``registry.py``) lists them: the command line ``python -m gradnet_core.experiments
SUBCOMMAND``, the saved-results reader (``saved.load_saved``) and the app's Paper results page read it.
Or call the functions: ``run_gaussian2d`` (Fig. 1), ``run_highdim`` (Fig. 2), ``run_digits_table``
(Table I), ``run_morph`` (one digit pair), ... Each returns an ``ExperimentResult`` and writes CSV, PNG
and HTML. Imports are lazy: torch, plotting, POT and scipy load only when an experiment runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .registry import EXPERIMENTS, Experiment

#: Public name -> the module that holds it: every experiment's entry point, and the helpers below.
_HOME = {
    **{e.function: e.module for e in EXPERIMENTS.values()},
    "ExperimentResult": "common", "RunProgress": "common",
    "segment_crossings": "gaussian2d", "crossing_share": "gaussian2d", "order_reversal_share": "gaussian2d",
    "highdim_problem": "highdim",
    "digit_pair_images": "digits_table", "digit_pair_metrics": "digits_table",
    "PAPER_TABLE_I": "paper", "paper_table_value": "paper", "paper_table_median": "paper",
    "load_saved": "saved", "SavedResult": "saved",
}

__all__ = ["EXPERIMENTS", "Experiment", *_HOME]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
