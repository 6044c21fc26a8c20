"""What every experiment shares: progress reports across several training runs, the result record,
and writing CSV / JSON / HTML files.

An experiment is a plain function ``run_*(..., out=..., on_progress=...) -> ExperimentResult``. It
trains several maps one after the other; ``on_progress`` receives a ``RunProgress`` that places
``train()``'s per-run ``Progress`` inside the whole experiment, so the command line can feed one
tqdm bar and the app one progress bar.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import queue
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from ..training import Progress

__all__ = ["torch_threads", "RunProgress", "ProgressFn", "ExperimentResult", "ProgressTracker", "BACKENDS", "run_tasks",
           "output_dir", "write_csv", "write_json", "write_html", "machine_description", "finite_or_none"]


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

    ``steps`` lists the planned steps of every run in order; a run whose progress reports a larger total (a second
    phase) grows to it. Call ``callback(i, label)`` to get the
    ``train`` callback of run ``i``, and ``finish(i)`` when that run ends (it may stop early). Runs
    may overlap (``run_tasks`` with several jobs): ``done`` is the sum of every run's steps so far.
    """

    def __init__(self, steps: Sequence[int], on_progress: ProgressFn | None):
        self.steps = list(steps)
        self.total = int(sum(self.steps))
        self.on_progress = on_progress
        self._done = [0] * len(self.steps)

    def callback(self, run: int, label: str) -> Callable[[Progress], None]:
        self.report(run, label, 0, None)

        def report(progress: Progress) -> None:
            if progress.total > self.steps[run]:
                # a run that goes on with another objective (a digit's Sinkhorn phase) counts those steps too: the
                # bar reached 100 % at the first phase's end and stayed there through the second (a review)
                self.total += progress.total - self.steps[run]
                self.steps[run] = progress.total
            self.report(run, label, progress.step, progress.loss)

        return report

    def finish(self, run: int, label: str) -> None:
        self.report(run, label, self.steps[run], None)

    def report(self, run: int, label: str, step: int, loss: float | None) -> None:
        """Run ``run`` has completed ``step`` of its steps."""
        self._done[run] = min(int(step), self.steps[run])
        if self.on_progress is not None:
            self.on_progress(RunProgress(label=label, run=run, runs=len(self.steps), done=sum(self._done),
                                         total=self.total, loss=loss))


Task = TypeVar("Task")

#: Where ``run_tasks`` trains: this machine's worker processes, or Ray (a cluster named by RAY_ADDRESS, or a
#: Ray instance started for the sweep). Ray is an optional extra, imported only when chosen.
BACKENDS = ("local", "ray")


def run_tasks(run: Callable[[Any, Callable[[Progress], None]], Task], tasks: Sequence[Any], labels: Sequence[str],
              tracker: ProgressTracker, jobs: int | None = 1, cost: Sequence[float] | None = None,
              on_result: Callable[[int, Task], None] | None = None, backend: str = "local") -> list[Task]:
    """``[run(task, callback) for task in tasks]``, in order, at most ``jobs`` at once.

    ``run`` must be a module-level function (workers import it) and ``tasks`` picklable. Each training
    uses as many torch threads as this process (and on Ray asks for as many CPUs) and sends its
    progress back, so the tracker sees every run's steps as they happen. ``cost`` (a guess per task)
    starts the costliest first, so that no long run is left alone at the end. ``on_result(k, result)``
    is called here as each task ends (in the order they end), so a long experiment can write what it
    has so far. A task's error is raised here, and the tasks waiting to start are cancelled (on Ray, the
    running ones too).

    ``backend="local"``: worker processes on this machine; ``jobs=1`` runs everything here, in turn, and
    ``jobs=None`` one process per core. ``backend="ray"``: Ray tasks (``experiments/ray_tasks.py``) on
    the cluster at ``RAY_ADDRESS``, else on a Ray instance started here and shut down after;
    ``jobs=None`` leaves Ray to run as many as the cluster has CPUs for.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    order = sorted(range(len(tasks)), key=lambda k: -cost[k]) if cost is not None else list(range(len(tasks)))
    if backend == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ValueError("the Ray backend needs Ray, an optional extra: pip install -r requirements-ray.txt")
        from .ray_tasks import run_on_ray

        return run_on_ray(run, tasks, labels, tracker, jobs, order, on_result, torch.get_num_threads())
    if jobs is None:
        jobs = max(1, (os.cpu_count() or 1) // torch.get_num_threads())
    if jobs == 1 or len(tasks) <= 1:
        results = []
        for k, task in enumerate(tasks):
            results.append(run(task, tracker.callback(k, labels[k])))
            tracker.finish(k, labels[k])
            if on_result is not None:
                on_result(k, results[-1])
        return results
    # spawn, not fork: a forked child of a process whose OpenMP pool has started can hang.
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        reports = manager.Queue()
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                                 initializer=_init_worker, initargs=(torch.get_num_threads(),)) as pool:
            futures = {pool.submit(_run_reporting, run, tasks[k], k, reports): k for k in order}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(reports, tracker, labels)
                    for future in done:
                        k = futures[future]
                        result = future.result()     # re-raise a worker's error here
                        tracker.finish(k, labels[k])
                        if on_result is not None:
                            on_result(k, result)
            except BaseException:
                for future in pending:               # fail now, not after every queued run
                    future.cancel()
                raise
            _drain(reports, tracker, labels)
            return [future.result() for future in sorted(futures, key=futures.get)]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads of the calling thread set to ``threads`` within the block, as before after it (the
    experiments' small steps run slower on two threads than on one, and far slower on a busy machine:
    benchmarks/README.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_reporting(run: Callable[[Any, Callable[[Progress], None]], Task], task: Any, index: int, reports) -> Task:
    """``run(task, callback)`` in a worker, its progress put on ``reports`` (a queue this process drains)."""
    def callback(progress: Progress) -> None:
        reports.put((index, progress.step, progress.loss))

    return run(task, callback)


def _drain(reports, tracker: ProgressTracker, labels: Sequence[str]) -> None:
    while True:
        try:
            index, step, loss = reports.get_nowait()
        except queue.Empty:
            return
        tracker.report(index, labels[index], step, loss)


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
    """A plotly figure as an HTML page that works offline: plotly.js is written once per folder, as
    ``plotly.min.js`` beside the page (about 4.6 MB, so several pages share it), by plotly's own
    ``write_html(include_plotlyjs="directory")``. Coordinates and colour values are stored as float32
    (the figure is changed in place), so that files stay small.
    """
    for trace in [*figure.data, *(t for frame in (figure.frames or ()) for t in frame.data)]:
        for axis in ("x", "y"):
            _to_float32(trace, axis)
        if getattr(trace, "marker", None) is not None:
            _to_float32(trace.marker, "color")
    figure.write_html(path, include_plotlyjs="directory", full_html=True)
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
