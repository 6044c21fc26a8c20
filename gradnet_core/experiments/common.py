"""What every experiment shares: progress reports across several training runs, the result record,
and writing CSV / JSON / HTML files.

An experiment is a plain function ``run_*(..., out=..., on_progress=...) -> ExperimentResult``. It
trains several maps one after the other; ``on_progress`` receives a ``RunProgress`` that places
``train()``'s per-run ``Progress`` inside the whole experiment, so the command line can feed one
tqdm bar and the app one progress bar.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..training import Progress

__all__ = ["RunProgress", "ProgressFn", "ExperimentResult", "ProgressTracker", "output_dir", "write_csv",
           "write_json", "write_html", "machine_description", "finite_or_none"]


@dataclass(frozen=True)
class RunProgress:
    """Where an experiment stands: ``done`` of ``total`` training steps over all its runs."""

    label: str                 # the run in progress, e.g. "mGradNet-C, d = 16, authors"
    run: int                   # index of that run, 0-based
    runs: int                  # number of runs in the experiment
    done: int                  # training steps completed over all runs
    total: int                 # training steps planned over all runs
    loss: float | None         # mean loss of the run since its last report (None between runs)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressFn = Callable[[RunProgress], None]


class ProgressTracker:
    """Turns ``train()``'s per-run callbacks into ``RunProgress`` reports for the whole experiment.

    ``steps`` lists the planned steps of every run in order. Call ``callback(i, label)`` to get the
    ``train`` callback of run ``i``, and ``finish(i)`` when that run ends (it may stop early).
    """

    def __init__(self, steps: Sequence[int], on_progress: ProgressFn | None):
        self.steps = list(steps)
        self.total = int(sum(self.steps))
        self.on_progress = on_progress
        self._offsets = [int(sum(self.steps[:i])) for i in range(len(self.steps))]

    def callback(self, run: int, label: str) -> Callable[[Progress], None]:
        self._report(run, label, self._offsets[run], None)

        def report(progress: Progress) -> None:
            self._report(run, label, self._offsets[run] + progress.step, progress.loss)

        return report

    def finish(self, run: int, label: str) -> None:
        self._report(run, label, self._offsets[run] + self.steps[run], None)

    def _report(self, run: int, label: str, done: int, loss: float | None) -> None:
        if self.on_progress is not None:
            self.on_progress(RunProgress(label=label, run=run, runs=len(self.steps), done=done,
                                         total=self.total, loss=loss))


@dataclass
class ExperimentResult:
    """What an experiment produced: one table row per run, a JSON-able summary and the files written."""

    name: str                                      # the subcommand, e.g. "gaussian2d"
    rows: list[dict[str, Any]]                     # the CSV table
    summary: dict[str, Any]                        # headline numbers (printed by --json)
    files: list[Path] = field(default_factory=list)  # everything written to the output folder
    elapsed: float = 0.0                           # wall seconds for the whole experiment
    figures: dict[str, Any] = field(default_factory=dict)  # interactive plotly figures, by name

    def to_json(self) -> str:
        payload = {"experiment": self.name, "elapsed_s": round(self.elapsed, 2), **self.summary,
                   "files": [str(p) for p in self.files]}
        return json.dumps(_jsonable(payload), allow_nan=False)


def output_dir(out: str | os.PathLike | None, name: str) -> Path:
    """``out``, or ``results/<name>/`` when None; created if missing."""
    path = Path(out) if out is not None else Path("results") / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {os.fspath(path)!r}: {err.strerror}") from err
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows of dicts -> CSV with the union of their keys as header (first-seen order)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in fields})
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_html(path: Path, figure: Any) -> Path:
    """A plotly figure as a standalone HTML page. plotly.js comes from its CDN and coordinates and
    colour values are stored as float32 (the figure is changed in place), so that files stay small."""
    for trace in [*figure.data, *(t for frame in (figure.frames or ()) for t in frame.data)]:
        for axis in ("x", "y"):
            _to_float32(trace, axis)
        if getattr(trace, "marker", None) is not None:
            _to_float32(trace.marker, "color")
    figure.write_html(path, include_plotlyjs="cdn", full_html=True)
    return path


def _to_float32(obj: Any, name: str) -> None:
    values = getattr(obj, name, None)
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        obj[name] = values.astype(np.float32)
    elif isinstance(values, (list, tuple)) and len(values) > 1 and all(isinstance(v, float) for v in values):
        obj[name] = np.asarray(values, dtype=np.float32)


def machine_description() -> dict[str, Any]:
    """The machine the numbers were measured on, for the results' provenance."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite number becomes None (null)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         ("inf" if value > 0 else "-inf"))
    return "" if value is None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return finite_or_none(value)
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value
