"""Runs that survive a reload: each browser session's runs kept on the server's disk under a token.

A session gets an unguessable token in its page URL (``studio.session``); reloading the page, or opening the URL again before it expires, brings that
session's runs back. The store is one SQLite file (no server; ``GRADNET_STORE``, by default in the
system's temporary folder). A run is saved as the file ``save_map`` would write, its settings, metrics
and training history in the description, so nothing in the store is ever unpickled. Every query names
the token: a token sees its own runs only. Runs expire ``GRADNET_STORE_HOURS`` after they were saved
(24 by default) and a token holds at most ``GRADNET_STORE_MB`` megabytes (50): past it, its oldest runs go. A page's
runs on earlier inputs (set aside when runs on other inputs joined it) are kept beside its current ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from gradnet_core.files import map_to_bytes, read_map
from gradnet_core.training import TrainResult
from gradnet_core.verdict import Verdict

from .problems import Run

__all__ = ["RunStore", "store"]

def _jsonable(value: Any) -> Any:
    """Metrics as JSON: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunStore:
    """An SQLite table of runs by (token, page, number); thread-safe (one connection per call)."""

    def __init__(self, path: str | os.PathLike, hours: float = 24.0, max_bytes: int = 50_000_000):
        self.path, self.seconds, self.max_bytes = Path(path), hours * 3600.0, int(max_bytes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS runs (token TEXT NOT NULL, page TEXT NOT NULL, number INTEGER "
                       "NOT NULL, saved REAL NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL, "
                       "PRIMARY KEY (token, page, number))")
            db.execute("CREATE TABLE IF NOT EXISTS training (token TEXT NOT NULL, page TEXT NOT NULL, "
                       "what TEXT NOT NULL, started REAL NOT NULL, PRIMARY KEY (token, page))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def save(self, token: str, page: str, run: Run, problem: dict[str, Any]) -> None:
        """Keep ``run``, measured on ``problem`` (``Problem.describe()``), for ``token``; the token's oldest runs
        go when it would pass ``max_bytes``."""
        self._put(token, page, run.number, _run_bytes(run, problem))

    def save_result(self, token: str, page: str, model: Any, result: TrainResult, extra: dict[str, Any]) -> None:
        """Keep a page's one result (the Colour transfer page's): its map, its training and ``extra`` (JSON), in place
        of the one before."""
        self._put(token, page, 0, map_to_bytes(model, {**extra, "stored_result": _result_dict(result)}))

    def load_result(self, token: str, page: str) -> tuple[Any, TrainResult, dict[str, Any]] | None:
        """The map, training and ``extra`` ``save_result`` kept for the page, or None (none, expired or unreadable)."""
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM runs WHERE saved < ?", (time.time() - self.seconds,))
            row = db.execute("SELECT data FROM runs WHERE token = ? AND page = ? AND number = 0",
                             (token, page)).fetchone()
        if row is None:
            return None
        try:
            loaded = read_map(bytes(row[0]))
            extra = dict(loaded.extra or {})
            return loaded.model, _result_from(extra.pop("stored_result"), loaded.model), extra
        except (ValueError, KeyError, TypeError):
            return None

    def _put(self, token: str, page: str, number: int, data: bytes) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                       (token, page, number, time.time(), len(data), data))
            rows = db.execute("SELECT page, number, size FROM runs WHERE token = ? ORDER BY saved DESC",
                              (token,)).fetchall()
            total = 0
            for row_page, number, size in rows:
                total += size
                if total > self.max_bytes:
                    db.execute("DELETE FROM runs WHERE token = ? AND page = ? AND number = ?", (token, row_page, number))

    def touch(self, token: str, page: str, numbers: Sequence[int]) -> None:
        """Mark the token's runs ``numbers`` of ``page`` saved now (they expire later, and ``load`` lists them last):
        runs brought back to the page from those set aside."""
        with self._lock, self._connect() as db:
            db.executemany("UPDATE runs SET saved = ? WHERE token = ? AND page = ? AND number = ?",
                           [(time.time(), token, page, number) for number in numbers])

    def remove(self, token: str, page: str, number: int) -> None:
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM runs WHERE token = ? AND page = ? AND number = ?", (token, page, number))

    def load(self, token: str, page: str) -> list[tuple[Run, dict[str, Any]]]:
        """The token's unexpired runs of ``page`` in the order they were saved (``touch`` counting as saving), each with
        the problem it was measured on: the runs on the page's last problem come last, the runs set aside on earlier
        problems before them (expired runs of every token are purged)."""
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM runs WHERE saved < ?", (time.time() - self.seconds,))
            rows = db.execute("SELECT data FROM runs WHERE token = ? AND page = ? AND number > 0 ORDER BY saved, number",
                              (token, page)).fetchall()
        runs = []
        for (data,) in rows:
            try:
                runs.append(_run_from_bytes(bytes(data)))
            except (ValueError, KeyError, TypeError):
                continue                        # a run this version cannot read is skipped, not fatal
        return runs

    def mark_training(self, token: str, page: str, what: str) -> None:
        """Note that ``page`` of ``token`` is training (``what``: its words for it) until ``end_training``: a tab
        reloaded meanwhile ends the training with it, and the page that comes back says so (``take_training``)."""
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO training VALUES (?, ?, ?, ?)", (token, page, what, time.time()))

    def end_training(self, token: str, page: str) -> None:
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM training WHERE token = ? AND page = ?", (token, page))

    def take_training(self, token: str, page: str) -> str | None:
        """The words of a training ``mark_training`` noted and nothing ended, forgetting it; None when there is none
        (or it is older than the runs are kept)."""
        with self._lock, self._connect() as db:
            row = db.execute("SELECT what, started FROM training WHERE token = ? AND page = ?", (token, page)).fetchone()
            db.execute("DELETE FROM training WHERE token = ? AND page = ?", (token, page))
        return row[0] if row is not None and row[1] >= time.time() - self.seconds else None

    def size(self, token: str) -> int:
        with self._lock, self._connect() as db:
            return int(db.execute("SELECT COALESCE(SUM(size), 0) FROM runs WHERE token = ?", (token,)).fetchone()[0])


def _run_bytes(run: Run, problem: dict[str, Any]) -> bytes:
    result = None if run.result is None else _result_dict(run.result)
    saved = {"number": run.number, "network": run.network, "origin": run.origin, "signature": run.signature,
             "metrics": {k: _jsonable(v) for k, v in run.metrics.items()}, "result": result,
             "mapped": run.mapped.tolist(), "grid_mapped": run.grid_mapped.tolist(), "measured_on": problem}
    return map_to_bytes(run.model, {**run.settings, "stored_run": saved})


def _result_dict(result: TrainResult) -> dict[str, Any]:
    """A training's result as JSON: the trained map is the file's own (not JSON); the densities it was judged on are
    the problem's."""
    saved = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in ("map", "judged_on")}
    saved["verdict"] = (None if result.verdict is None else
                        {k: _jsonable(v) for k, v in dataclasses.asdict(result.verdict).items()})
    saved["history"] = {k: [_jsonable(float(v)) for v in values] for k, values in result.history.items()}
    return saved


