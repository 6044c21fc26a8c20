"""Training in a background thread, observed through thread-safe snapshots (the app's job runner).

A ``TrainingJob`` runs ``train()`` in a daemon thread. The training callback only copies a few
numbers (and, every ``preview_every`` steps, a small preview of mapped points) into a snapshot under
a lock, so a user interface can poll ``job.snapshot()`` as often as it likes without slowing
training. ``stop()`` makes the callback return True at its next report; the partial model is kept.
An optional ``finish`` hook runs in the same thread after training (for example ground truth and
metrics), so the interface never blocks on it.

GPU training is serialised between jobs by a module-level lock (one model on the GPU at a time);
CPU jobs run concurrently.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
# Both imported here, by the script thread, before any training thread exists. torch.optim imports
# torch._dynamo (thousands of modules) with the first optimizer, which inside a training thread under
# GIL contention took minutes; and a training thread importing POT (which imports pandas) while Plotly
# peeks at the half-imported pandas in a live panel breaks that panel ("partially initialized module").
import ot  # noqa: F401
import torch
import torch._dynamo  # noqa: F401
from torch import Tensor

from gradnet_core.densities import Density
from gradnet_core.networks import TransportMap
from gradnet_core.training import Progress, TrainConfig, TrainResult, resolve_device, train

__all__ = ["TrainingJob", "JobSnapshot", "GPU_LOCK", "watch_session"]

#: Held by a job while it trains on a GPU, so sessions of one server take turns on the device.
GPU_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobSnapshot:
    """What a job has reported so far; immutable, safe to read from any thread."""

    phase: str                          # "queued" (for a slot), "waiting" (for the GPU), "training", "finishing", "done"
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


class TrainingJob:
    """``train(model, source, target, config)`` in a daemon thread.

    ``preview_points: (m, d)`` are mapped under ``torch.no_grad()`` at the start and then every
    ``preview_every`` steps (at the next progress report). ``finish(model, result)`` runs after
    training in the same thread; its return value is ``evaluation``. Any exception, in training or
    in ``finish``, ends the job with ``error`` set to its message.
    """

    def __init__(self, model: TransportMap, source: Density, target: Density, config: TrainConfig,
                 preview_points: Tensor | np.ndarray | None = None, preview_every: int = 200,
                 finish: Callable[[TransportMap, TrainResult], Any] | None = None,
                 cpu_threads: int | None = None, slots: Any = None):
        if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int)
                                        or cpu_threads < 1):
            raise ValueError(f"cpu_threads must be a positive integer or None; got {cpu_threads!r}")
        if isinstance(preview_every, bool) or not isinstance(preview_every, int) or preview_every < 1:
            raise ValueError(f"preview_every must be a positive integer; got {preview_every!r}")
        self.model, self.source, self.target, self.config = model, source, target, config
        self.preview_every = preview_every
        self.cpu_threads = cpu_threads
        self._preview_x = None if preview_points is None else torch.as_tensor(np.asarray(preview_points))
        self._finish = finish
        self._slots = slots               # a scheduler.Slots to wait for, or None to start at once
        self._lock = threading.Lock()
        self._state = _State(device=str(resolve_device(config.device)))
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
            return JobSnapshot(phase=s.phase, step=s.step, total=self.config.steps,
                               loss_steps=tuple(s.loss_steps), losses=tuple(s.losses),
                               steps_per_second=s.steps_per_second, eta=s.eta, elapsed=s.elapsed,
                               preview=s.preview, preview_step=s.preview_step, device=s.device,
                               info=dict(s.info))

    # worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        if self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)  # applies to the calling thread's parallel regions
        if self._slots is not None and not self._slots.acquire(self, self._stop.is_set):
            self.error = "The training was cancelled before it started."
            self._set(phase="done")
            self._done.set()
            return
        try:
            on_gpu = resolve_device(self.config.device).type == "cuda"
            if on_gpu:
                with GPU_LOCK:
                    result = self._train()
            else:
                result = self._train()
            self.result = result
            if self._finish is not None and not self._abandoned.is_set():
                self._set(phase="finishing")
                self.evaluation = self._finish(self.model, result)
        except torch.cuda.OutOfMemoryError:
            self.error = ("The GPU ran out of memory; use a smaller batch size or a smaller network, "
                          "or try again when other sessions have finished.")
        except ValueError as err:
            self.error = str(err)
        except Exception as err:  # the job must end with a message, whatever went wrong
            self.error = f"{type(err).__name__}: {err}"
        finally:
            if self._slots is not None:
                self._slots.release(self)
            self._set(phase="done")
            self._done.set()

    def _train(self) -> TrainResult:
        self._set(phase="training")
        if self._preview_x is not None:
            self._update_preview(self.model, 0)
        return train(self.model, self.source, self.target, self.config, self._callback)

    def _callback(self, progress: Progress) -> bool:
        due = progress.step - self._state.preview_step >= self.preview_every or progress.step == progress.total
        if self._preview_x is not None and due:
            self._update_preview(progress.model, progress.step)
        with self._lock:
            s = self._state
            s.step = progress.step
            s.loss_steps.append(progress.step)
            s.losses.append(progress.loss)
            s.steps_per_second = progress.steps_per_second
            s.eta = progress.eta
            s.elapsed = progress.elapsed
            s.device = progress.device
            s.info = dict(progress.info)
        return self._stop.is_set()

    def _update_preview(self, model: TransportMap, step: int) -> None:
        param = next(model.parameters())
        x = self._preview_x.to(param.device, param.dtype)
        with torch.no_grad():
            mapped = model(x).detach().to("cpu", torch.float64).numpy()
        self._set(preview=mapped, preview_step=step)

    def _set(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._state, key, value)

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
