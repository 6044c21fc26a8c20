"""The app's trainings on Ray: a ``RayWorker`` is a Ray actor that trains one job at a time, as a local
worker process does (``studio.workers``). Only a ``WorkerPool(backend="ray")`` imports this module, so
Ray stays an optional extra (``pip install -r requirements-ray.txt``).

The server connects to the cluster at ``RAY_ADDRESS``, or starts a Ray instance on this machine when
``GRADNET_BACKEND=ray`` is set without one. Each actor takes one CPU and is reused job after job; the
``studio`` package travels with the server's Ray job (``py_modules``), while ``gradnet_core`` and its dependencies must
be installed on every node at the server's versions, as for the experiments' sweeps. The job's thread
here polls the actor for progress reports every ``POLL`` seconds and passes Stop and abandon on; an
abandoned job that has not ended ``ABANDON_GRACE`` seconds later has its actor killed and replaced.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError, RayTaskError

from .jobs import RUN, Work, error_message
from .workers import START_TIMEOUT, ControlRelay, Outcome, outcome

__all__ = ["RayWorker", "connect", "cluster_cpus"]

POLL = 0.1                                   # seconds between the server's polls of a training actor
OBJECT_STORE_BYTES = 128 * 2**20             # a Ray instance started here: jobs and results are small
_LOCK = threading.Lock()


_OWNER: threading.Thread | None = None
_CONNECTED = threading.Event()
_FAILED: list[BaseException] = []


def connect() -> None:
    """Connect to ``RAY_ADDRESS``, or start a Ray instance here (no dashboard, a small object store).

    From a thread that lives as long as the server: a Ray instance started here dies with the thread that
    started it (its processes are tied to that thread's life), and Streamlit's script threads end with
    each page run."""
    global _OWNER
    if ray.is_initialized():
        return
    with _LOCK:
        if _OWNER is None:
            _FAILED.clear()
            _CONNECTED.clear()
            _OWNER = threading.Thread(target=_own_ray, name="ray-owner", daemon=True)
            _OWNER.start()
    if not _CONNECTED.wait(START_TIMEOUT) or _FAILED:
        raise ValueError(f"Ray could not be started or reached: {_FAILED[0] if _FAILED else 'timed out'}")


def _own_ray() -> None:
    global _OWNER
    shipped = {"py_modules": [str(Path(__file__).resolve().parent)]}      # the studio package, to every actor
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, runtime_env=shipped)
        else:
            ray.init(include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False,
                     runtime_env=shipped)
    except Exception as err:  # told to the caller, who says it on the page
        _FAILED.append(err)
        _OWNER = None
        _CONNECTED.set()
        return
    _CONNECTED.set()
    while ray.is_initialized():                   # until ray.shutdown(): then a later connect starts again
        time.sleep(1.0)
    _OWNER = None


def cluster_cpus() -> int:
    """The CPUs of the cluster (at least 1): the default number of training slots on Ray."""
    connect()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class _Trainer:
    """The actor: ``run`` trains in one of its threads while ``take`` and ``control`` answer in another."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self._lock = threading.Lock()
        self._reports: list[dict[str, Any]] = []
        self._control = RUN

    def ready(self) -> int:
        return os.getpid()

    def run(self, work: Work) -> Outcome:
        self._control = RUN
        return outcome(work, self._report, lambda: self._control)

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            reports, self._reports = self._reports, []
        return reports

    def control(self, value: int) -> None:
        self._control = value

    def _report(self, update: dict[str, Any]) -> None:
        with self._lock:
            self._reports.append(update)


class RayWorker:
    """One training actor and the server's side of it (the interface of ``workers._Worker``)."""

    def __init__(self) -> None:
        connect()
        self.actor = ray.remote(_Trainer).options(num_cpus=1, max_concurrency=2).remote()
        self._ready = self.actor.ready.remote()
        self.pid: int | None = None
        self._killed = False

    @property
    def alive(self) -> bool:
        return not self._killed

    def wait_ready(self) -> None:
        if self.pid is None:
            try:
                self.pid = ray.get(self._ready, timeout=START_TIMEOUT)
            except (RayActorError, ray.exceptions.GetTimeoutError) as err:
                self.kill()
                raise EOFError from err

    def run(self, work: Work, report: Callable[[dict[str, Any]], None], control: Callable[[], int]) -> Outcome:
        """Train ``work`` in the actor; EOFError when the actor dies (or was killed for an abandoned job)."""
        ref = self.actor.run.remote(work)
        relay = ControlRelay(control, self.actor.control.remote)
        try:
            while True:
                done, _ = ray.wait([ref], timeout=POLL)
                for update in ray.get(self.actor.take.remote()):    # a job's reports come before its end
                    report(update)
                if done:
                    return ray.get(ref)
                if relay.overdue():
                    self.kill()
                    raise EOFError
        except RayActorError as err:
            self._killed = True
            raise EOFError from err
        except RayTaskError as err:                 # e.g. the job could not be unpickled on the node
            return None, None, None, f"The training could not run on Ray: {error_message(err.cause or err)}"

    def kill(self) -> None:
        self._killed = True
        ray.kill(self.actor)

    def lost_message(self) -> str:
        return ("The training's Ray worker ended unexpectedly; the cluster may be short of memory or have "
                "lost a node. Try again, or with a smaller problem.")
