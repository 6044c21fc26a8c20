"""Reading back what the experiments wrote: the last saved run of each experiment in a results folder
(``<results>/<folder>/summary.json`` and its CSV and figures), for the app and the README.

The folder is always given: the command line writes under the current directory (``results/`` by
default), so only the caller knows where that was; the app's Paper results page passes the
repository's ``results/`` beside ``app.py``. Which folders and files to look for comes from
``EXPERIMENTS``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import EXPERIMENTS

__all__ = ["SavedResult", "load_saved"]


@dataclass
class SavedResult:
    """One experiment's saved run: its summary, table rows (strings, as in the CSV) and figure paths."""

    name: str                           # the results folder's name, e.g. "digits-table-mnist"
    summary: dict[str, Any]
    rows: list[dict[str, str]]
    figures: list[Path] = field(default_factory=list)
    html: list[Path] = field(default_factory=list)
    folder: Path | None = None          # where the files are, for the experiment's other tables
    experiment: str = ""                # the experiment (subcommand) that wrote it, e.g. "digits-table"
    title: str = ""                     # its heading on the results page


def load_saved(results_dir: str | os.PathLike) -> dict[str, SavedResult]:
    """Every results folder of an experiment in ``EXPERIMENTS`` that has a summary under ``results_dir``,
    by folder name, in registry order; missing ones are left out. A damaged summary raises ValueError
    naming the file.
    """
    root = Path(results_dir)
    found: dict[str, SavedResult] = {}
    for experiment in EXPERIMENTS.values():
        for name, title in experiment.folders:
            folder = root / name
            summary_path = folder / experiment.summary
            if not summary_path.is_file():
                continue
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"cannot read {summary_path}: {err}") from err
            rows: list[dict[str, str]] = []
            table_path = folder / experiment.table
            if table_path.is_file():
                with open(table_path, newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
            found[name] = SavedResult(
                name=name, summary=summary, rows=rows,
                figures=[folder / f for f in experiment.figures if (folder / f).is_file()],
                html=sorted(folder.glob("*.html")), folder=folder, experiment=experiment.name, title=title)
    return found
