"""``run_tasks(..., backend="ray")``: an experiment's trainings as Ray tasks. Only that path imports this
module, so Ray stays an optional extra (``pip install -r requirements-ray.txt``).

Where they run: on the cluster at ``RAY_ADDRESS`` when it is set, otherwise on a Ray instance started
here for the sweep (this machine's cores, no dashboard, a small object store) and shut down after it.
A Ray session this process already holds is used as it is and left running.

On a cluster every node needs this gradnet_core and its dependencies installed, at the versions the
driver has: a task names the function it runs (e.g. ``digits_table._digit_pair_run``), it does not
carry its code. Progress comes back through a ``ray.util.queue.Queue`` (an actor).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Sequence

import ray
import torch
from ray.exceptions import RayTaskError
from ray.util.queue import Queue

from ..training import Progress
from .common import ProgressTracker, Task, _run_reporting

__all__ = ["run_on_ray"]

#: Object store of a Ray instance started here: tasks and results are small (images, table rows).
OBJECT_STORE_BYTES = 128 * 2**20


def run_on_ray(run: Callable[[Any, Callable[[Progress], None]], Task], tasks: Sequence[Any], labels: Sequence[str],
               tracker: ProgressTracker, jobs: int | None, order: Sequence[int],
               on_result: Callable[[int, Task], None] | None, threads: int) -> list[Task]:
    """``run_tasks`` on Ray: ``tasks`` submitted in ``order``, at most ``jobs`` at once (None: all, and Ray
    runs as many as the cluster has CPUs for), each on ``threads`` CPUs and as many torch threads."""
    started = not ray.is_initialized()
    if started:
        _start(threads)
    try:
        reports = Queue(actor_options={"num_cpus": 0})     # never waits for a CPU that a training holds
        try:
            return _sweep(run, tasks, labels, tracker, jobs, order, on_result, threads, reports)
        finally:
            reports.shutdown()                             # on a cluster its actor would outlive the sweep
    finally:
        if started:
            ray.shutdown()


def _sweep(run: Callable[[Any, Callable[[Progress], None]], Task], tasks: Sequence[Any], labels: Sequence[str],
           tracker: ProgressTracker, jobs: int | None, order: Sequence[int],
           on_result: Callable[[int, Task], None] | None, threads: int, reports: Queue) -> list[Task]:
    remote = ray.remote(_run_on_threads).options(num_cpus=threads)
    waiting = deque(order)
    running: dict[ray.ObjectRef, int] = {}
    results: dict[int, Task] = {}
    try:
        while waiting or running:
            while waiting and (jobs is None or len(running) < jobs):
                k = waiting.popleft()
                running[remote.remote(threads, run, tasks[k], k, reports)] = k
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            # A task's reports are in the queue before its result is ready: drain, then finish.
            for index, step, loss in reports.get_nowait_batch(reports.qsize()):
                tracker.report(index, labels[index], step, loss)
            for ref in done:
                k = running.pop(ref)
                results[k] = _result(ref)
                tracker.finish(k, labels[k])
                if on_result is not None:
                    on_result(k, results[k])
    except BaseException:
        for ref in running:                                # on a cluster they would run on for nobody
            ray.cancel(ref)
        raise
    return [results[k] for k in range(len(tasks))]


def _start(threads: int) -> None:
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    cores = os.cpu_count() or 1
    if threads > cores:
        # Ray would wait forever for a node with that many CPUs.
        raise ValueError(f"each training asks Ray for {threads} CPUs (--threads), but this machine has {cores}")
    ray.init(include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False)


def _run_on_threads(threads: int, run: Callable[[Any, Callable[[Progress], None]], Task], task: Any, index: int,
                    reports: Queue) -> Task:
    """One Ray task: ``run(task, callback)`` on ``threads`` torch threads, as a local pool worker runs it."""
    torch.set_num_threads(threads)
    return _run_reporting(run, task, index, reports)


def _result(ref: ray.ObjectRef) -> Any:
    try:
        return ray.get(ref)
    except RayTaskError as err:
        raise err.cause from err                           # the task's own error, as the local pool raises it