def _result_from(saved: dict[str, Any], model: Any) -> TrainResult:
    """``_result_dict``'s result back, with ``model`` as its map."""
    raw = dict(saved)
    verdict = raw.pop("verdict")
    raw["history"] = {k: [math.nan if v is None else v for v in values] for k, values in raw["history"].items()}
    # JSON gave lists where the result holds tuples: the loss chart hashes the phases (a reload once ended there in
    # "unhashable type: 'list'" on every page whose runs have a second phase).
    raw["phases"] = tuple((int(step), str(words)) for step, words in raw.get("phases", ()))
    if verdict is not None:
        verdict = Verdict(**{**verdict, "failed": tuple(verdict.get("failed", ()))})
    return TrainResult(**raw, verdict=verdict, map=model)


def _run_from_bytes(data: bytes) -> tuple[Run, dict[str, Any]]:
    import numpy as np

    loaded = read_map(data)
    extra = dict(loaded.extra or {})
    saved = extra.pop("stored_run")
    result = None if saved["result"] is None else _result_from(saved["result"], loaded.model)
    metrics = {k: (math.nan if v is None else v) for k, v in saved["metrics"].items()}
    run = Run(network=saved["network"], model=loaded.model, result=result, signature=saved["signature"],
              settings=extra, mapped=np.asarray(saved["mapped"], dtype=float),
              grid_mapped=np.asarray(saved["grid_mapped"], dtype=float).reshape(-1, 2), metrics=metrics,
              origin=saved["origin"], number=int(saved["number"]))
    return run, saved["measured_on"]


_STORE: RunStore | None = None
_STORE_LOCK = threading.Lock()


def store() -> RunStore:
    """The server's store, from ``GRADNET_STORE`` (a file path), ``GRADNET_STORE_HOURS`` and ``GRADNET_STORE_MB``."""
    global _STORE
    path = Path(os.environ.get("GRADNET_STORE") or Path(tempfile.gettempdir()) / "gradnetot-studio" / "runs.sqlite")
    if path.is_dir():
        path = path / "runs.sqlite"             # a folder named for the file: the file in it
    with _STORE_LOCK:
        if _STORE is None or _STORE.path != path:
            try:
                _STORE = RunStore(path, hours=float(os.environ.get("GRADNET_STORE_HOURS", 24)),
                                  max_bytes=int(float(os.environ.get("GRADNET_STORE_MB", 50)) * 1e6))
            except (OSError, sqlite3.Error) as err:
                raise RuntimeError(f"The app cannot keep runs in {path} ({err}): set GRADNET_STORE to a file in a "
                                   "folder the server can write to, or leave it unset.") from None
        return _STORE

