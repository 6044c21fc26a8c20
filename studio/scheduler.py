"""Training slots for a shared server: at most ``workers`` trainings at once, the rest waiting in order.

Trainings run in the server's worker processes (``workers()``, a ``workers.WorkerPool`` with one process
per slot), so a training never holds the interpreter lock of the server that draws the pages: as
threads of the server, two Digits trainings at once took 410 s each against 29 s alone on this 2-core
machine (issue 17). ``GRADNET_WORKERS`` sets the slots (default: cores − 1, at least 1, leaving a core
to the server), ``GRADNET_QUEUE`` how many may wait (30); past it a training is refused with a message.
A waiting job knows its place and an estimated start, from the running jobs' ETAs. With a Ray cluster
configured (``RAY_ADDRESS``, or ``GRADNET_BACKEND=ray`` for a Ray instance on this machine) the workers are
Ray actors instead (``ray_workers``), one slot per cluster CPU by default.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import sys
import threading
import time
from typing import Any, Callable

from .device import backend
from .workers import WorkerPool

__all__ = ["Slots", "slots", "workers", "HOUSEKEEPING_SECONDS"]


class Slots:
    """``workers`` slots and a FIFO queue of at most ``queue_limit`` waiting jobs (any objects with a
    ``snapshot()`` giving ``eta`` and a ``stopping`` flag, like ``TrainingJob``)."""

    def __init__(self, workers: int, queue_limit: int):
        if workers < 1 or queue_limit < 0:
            raise ValueError(f"workers must be at least 1 and the queue limit at least 0; got {workers}, {queue_limit}")
        self.workers, self.queue_limit = workers, queue_limit
        self._cond = threading.Condition()
        self._running: list[Any] = []
        self._waiting: list[Any] = []

    def admit(self, job: Any) -> None:
        """Put ``job`` in line; ValueError when the line is full."""
        with self._cond:
            if len(self._running) >= self.workers and len(self._waiting) >= self.queue_limit:
                raise ValueError(f"The server is full: {len(self._running)} trainings are running and "
                                 f"{len(self._waiting)} are waiting. Try again in a minute.")
            self._waiting.append(job)

    def acquire(self, job: Any, cancelled: Callable[[], bool], poll: float = 0.2) -> bool:
        """Block until ``job`` is first in line and a slot is free (True), or ``cancelled()`` (False, out of line)."""
        with self._cond:
            while True:
                if cancelled():
                    self._waiting.remove(job)
                    self._cond.notify_all()
                    return False
                if self._waiting and self._waiting[0] is job and len(self._running) < self.workers:
                    self._waiting.pop(0)
                    self._running.append(job)
                    self._cond.notify_all()
                    return True
                self._cond.wait(poll)

    def release(self, job: Any) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            self._cond.notify_all()

    def place(self, job: Any) -> tuple[int, int, float]:
        """(1-based place in line, jobs waiting, estimated seconds to start; inf when unknown)."""
        with self._cond:
            if job not in self._waiting:
                return 0, len(self._waiting), 0.0
            place = self._waiting.index(job)
            etas = sorted(_eta(j) for j in self._running)
        # Each free slot takes the next in line: the job ahead in the same slot must finish first.
        if len(etas) < self.workers:
            etas += [0.0] * (self.workers - len(etas))
        start = etas[place % self.workers] + (place // self.workers) * max(etas[-1], 1.0)
        return place + 1, len(self._waiting), start


def _eta(job: Any) -> float:
    eta = job.snapshot().eta
    return eta if math.isfinite(eta) else math.inf


_SLOTS: Slots | None = None
_POOL: WorkerPool | None = None
_SLOTS_LOCK = threading.Lock()


def slots() -> Slots:
    """The server's slots (``GRADNET_WORKERS``, default cores − 1 here or the cluster's CPUs on Ray;
    ``GRADNET_QUEUE``)."""
    global _SLOTS
    with _SLOTS_LOCK:
        if _SLOTS is None:
            if "GRADNET_WORKERS" in os.environ:
                count = int(os.environ["GRADNET_WORKERS"])
            elif backend() == "ray":
                from .ray_workers import cluster_cpus
                count = cluster_cpus()
            else:
                count = max(1, (os.cpu_count() or 2) - 1)
            _SLOTS = Slots(count, int(os.environ.get("GRADNET_QUEUE", 30)))
        return _SLOTS


def workers() -> WorkerPool:
    """The server's workers, one per slot (started by the first call, without waiting for them, with the
    server's housekeeping)."""
    global _POOL
    size = slots().workers
    with _SLOTS_LOCK:
        if _POOL is None:
            _POOL = WorkerPool(size, backend())
            threading.Thread(target=_housekeeping, name="server-housekeeping", daemon=True).start()
    _POOL.warm()
    return _POOL


#: Seconds between the server's memory housekeeping rounds.
HOUSEKEEPING_SECONDS = 30.0


def _housekeeping() -> None:
    """Give the memory of closed sessions back to the system, every ``HOUSEKEEPING_SECONDS``.

    After a class had left, the server stayed about 40 % above its size before (``benchmarks/class_load.py``):
    Streamlit still held the closed sessions' page states (``_release_closed_sessions`` empties them);
    its collection after every page run is off (``runner.postScriptGC = false``: with many sessions it
    held the interpreter lock most of the time), so their figures and arrays, which hold reference
    cycles, wait for a full collection here; and glibc keeps freed memory unless asked to trim it."""
    trim = ctypes.CDLL("libc.so.6").malloc_trim if sys.platform.startswith("linux") else None
    while True:
        time.sleep(HOUSEKEEPING_SECONDS)
        _release_closed_sessions()
        gc.collect()
        if trim is not None:
            trim(0)


def _release_closed_sessions() -> None:
    """Release the page states of tabs closed longer ago than ``server.disconnectedSessionTTL``
    (``state.release_closed``)."""
    from streamlit import config, runtime

    from .state import release_closed

    if runtime.exists():
        server = runtime.get_instance()
        release_closed(server.is_active_session, after=float(config.get_option("server.disconnectedSessionTTL")))
