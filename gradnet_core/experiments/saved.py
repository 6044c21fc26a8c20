"""Reading back what the experiments wrote: the last saved run of each experiment in a results folder
(``results/<experiment>/summary.json`` and its CSV and figures), for the app and the README."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SavedResult", "EXPERIMENTS", "load_saved", "RESULTS_DIR"]

#: Experiment name -> its CSV table and its figures, in the order a page shows them.
EXPERIMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gaussian2d": ("gaussian2d.csv", ("snapshots.png",)),
    "highdim": ("highdim.csv", ("mse.png",)),
    "digits-table": ("digits_table.csv", ("heatmap.png",)),
    # the same command on the real MNIST files (--mnist DIR --out results/digits-table-mnist)
    "digits-table-mnist": ("digits_table.csv", ("heatmap.png",)),
    "digits-table-paper-mnist": ("digits_table.csv", ("heatmap.png",)),   # --preset paper, real MNIST
    "morph": ("morph.csv", ("morph.gif", "snapshots.png")),
}

#: The repository's results folder (``results/`` beside the package).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


@dataclass
class SavedResult:
    """One experiment's saved run: its summary, table rows (strings, as in the CSV) and figure paths."""

    name: str
    summary: dict[str, Any]
    rows: list[dict[str, str]]
    figures: list[Path] = field(default_factory=list)
    html: list[Path] = field(default_factory=list)
    folder: Path | None = None          # where the files are, for the experiment's other tables


def load_saved(results_dir: str | Path | None = None) -> dict[str, SavedResult]:
    """Every experiment with a ``summary.json`` under ``results_dir`` (default ``RESULTS_DIR``); missing
    ones are left out. A damaged summary raises ValueError naming the file.
    """
    folder = Path(results_dir) if results_dir is not None else RESULTS_DIR
    found: dict[str, SavedResult] = {}
    for name, (table, figures) in EXPERIMENTS.items():
        summary_path = folder / name / "summary.json"
        if not summary_path.is_file():
            continue
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {summary_path}: {err}") from err
        rows: list[dict[str, str]] = []
        table_path = folder / name / table
        if table_path.is_file():
            with open(table_path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        found[name] = SavedResult(
            name=name, summary=summary, rows=rows,
            figures=[folder / name / f for f in figures if (folder / name / f).is_file()],
            html=sorted((folder / name).glob("*.html")), folder=folder / name)
    return found
