"""Worker processes that train for the server, so that a training never holds the server's interpreter lock.

A thread of the Streamlit server draws every page; a training in a thread of the same process competes
with it for one interpreter lock (issue 17: two Digits trainings at once took 14x their alone-time, and
pages of other sessions took minutes). A ``WorkerPool`` keeps ``size`` long-lived Python processes, each
started once (torch, POT and the app's problem code imported, about 3 s) and reused. A job's thread in
the server hands its ``jobs.Work`` to an idle worker over a private socket pair and relays what comes
back: the worker runs ``jobs.execute`` and sends its progress reports, then the trained model, the
result and the finish hook's value. Stop and abandon go the other way and are read at the next progress
report; a worker that has not ended an abandoned job ``ABANDON_GRACE`` seconds later is killed and
replaced, so a closed tab frees its worker within seconds whatever the worker was doing.

Messages are pickled with the standard pickler over the socket pair (tensors by value: torch's
multiprocessing pickler would share them through a channel only ``multiprocessing``'s own children
can open). Both ends are processes of this server, never a file or a peer on the network. A worker
whose server is gone reads end-of-file and exits.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, Callable

from .jobs import ABANDON, RUN, Work, error_message, execute

__all__ = ["WorkerPool", "ControlRelay", "ABANDON_GRACE", "outcome", "main"]

ROOT = Path(__file__).resolve().parents[1]          # the checkout: workers import ``studio`` from it
ABANDON_GRACE = 1.5                                  # seconds an abandoned job has to end before its worker is killed
START_TIMEOUT = 120.0                                # seconds a new worker may take to import (a busy machine)
#: Imported by each worker before it says it is ready, so that a first training does not pay for them.
PRELOAD = ("studio.problems", "gradnet_core.color", "gradnet_core.verdict")

Outcome = tuple[Any, Any, Any, "str | None"]         # (trained model, TrainResult, finish value, error message)


def _send(conn: Connection, message: tuple) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


class ControlRelay:
    """Passes a job's Stop and abandon (``control()``) on to its worker with ``send`` as they change, and says
    when an abandoned job has outlived ``ABANDON_GRACE``: then its worker should be killed."""

    def __init__(self, control: Callable[[], int], send: Callable[[int], Any]):
        self.control, self.send = control, send
        self.sent, self.abandoned_at = RUN, None

    def overdue(self) -> bool:
        wanted = self.control()
        if wanted != self.sent:
            self.send(wanted)
            self.sent = wanted
            self.abandoned_at = time.monotonic() if wanted == ABANDON else None
        return self.abandoned_at is not None and time.monotonic() - self.abandoned_at > ABANDON_GRACE


class _Worker:
    """One worker process and the server's end of its socket pair."""

    def __init__(self) -> None:
        self.conn, theirs = Pipe(duplex=True)
        # The server's import path, so that whatever the server can pickle (a finish hook) the worker can import.
        path = [str(ROOT)] + [entry for entry in sys.path if entry and os.path.isdir(entry)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from studio.workers import main; main({theirs.fileno()})"],
            cwd=ROOT, env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.ready = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self) -> None:
        if not self.ready:
            self._expect("ready", START_TIMEOUT)
            self.ready = True

    def _expect(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            if not self.alive or time.monotonic() > deadline:
                raise EOFError
        message = _recv(self.conn)
        if message[0] != kind:
            raise EOFError
        return message[1]

    def run(self, work: Work, report: Callable[[dict[str, Any]], None], control: Callable[[], int]) -> Outcome:
        """Train ``work`` in this worker; EOFError when the process dies (or was killed for an abandoned job)."""
        _send(self.conn, ("work", work))
        relay = ControlRelay(control, lambda value: _send(self.conn, ("control", value)))
        while True:
            if self.conn.poll(0.1):
                kind, payload = _recv(self.conn)
                if kind == "report":
                    report(payload)
                elif kind == "done":
                    return payload
            if relay.overdue():
                self.kill()
            if not self.alive:
                raise EOFError

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def lost_message(self) -> str:
        """What the page says when this worker died during a job."""
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:            # its socket broke but it lives on: no use to anyone
            self.kill()
            code = self.process.returncode
        return (f"The training's worker process ended unexpectedly (exit code {code}); "
                "the server may be short of memory. Try again, or with a smaller problem.")


class WorkerPool:
    """``size`` workers, started on ``warm()`` or when first needed, each training one job at a time: local
    processes, or with ``backend="ray"`` Ray actors (``studio.ray_workers``; Ray imported only then).

    Callers take turns through the scheduler's slots (as many as workers), so ``run`` finds an idle worker;
    more callers at once simply start more workers."""

    def __init__(self, size: int, backend: str = "local"):
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker; got {size}")
        if backend == "ray":
            from .ray_workers import RayWorker
            self._make: Callable[[], Any] = RayWorker
        elif backend == "local":
            self._make = _Worker
        else:
            raise ValueError(f"unknown worker backend {backend!r}; use 'local' or 'ray'")
        self.size, self.backend = size, backend
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._busy = 0

    def warm(self) -> None:
        """Start workers (without waiting for them) until the pool has ``size``."""
        with self._lock:
            self._idle = [w for w in self._idle if w.alive]
            for _ in range(self.size - self._busy - len(self._idle)):
                self._idle.append(self._make())

    def run(self, work: Work, report: Callable[[dict[str, Any]], None], control: Callable[[], int]) -> Outcome:
        """``jobs.execute(work, report, control)`` in a worker process: (trained model, result, finish
        value, error message); on error the first three are None."""
        with self._lock:
            self._idle = [w for w in self._idle if w.alive]
            worker = self._idle.pop(0) if self._idle else self._make()
            self._busy += 1
        try:
            worker.wait_ready()
            return worker.run(work, report, control)
        except (EOFError, OSError):
            if control() == ABANDON:
                return None, None, None, "The training was abandoned: its session has closed."
            return None, None, None, worker.lost_message()
        finally:
            with self._lock:
                self._busy -= 1
                if worker.alive:
                    self._idle.append(worker)
            if not worker.alive:
                self.warm()                          # replace it now, not at the next training

    def pids(self) -> list[int]:
        """The idle workers' process ids (for the load benchmark and tests)."""
        with self._lock:
            return [w.pid for w in self._idle if w.alive]

    def close(self) -> None:
        """End the idle workers."""
        with self._lock:
            for worker in self._idle:
                worker.kill()
            self._idle = []


def outcome(work: Work, report: Callable[[dict[str, Any]], None], control: Callable[[], int]) -> Outcome:
    """``jobs.execute`` where a worker runs it: an error in training becomes the outcome's message."""
    try:
        return execute(work, report, control)
    except Exception as err:  # the server must hear about it, whatever went wrong
        return None, None, None, error_message(err)


class _Control:
    """The worker's view of the server's Stop and abandon: the latest control message, read without waiting."""

    def __init__(self, conn: Connection):
        self.conn, self.value = conn, RUN

    def __call__(self) -> int:
        try:
            while self.conn.poll(0):
                kind, value = _recv(self.conn)
                if kind == "control":
                    self.value = value
        except (EOFError, OSError):
            self.value = ABANDON                     # the server is gone: nobody will see the result
        return self.value


def main(fd: int) -> None:
    """A worker process: train each ``Work`` the server sends over the socket ``fd`` until it closes."""
    import importlib

    import torch

    torch.set_num_threads(1)
    for module in PRELOAD:
        importlib.import_module(module)
    conn = Connection(fd)
    _send(conn, ("ready", os.getpid()))
    while True:
        try:
            kind, work = _recv(conn)
        except (EOFError, OSError):
            return
        except Exception as err:  # a job this process cannot unpickle: say so, and wait for the next
            _send(conn, ("done", (None, None, None,
                                  f"The training could not be handed to a worker process: {error_message(err)}")))
            continue
        if kind != "work":
            continue                                 # a Stop that crossed the previous job's end
        try:
            done = outcome(work, lambda update: _send(conn, ("report", update)), _Control(conn))
            _send(conn, ("done", done))
        except (EOFError, OSError):
            return
        except Exception as err:  # an outcome that does not pickle: say so, and wait for the next job
            _send(conn, ("done", (None, None, None, error_message(err))))
