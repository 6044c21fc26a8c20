"""Training jobs observed through thread-safe snapshots (the app's job runner).

A ``TrainingJob`` trains in a daemon thread of this process, or, given a ``workers.WorkerPool``, in one
of the pool's worker processes while a thread here relays its reports (the server then never shares
its interpreter lock with a training). Either way ``execute`` does the work: ``train()`` with a
callback that only reports a few numbers (and, every ``preview_every`` steps, a small preview of mapped
points), then the optional ``finish`` hook (for example ground truth and metrics), so a user interface
can poll ``job.snapshot()`` as often as it likes without slowing training. ``stop()`` ends training at
its next report, keeping the partial model; ``abandon()`` also skips the finish hook (a closed tab).

GPU training is serialised between jobs by a module-level lock (one model on the GPU at a time);
CPU jobs run concurrently, as many as the scheduler's slots allow.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from gradnet_core._pot import import_pot
from gradnet_core.densities import Density
from gradnet_core.networks import TransportMap
from gradnet_core.training import Progress, TrainConfig, TrainResult, resolve_device, train

# POT imported here, by the script thread, before any training thread exists: a training thread importing
# it (with scikit-learn, pandas, where those are already loaded) while Plotly peeks at a half-imported
# module in a live panel breaks that panel ("partially initialized module").
import_pot()

__all__ = ["TrainingJob", "JobSnapshot", "Work", "execute", "error_message", "GPU_LOCK", "watch_session",
           "RUN", "STOP", "ABANDON"]

#: Held by a job while it trains on a GPU, so sessions of one server take turns on the device.
GPU_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobSnapshot:
    """What a job has reported so far; immutable, safe to read from any thread."""

    phase: str                          # "queued" (for a slot), "waiting" (for the GPU), "starting" (a worker
                                        # process), "training", "finishing", "done"
    step: int                           # steps completed
    total: int                          # steps planned
    loss_steps: tuple[int, ...]         # step of each reported loss ...
    losses: tuple[float, ...]           # ... and the mean loss since the report before it
    steps_per_second: float             # average so far
    eta: float                          # seconds left at that speed (inf before the first report)
    elapsed: float                      # wall seconds of training so far
    preview: np.ndarray | None          # mapped preview points (m, d), None without preview points
    preview_step: int                   # the step the preview was computed at
    device: str                         # where the model trains
    info: dict[str, float] = field(default_factory=dict)   # the objective's numbers (Progress.info)
    note: str = ""                      # what training is doing in a second phase (Progress.note)

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


@dataclass
class _State:
    phase: str = "waiting"
    step: int = 0
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    steps_per_second: float = 0.0
    eta: float = math.inf
    elapsed: float = 0.0
    preview: np.ndarray | None = None
    preview_step: int = 0
    device: str = ""
    info: dict[str, float] = field(default_factory=dict)
    total: int = 0                      # steps planned, once training has reported (a second phase adds some)
    note: str = ""


#: What ``execute``'s ``control()`` returns: go on, stop at the next report, or stop and skip the finish hook.
RUN, STOP, ABANDON = 0, 1, 2


@dataclass
class Work:
    """Everything one training needs; picklable (for a worker process) when ``finish`` is, e.g. a
    ``functools.partial`` of a module-level function."""

    model: TransportMap
    source: Density
    target: Density
    config: TrainConfig
    preview_x: Tensor | None = None            # (m, d) points whose images the live panel shows
    preview_every: int = 200                   # steps between previews
    finish: Callable[[TransportMap, TrainResult], Any] | None = None
    cpu_threads: int | None = None             # torch threads for this training (None: leave as is)


def execute(work: Work, report: Callable[[dict[str, Any]], None],
            control: Callable[[], int]) -> tuple[TransportMap, TrainResult, Any, str | None]:
    """Train ``work.model`` in place and run the finish hook, telling ``report`` what changes (phase,
    step, loss, preview, ...) and asking ``control()`` at each progress report whether to go on
    (``RUN``, ``STOP``, ``ABANDON``). Returns (the trained map, ``TrainResult.map``: the model or the
    inverse of a network trained in reverse; the result; the finish hook's value or None; the finish
    hook's error message or None); an error in training raises."""
    if work.cpu_threads is not None:
        torch.set_num_threads(work.cpu_threads)   # applies to the calling thread's parallel regions
    model, preview_step = work.model, [0]

    def preview(trained: TransportMap, step: int) -> None:
        dtype, device = trained.dtype_and_device()
        with torch.no_grad():
            mapped = trained(work.preview_x.to(device, dtype)).detach().to("cpu", torch.float64)
        preview_step[0] = step
        report({"preview": mapped.numpy(), "preview_step": step})

    def callback(progress: Progress) -> bool:
        due = progress.step - preview_step[0] >= work.preview_every or progress.step == progress.total
        if work.preview_x is not None and due:
            preview(progress.model, progress.step)
        report({"step": progress.step, "total": progress.total, "loss": progress.loss,
                "steps_per_second": progress.steps_per_second, "eta": progress.eta, "elapsed": progress.elapsed,
                "device": progress.device, "info": dict(progress.info), "note": progress.note})
        return control() != RUN

    report({"phase": "training"})
    if work.preview_x is not None:
        preview(model, 0)
    result = train(model, work.source, work.target, work.config, callback)
    trained = result.map if result.map is not None else model
    evaluation = failed = None
    if work.finish is not None and control() != ABANDON:
        report({"phase": "finishing"})
        try:
            evaluation = work.finish(trained, result)
        except Exception as err:  # the trained model and its result are kept; the page says what failed
            failed = error_message(err)
    return trained, result, evaluation, failed


def error_message(err: BaseException) -> str:
    """What the page says when a training or its finish hook raised ``err``."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return ("The GPU ran out of memory; use a smaller batch size or a smaller network, "
                "or try again when other sessions have finished.")
    if isinstance(err, ValueError):
        return str(err)
    return f"{type(err).__name__}: {err}"


class TrainingJob:
    """``train(model, source, target, config)`` in a daemon thread, or in a worker process of ``pool``.

    ``preview_points: (m, d)`` are mapped under ``torch.no_grad()`` at the start and then every
    ``preview_every`` steps (at the next progress report). ``finish(model, result)`` runs after
    training in the same thread or process, with the trained map (``TrainResult.map``); its return value
    is ``evaluation``. Any exception, in training or in ``finish``, ends the job with ``error`` set to its
    message. Afterwards ``model`` is the trained map: ``model`` itself, trained in place (with a pool, from
    the worker's trained copy), or the inverse map of ``TrainConfig.direction``. With a pool, ``finish``
    must be picklable.
    """

    def __init__(self, model: TransportMap, source: Density, target: Density, config: TrainConfig,
                 preview_points: Tensor | np.ndarray | None = None, preview_every: int = 200,
                 finish: Callable[[TransportMap, TrainResult], Any] | None = None,
                 cpu_threads: int | None = None, slots: Any = None, pool: Any = None):
        if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int)
                                        or cpu_threads < 1):
            raise ValueError(f"cpu_threads must be a positive integer or None; got {cpu_threads!r}")
        if isinstance(preview_every, bool) or not isinstance(preview_every, int) or preview_every < 1:
            raise ValueError(f"preview_every must be a positive integer; got {preview_every!r}")
        self.model, self.config = model, config
        preview_x = None if preview_points is None else torch.as_tensor(np.asarray(preview_points))
        self._work = Work(model, source, target, config, preview_x, preview_every, finish, cpu_threads)
        self._slots = slots               # a scheduler.Slots to wait for, or None to start at once
        self._pool = pool                 # a workers.WorkerPool to train in, or None to train in the thread
        self._lock = threading.Lock()
        self._state = _State(device=str(resolve_device(config.device, model, config.batch_size)))
        self._stop = threading.Event()
        self._abandoned = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: TrainResult | None = None
        self.evaluation: Any = None
        self.error: str | None = None

    # control ---------------------------------------------------------------------------------
    def start(self) -> "TrainingJob":
        """Start the thread (once); returns the job. With slots, the job joins their line first (ValueError
        when it is full) and waits in phase "queued" for its turn."""
        if self._thread is not None:
            raise RuntimeError("this training job has already been started")
        if self._slots is not None:
            self._slots.admit(self)
            self._set(phase="queued")
        self._thread = threading.Thread(target=self._run, name="gradnet-training", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask training to end at its next progress report, keeping the model trained so far."""
        self._stop.set()

    def abandon(self) -> None:
        """Stop training and skip the finish hook: nobody is left to see the result (a closed tab)."""
        self._abandoned.set()
        self._stop.set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is done (or ``timeout`` seconds pass); True when done."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() and not self.done

    def snapshot(self) -> JobSnapshot:
        """A consistent copy of the latest progress."""
        with self._lock:
            s = self._state
            return JobSnapshot(phase=s.phase, step=s.step, total=s.total or self.config.steps,
                               loss_steps=tuple(s.loss_steps), losses=tuple(s.losses),
                               steps_per_second=s.steps_per_second, eta=s.eta, elapsed=s.elapsed,
                               preview=s.preview, preview_step=s.preview_step, device=s.device,
                               info=dict(s.info), note=s.note)

    # worker ----------------------------------------------------------------------------------
    def _control(self) -> int:
        return ABANDON if self._abandoned.is_set() else STOP if self._stop.is_set() else RUN

    def _run(self) -> None:
        if self._slots is not None and not self._slots.acquire(self, self._stop.is_set):
            self.error = "The training was cancelled before it started."
            self._set(phase="done")
            self._done.set()
            return
        try:
            on_gpu = resolve_device(self.config.device, self.model, self.config.batch_size).type == "cuda"
            if on_gpu:
                self._set(phase="waiting")        # its slot is free; the GPU may not be
                with GPU_LOCK:
                    self._execute()
            else:
                self._execute()
        except Exception as err:  # the job must end with a message, whatever went wrong
            self.error = error_message(err)
        finally:
            if self._slots is not None:
                self._slots.release(self)
            self._set(phase="done")
            self._done.set()

    def _execute(self) -> None:
        if self._pool is None:
            self.model, self.result, self.evaluation, self.error = execute(self._work, self._report, self._control)
            return
        self._set(phase="starting")
        trained, self.result, self.evaluation, self.error = self._pool.run(self._work, self._report, self._control)
        if trained is None:
            return
        if type(trained) is type(self.model):
            with torch.no_grad():
                self.model.load_state_dict(trained.state_dict())
        else:                                     # the inverse of a network trained in reverse
            self.model = trained

    def _report(self, update: dict[str, Any]) -> None:
        with self._lock:
            s = self._state
            for name, value in update.items():
                if name == "loss":
                    s.loss_steps.append(update["step"])
                    s.losses.append(value)
                else:
                    setattr(s, name, value)

    def _set(self, **values: Any) -> None:
        self._report(values)

    def __repr__(self) -> str:
        s = self.snapshot()
        return f"TrainingJob({s.phase}, step {s.step}/{s.total}, device {s.device})"


def watch_session(job: TrainingJob, is_active: Callable[[], bool], grace: float = 3.0,
                  poll: float = 0.5) -> threading.Thread:
    """Abandon ``job`` once ``is_active()`` has been False for ``grace`` seconds in a row (its browser tab was
    closed, or reloaded into a new session): a daemon thread polling every ``poll`` seconds until the job
    ends. The grace period lets a session that drops its connection for a moment keep its training."""
    def watch() -> None:
        gone_since = None
        while not job.wait(poll):
            if is_active():
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since >= grace:
                job.abandon()
                return

    thread = threading.Thread(target=watch, name="session-watch", daemon=True)
    thread.start()
    return thread
