"""The training loop: one for every objective, with progress callbacks.

``train(model, source, target, config, callback)`` runs ``config.steps`` optimiser steps of
``config.objective`` (a ``gradnet_core.objectives.Objective``: Monge–Ampère by default) and returns a
``TrainResult``. What the loop owns, once for every objective: the optimiser and its learning-rate
schedule, gradient clipping, the device, progress reports, stop requests, divergence recovery (the
last good model is restored) and out-of-memory splitting of batches. The loop never synchronises
with the device except when it reports (about every ``config.report_seconds``): losses are kept on
the device and read back in chunks, and divergence is detected per chunk.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Literal, NamedTuple

import torch
from torch import Tensor

from .densities import Density, Gaussian, GaussianMixture
from .networks import NETWORKS, GradientNetwork, InverseMap, RescaledMap, TransportMap, seeded_map
from .objectives import MongeAmpere, Objective, RunContext, Stepper, bandwidth_schedule, objective_from_dict
from .optim import SGD, Adam, Optimizer, learning_rate
from .verdict import SHORT_RUN_STEPS, Verdict, after_retries, after_short_run, assess_map, pushforward_gap

__all__ = ["TrainConfig", "TrainResult", "Progress", "Callback", "train", "bandwidth_schedule", "resolve_device",
           "step_work", "GPU_MIN_WORK",
           "OPTIMIZERS", "LR_SCHEDULES", "DIRECTIONS", "FALLBACK_STARTS"]

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
DIRECTIONS = ("forward", "reverse", "auto")
FALLBACK_STARTS = ("initial", "trained")
#: Attempt k of ``TrainConfig.attempts`` (k = 1, 2, ...) starts from weights and batches seeded with seed + this x k.
ATTEMPT_SEED_STRIDE = 1000


@dataclass
class TrainConfig:
    """How to train: the loop's settings and the objective. Defaults learn the paper's 2-D Gaussian
    map in a few seconds on a CPU."""

    steps: int = 1000                 # optimiser steps
    batch_size: int = 1000            # source samples per step
    lr: float = 1e-2                  # learning rate
    optimizer: str = "adam"           # "adam", "adamw" or "sgd"
    weight_decay: float = 0.0         # decoupled for adamw, L2 for the others
    lr_schedule: str = "constant"     # "constant", "step" (x lr_gamma every lr_step_size steps) or "cosine"
    lr_step_size: int = 1000          # steps between decays of the "step" schedule
    lr_gamma: float = 0.5             # decay factor of the "step" schedule
    clip_grad: float | None = None    # max gradient norm, None for no clipping
    seed: int = 0                     # seeds the batches (seed the model with torch.manual_seed)
    device: str = "auto"              # "auto" (CUDA when available and the step large enough: resolve_device),
    #                                   "cpu", "cuda", "cuda:1", ...
    report_seconds: float = 0.25      # wall time between progress reports (and divergence checks)
    assess: bool = True               # judge the trained map without ground truth (TrainResult.verdict)
    time_limit: float | None = None   # wall seconds: training stops there, keeps the model and says so
    direction: str = "forward"        # "forward": the model learns source -> target; "reverse": it learns target ->
    #                                   source and the map is its inverse (InverseMap; a density objective and a
    #                                   monotone map); "auto": forward, then, when the verdict flags that map and the
    #                                   run allows "reverse", reverse too, keeping the inverse if its pushforward
    #                                   matches the target (docs/method.md §4.8)
    average_from: float | None = None  # from this fraction of the steps on, keep a moving average of the weights; the
    #                                   map kept is the average or the last step's weights, whichever pushes the source
    #                                   nearer the target (docs/method.md §4.10); None: the last step's
    average_decay: float = 0.95       # the moving average's decay per step (about the last 1 / (1 - decay) steps)
    attempts: int = 1                 # training runs at most: while the verdict flags the map, train again from a
    #                                   fresh start (new weights and batches, seed + ATTEMPT_SEED_STRIDE x k), keeping
    #                                   the first map it passes, else the one nearest the target (docs/method.md §4.9)
    fallback: TrainConfig | None = None  # when the verdict still flags the map of a density objective (or passes
    #                                   it with little margin: fallback_from), the network trains again (from
    #                                   fallback_start) with these settings (their objective, steps, batch and rate;
    #                                   the run's seed, device and time limit) on the densities the map was judged on,
    #                                   and the map kept is the one nearer the target (docs/method.md §4.11); None: no
    #                                   fallback
    fallback_from: float = 1.0        # the fallback also trains when the transport check's excess is above this share
    #                                   of its tolerance: 1, only when the verdict flags the map; 0, whenever the check
    #                                   ran (in up to three dimensions)
    fallback_start: str = "initial"   # where the fallback starts: "initial", the network's starting weights; "trained",
    #                                   the weights the forward training of the map kept reached (docs/method.md §4.12)
    rescale: bool = True              # train a problem of Gaussians or mixtures whose spread or centre lies far from
    #                                   the scale the presets were tuned at in coordinates where it does not
    #                                   (problem_frame; the map is a RescaledMap, docs/method.md §4.14)
    objective: Objective = field(default_factory=MongeAmpere)   # what is minimised, with its own settings

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "lr_step_size", "attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("lr", "lr_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float))
                                                and math.isfinite(self.time_limit) and self.time_limit > 0):
            raise ValueError(f"time_limit must be a positive number of seconds or None; got {self.time_limit!r}")
        if self.average_from is not None and (isinstance(self.average_from, bool) or not (
                isinstance(self.average_from, (int, float)) and 0 <= self.average_from < 1)):
            raise ValueError(f"average_from must be a fraction of the steps in [0, 1) or None; got {self.average_from!r}")
        if isinstance(self.average_decay, bool) or not (isinstance(self.average_decay, (int, float))
                                                        and 0 < self.average_decay < 1):
            raise ValueError(f"average_decay must lie strictly between 0 and 1; got {self.average_decay!r}")
        if not (math.isfinite(self.report_seconds) and self.report_seconds >= 0):
            raise ValueError(f"report_seconds must be zero or positive; got {self.report_seconds!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be zero or positive; got {self.weight_decay!r}")
        if self.clip_grad is not None and not (math.isfinite(self.clip_grad) and self.clip_grad > 0):
            raise ValueError(f"clip_grad must be a positive number or None; got {self.clip_grad!r}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("direction", DIRECTIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if not isinstance(self.objective, Objective):
            raise ValueError(f"objective must be a gradnet_core objective (for example MongeAmpere()); "
                             f"got {type(self.objective).__name__}")
        if isinstance(self.fallback_from, bool) or not (isinstance(self.fallback_from, (int, float))
                                                        and 0 <= self.fallback_from <= 1):
            raise ValueError(f"fallback_from must be a share of the transport check's tolerance in [0, 1]; "
                             f"got {self.fallback_from!r}")
        if self.fallback_start not in FALLBACK_STARTS:
            raise ValueError(f"fallback_start must be one of {', '.join(FALLBACK_STARTS)}; "
                             f"got {self.fallback_start!r}")
        if self.fallback is not None:
            if not isinstance(self.fallback, TrainConfig):
                raise ValueError(f"fallback must be a TrainConfig or None; got {type(self.fallback).__name__}")
            if (self.fallback.fallback is not None or self.fallback.attempts != 1
                    or self.fallback.direction != "forward"):
                raise ValueError("a fallback trains once, forward: its own fallback must be None, its attempts 1 and "
                                 "its direction 'forward'")
        if self.direction == "reverse" and not self.objective.reversible:
            raise ValueError(f"direction 'reverse' trains a map from the target back to the source, which needs a "
                             f"density objective (Monge–Ampère or KL); the {self.objective.name} objective trains "
                             "forward only")

    @property
    def effective_fallback(self) -> "TrainConfig | None":
        """The fallback ``train`` runs with this config: ``fallback`` where the map is judged (``assess``) and the
        objective trains on the target's density (reverse KL can leave a component empty), else None: the map of an
        objective that compares samples is the one its user asked for."""
        return self.fallback if self.assess and self.objective.needs_target_density else None

    def with_steps(self, steps: int | None) -> "TrainConfig":
        """A copy that trains ``steps`` steps, its fallback too (a quick run is quick throughout); None: unchanged."""
        if steps is None:
            return self
        fallback = None if self.fallback is None else replace(self.fallback, steps=steps)
        return replace(self, steps=steps, fallback=fallback)

    def with_objective(self, **settings: Any) -> "TrainConfig":
        """A copy whose objective has some settings replaced."""
        return replace(self, objective=replace(self.objective, **settings))

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("objective", "fallback")}
        fallback = None if self.fallback is None else self.fallback.to_dict()
        return {**values, "fallback": fallback, "objective": self.objective.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """The config ``to_dict`` wrote; ValueError for unknown fields."""
        values = dict(values)
        objective = objective_from_dict(values.pop("objective", {"name": MongeAmpere.name}))
        fallback = values.pop("fallback", None)
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"TrainConfig has no setting {', '.join(unknown)}")
        return cls(**values, objective=objective, fallback=None if fallback is None else cls.from_dict(fallback))


@dataclass
class Progress:
    """What a training run reports to its callback."""

    step: int                          # steps completed
    total: int                         # steps planned
    loss: float                        # mean loss over the steps since the last report
    lr: float                          # current learning rate
    elapsed: float                     # wall seconds since the start
    steps_per_second: float            # average over the run so far
    device: str                        # where the model trains
    model: TransportMap                # the map being trained, live (evaluate it under torch.no_grad()): the
    #                                    model, or the inverse of the network a reverse phase trains
    objective: str = MongeAmpere.name  # the objective's name
    info: dict[str, float] = field(default_factory=dict)   # the objective's own numbers: "bandwidth"
    # (image densities), "outer_step", "outer_total", "inner_step", "inner_total", "kl" (constrained flow)
    note: str = ""                     # what the run is doing, when it has a second phase (direction "auto")

    @property
    def fraction(self) -> float:
        return self.step / self.total

    @property
    def eta(self) -> float:
        """Seconds left at the current speed."""
        return (self.total - self.step) / self.steps_per_second if self.steps_per_second > 0 else math.inf


#: Called with each report; return True to stop training after the current step.
Callback = Callable[[Progress], bool | None]


@dataclass
class TrainResult:
    """The outcome of ``train``: the per-step history and why training ended."""

    history: dict[str, list[float]]    # "step", "loss", "lr" and the objective's keys ("bandwidth", "kl", ...)
    stopped: Literal["completed", "stopped", "diverged"]
    message: str                       # one sentence for the user
    steps: int                         # optimiser steps kept in the model
    elapsed: float                     # wall seconds
    device: str                        # where training ran
    verdict: Verdict | None = None     # is the map right? (TrainConfig.assess; gradnet_core.verdict)
    map: TransportMap | None = field(default=None, repr=False)   # the trained map: the model, or the
    #                                    inverse of a network trained from the target back (direction)
    direction: str = "forward"         # how ``map`` was trained: "forward" or "reverse"
    fallback: str = ""                 # the objective's title when ``map`` is the one TrainConfig.fallback trained
    longer: bool = False               # that fallback trained the run's own objective on (more steps, not another)
    judged_on: tuple[Any, Any] | None = field(default=None, repr=False)   # the source and target the verdict
    #                                    judged the map on (an image at the schedule's last bandwidth); None unjudged
    phases: tuple[tuple[int, str], ...] = ()   # after several runs, each later run's start in ``history``'s steps
    #                                    (the step before its first) and what it trained: (1000, "Sinkhorn divergence")

    @property
    def final_loss(self) -> float:
        return self.history["loss"][-1] if self.history["loss"] else math.nan


#: ``device="auto"`` trains on the GPU only when a step's work, ``step_work``, reaches this. Below it a step is
#: bound by the host launching small kernels, not by the GPU: on an H200 (benchmarks/README.md, GPU round) the
#: digits preset's step launches 427 kernels that run 0.6 ms and takes 7.7 ms, against 1.6 ms on that machine's
#: CPU, and the app's 2-D presets (0.4-1.6 M) all train 3-6x faster on the CPU; the paper MNIST preset (25 M)
#: and the d = 16 networks (23-39 M) are 1.1-2.4x faster on the GPU, d = 64 (0.7-1.1 G) 3-16x.
GPU_MIN_WORK = 10_000_000


def step_work(model: TransportMap, batch_size: int) -> int:
    """A training step's size: batch x (parameters x d + d^3), the d x d Jacobian and its log det per sample."""
    d = model.dim
    return batch_size * (sum(p.numel() for p in model.parameters()) * d + d ** 3)


def resolve_device(device: str = "auto", model: TransportMap | None = None, batch_size: int | None = None
                   ) -> torch.device:
    """"auto" -> CUDA when available and, given the model and batch size, when the step is large enough to gain
    from it (``GPU_MIN_WORK``), else the CPU; anything else as torch understands it."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        small = model is not None and batch_size is not None and step_work(model, batch_size) < GPU_MIN_WORK
        return torch.device("cpu" if small else "cuda")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return resolved


def _make_optimizer(model: TransportMap, config: TrainConfig) -> Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return SGD(params, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9)
    return Adam(params, lr=config.lr, weight_decay=config.weight_decay, decoupled=config.optimizer == "adamw")


def _backward_in_chunks(stepper: Stepper, batch: tuple[Tensor, ...], chunks: int,
                        optimizer: Optimizer) -> tuple[Tensor, int]:
    """Backpropagate the batch loss, split into ``chunks`` parts whose gradients add up to the
    full batch's (the losses are batch means). On an out-of-memory error the split doubles and the
    step is retried; one sample at a time that still does not fit is reported as an error, and so is
    any out-of-memory error of an objective whose batches cannot be split."""
    n = batch[0].shape[0]
    while True:
        try:
            if chunks == 1:
                loss = stepper.loss(*batch)
                loss.backward()
                return loss.detach(), chunks
            total = batch[0].new_zeros(())
            for part_batch in zip(*(t.chunk(chunks) for t in batch)):
                part = stepper.loss(*part_batch) * (part_batch[0].shape[0] / n)
                part.backward()
                total += part.detach()
            return total, chunks
        except torch.OutOfMemoryError as err:
            optimizer.zero_grad()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not stepper.splittable:
                raise RuntimeError("the device ran out of memory; use a smaller batch size or a smaller "
                                   "network, or train on the CPU") from err
            if chunks >= n:
                raise RuntimeError("the device ran out of memory even with one sample at a time; "
                                   "use a smaller network or train on the CPU") from err
            chunks = min(2 * chunks, n)


def _snapshot(model: TransportMap) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _parameters_finite(model: TransportMap) -> bool:
    flat = [p.detach() for p in model.parameters()]
    if not flat:
        return True
    norms = torch.stack([torch.linalg.vector_norm(p) for p in flat])
    return bool(torch.isfinite(norms).all() and norms.max() < 1e8)


#: The scale the presets were tuned at: problems of Gaussians and mixtures whose pooled spread (the root mean
#: variance per axis of the source and the target taken together) lies in FRAME_SPREAD and whose centre lies within
#: FRAME_CENTRE of the origin on every axis train as they are: every preset (spread 1.1-1.7) and every random mixture
#: of the robustness benchmark (0.86-2.5, centres up to 2.8). Others train rescaled to FRAME_TARGET_SPREAD about
#: their centre: the 2 -> 3 preset scaled by 0.1, 0.01 or 100 had been flagged at 8-25 % L2-UVP (docs/method.md §4.14).
FRAME_SPREAD = (0.8, 2.5)
FRAME_CENTRE = 3.0
FRAME_TARGET_SPREAD = 1.5


class ProblemFrame(NamedTuple):
    """Coordinates a problem is learned in: u = (x - source_center) / scale for the source and
    v = (y - target_center) / scale for the target (``problem_frame``); the map is ``RescaledMap(network, *frame)``."""

    scale: float
    source_center: Tensor
    target_center: Tensor

    def inward(self, source: Density, target: Density) -> tuple[Density, Density]:
        """The two densities in the frame's coordinates."""
        return (source.scaled(1.0 / self.scale, -self.source_center / self.scale),
                target.scaled(1.0 / self.scale, -self.target_center / self.scale))

    def outward(self, source: Density, target: Density) -> tuple[Density, Density]:
        """The two densities back in the problem's coordinates."""
        return source.scaled(self.scale, self.source_center), target.scaled(self.scale, self.target_center)


def problem_frame(source: Any, target: Any) -> ProblemFrame | None:
    """(scale, source centre, target centre) for ``train`` to learn the problem in coordinates u = (x - c) / scale of
    the source and v = (y - c') / scale of the target, or None to learn it as it is: None unless both sides are 2-D
    Gaussians or mixtures whose spread or centre lies outside the presets' (FRAME_SPREAD, FRAME_CENTRE), the spread
    being the root mean variance per axis of both sides together about their midpoint. Each side is centred on its
    own mean and the scale brings the sides' own spread (about their means) to FRAME_TARGET_SPREAD: a target typed
    far from its source is the same problem moved, and one scale for both would have shrunk its components to specks
    (docs/method.md §4.14)."""
    if not all(isinstance(d, (Gaussian, GaussianMixture)) and d.dim == 2 for d in (source, target)):
        return None     # measured on the app's 2-D problems only; Fig. 2's (spread 3-11 at d = 16-256) train as given
    means = [d.mean.double().cpu() for d in (source, target)]
    center = 0.5 * (means[0] + means[1])
    own = sum(float(torch.trace(d.cov.double())) for d in (source, target))
    variance = (own + sum(float((m - center).square().sum()) for m in means)) / (2 * source.dim)
    spread = math.sqrt(max(variance, 0.0))
    if FRAME_SPREAD[0] <= spread <= FRAME_SPREAD[1] and float(center.abs().max()) <= FRAME_CENTRE:
        return None
    return ProblemFrame(math.sqrt(own / (2 * source.dim)) / FRAME_TARGET_SPREAD, means[0], means[1])


def train(model: TransportMap, source: Any, target: Any, config: TrainConfig | None = None,
          callback: Callback | None = None) -> TrainResult:
    """Train ``model`` in place so that it pushes ``source`` onto ``target``; the trained map is
    ``TrainResult.map``.

    ``source`` and ``target`` are ``Density`` objects, or ``(m, d)`` points (array or tensor) for the
    objectives that need only samples (``objectives.SAMPLE_OBJECTIVES``). The model trains on
    ``config.device`` and is returned to the device it came on. Densities are copied to the device
    (image bandwidths are annealed on the copies); the caller's densities are not changed.

    With ``config.direction`` "reverse" the model learns the map from the target back to the source and
    ``TrainResult.map`` is its inverse; with "auto" the model learns the forward map, and when the verdict
    flags it a copy of the model as it was before training learns the reverse one, and ``TrainResult.map``
    is the inverse when the verdict passes it (docs/method.md §4.8). A network trained in reverse gets the
    strict-convexity term if it lacks it (``GradientNetwork.add_strict_term``), so that its inverse maps every
    point. With ``config.attempts`` a flagged map is trained again from fresh starts; with ``config.fallback`` a map
    still flagged after them (or passed with little margin, ``config.fallback_from``) is trained once more, from the
    network's starting weights, on the fallback's settings, and the nearer map kept (docs/method.md §4.9, §4.11).
    Callers should use ``TrainResult.map``.
    """
    config = config or TrainConfig()
    if isinstance(model, (InverseMap, RescaledMap)):
        raise ValueError("an inverse or rescaled map is evaluated, not trained: train its network (its .base); for "
                         "the inverse, from the target to the source, or with direction='reverse'")
    frame = problem_frame(source, target) if config.rescale else None
    if frame is None:
        return _train(model, source, target, config, callback, None)
    # The network learns the map between the rescaled densities, at the scale the presets were tuned at; its
    # verdict, progress and the map returned are in the problem's own coordinates (RescaledMap).
    result = _train(model, *frame.inward(source, target), config, callback, frame)
    return replace(result, judged_on=None if result.judged_on is None else frame.outward(*result.judged_on))


def _train(model: TransportMap, source: Any, target: Any, config: TrainConfig, callback: Callback | None,
           frame: ProblemFrame | None) -> TrainResult:
    """``train``, the problem in ``frame``'s coordinates (``ProblemFrame.inward``), or as it is for None."""
    if not isinstance(model, TransportMap):
        raise ValueError(f"model must be a gradnet_core map (TransportMap); got {type(model).__name__}")
    densities = isinstance(source, Density) and isinstance(target, Density)
    if config.direction == "reverse":
        if not model.monotone:
            raise ValueError(f"direction 'reverse' inverts the trained network, so it needs a monotone map (an "
                             f"mGradNet); {type(model).__name__} is not monotone")
        if not densities:
            raise ValueError("direction 'reverse' needs the source and the target as densities")
        return _train_one_way(model, source, target, config, callback, reverse=True, frame=frame)
    # "auto" falls back to forward alone where there is no verdict to ask or nothing to invert
    can_reverse = config.objective.reversible and model.monotone and densities and config.assess
    auto = config.direction == "auto" and can_reverse
    # a fresh start needs a network it can build again: one of the registry's, as seeded_map builds them
    attempts = config.attempts if config.assess and type(model) in NETWORKS.values() else 1
    template = copy.deepcopy(model) if attempts > 1 else None
    fallback = config.effective_fallback
    same = fallback is not None and fallback.objective.heading == config.objective.heading
    if same and config.steps < SHORT_RUN_STEPS:
        # A fallback on the run's own objective (the Gaussian preset's, on the Monge-Ampere loss without a target's
        # smoothing, which a Gaussian never has) is more of the same training: a run asked for with few steps (a
        # class shown what 3 steps give) stays that short, and its verdict says to train longer (after_short_run).
        fallback = None
    warm = config.fallback_start == "trained"
    initial = copy.deepcopy(model) if fallback is not None and not warm else None
    forward: dict[int, TransportMap] = {}        # each attempt's network trained forward (fallback_start "trained")
    runs: list[_Run] = []
    kept: _Run | None = None
    cut = ""                                     # why the runs ended while the map kept was flagged
    for attempt in range(1, attempts + 1):
        if kept is not None:
            if not _flagged(kept.result) or runs[-1].result.stopped != "completed":
                break
            if _time_left(config, runs) <= 0:
                cut = "the time limit left no time to train it again"
                break
        seed = config.seed + ATTEMPT_SEED_STRIDE * (attempt - 1)
        network = model if attempt == 1 else _fresh(template, seed)
        before = copy.deepcopy(network) if auto else None
        best = _run(network, source, target, replace(config, seed=seed), callback, runs, attempt, attempts,
                    reverse=False, frame=frame)
        forward[attempt] = network
        if before is not None and _flagged(best.result):
            if _time_left(config, runs) <= 0:
                cut = "the time limit left no time to train it from the target back"
            else:
                back = _run(before, source, target, replace(config, seed=seed), callback, runs, attempt, attempts,
                            reverse=True, frame=frame)
                best = _nearer(best, back, strewn=True)
        kept = best if kept is None else _nearer(kept, best)
    if fallback is not None and _doubtful(kept.result, config.fallback_from) and runs[-1].result.stopped == "completed":
        if _time_left(config, runs) <= 0:
            if _flagged(kept.result):
                cut = f"the time limit left no time to train it on the {fallback.objective.title}"
        else:
            settings = replace(fallback, seed=config.seed, device=config.device, time_limit=config.time_limit,
                               report_seconds=config.report_seconds, assess=True)
            # A copy: where the fallback's map lands further from the target, the kept one stays as it was.
            start = copy.deepcopy(forward[kept.attempt]) if warm else initial
            # the steps that network took before, for the message's count of this network's steps
            before = next((int(run.result.history["step"][-1]) for run in runs if run.attempt == kept.attempt
                           and not run.reverse and not run.fallback and run.result.history["step"]), 0) if warm else 0
            # On the densities the kept map was judged on (an image at the schedule's last bandwidth, not the blur
            # handed to train), so that both maps are judged alike and a fallback on samples draws sharp ones.
            kept = _nearer_of_two(kept, _run(start, *kept.result.judged_on, settings, callback, runs, len(runs) + 1,
                                             attempts, reverse=False, fallback=True,
                                             standing=_standing(kept.result, config.fallback_from), warm=warm,
                                             frame=frame, longer=same, before=before))
    history, phases = runs[0].result.history, []
    for later in runs[1:]:
        phases.append((int(history["step"][-1]) if history["step"] else 0, later.phase))
        history = _joined(history, later.result.history)
    verdict = kept.result.verdict
    if verdict is not None and not verdict.ok:
        if config.steps < SHORT_RUN_STEPS:
            verdict = after_short_run(verdict, config.steps)
        elif len(runs) > 1:
            verdict = after_retries(verdict)
    return replace(kept.result, history=history, elapsed=sum(r.result.elapsed for r in runs),
                   message=_account(runs, kept, cut, config.fallback_from), verdict=verdict, fallback=kept.fallback,
                   longer=kept.longer, phases=tuple(phases))


@dataclass(frozen=True)
class _Run:
    """One training run of ``train``: attempt ``attempt`` (a fresh start of ``TrainConfig.attempts`` after the
    first), trained from the source, or with ``reverse`` from the target back (direction "auto")."""

    result: TrainResult
    attempt: int
    reverse: bool
    fallback: str = ""         # the objective's title, for a run of TrainConfig.fallback
    warm: bool = False         # a fallback that went on from the trained weights (TrainConfig.fallback_start)
    longer: bool = False       # a fallback on the run's own objective: more of the same training, not another loss
    before: int = 0            # a warm fallback's: the steps its network took before it

    @property
    def tried(self) -> str:
        """How this run trained the network again, for the final message."""
        if self.longer:
            # a review read "trained again on the Monge-Ampere loss" after a run on that loss as a repeat
            return (f"for {_more_steps(self.result.steps)} on the same loss, going on from the weights it reached"
                    if self.warm else "from its starting weights on the same loss")
        if self.fallback:
            return (f"on the {self.fallback}, going on from the weights it reached" if self.warm
                    else f"from its starting weights on the {self.fallback}")
        if self.attempt == 1:
            return "from the target back"
        return f"from the target back in attempt {self.attempt}" if self.reverse else \
            f"from a fresh start (attempt {self.attempt})"

    @property
    def phase(self) -> str:
        """What this run trained, in a few words, to mark its start on a loss curve."""
        if self.longer:
            return _more_steps(self.result.steps) if self.warm else "the same loss from the start"
        if self.fallback:
            return self.fallback
        back = "from the target back"
        if self.attempt == 1:
            return back
        return f"attempt {self.attempt}, {back}" if self.reverse else f"attempt {self.attempt}"

    @property
    def shown(self) -> str:
        """This run's map, named in the final message."""
        if self.longer:
            return "the one trained longer" if self.warm else "the one trained again from its starting weights"
        if self.fallback:
            return f"the one trained on the {self.fallback}"
        if self.reverse:
            whose = "the network" if self.attempt == 1 else f"attempt {self.attempt}'s network"
            return f"the inverse of {whose} trained from the target back"
        return "the first" if self.attempt == 1 else f"attempt {self.attempt}'s"


def _flagged(result: TrainResult) -> bool:
    """A completed run whose map the verdict flags: one another run may improve on."""
    return result.stopped == "completed" and result.verdict is not None and not result.verdict.ok


def _doubtful(result: TrainResult, share: float) -> bool:
    """A completed run whose map the verdict flags, or passes with its transport excess above ``share`` of the
    tolerance (the near misses: a split a few per cent off passes the check, docs/method.md §4.11)."""
    if result.stopped != "completed" or result.verdict is None:
        return False
    verdict = result.verdict
    if not verdict.ok:
        return True
    excess, tolerance = verdict.transport_excess, verdict.transport_tolerance
    return excess is not None and tolerance is not None and (share == 0 or excess > share * tolerance)


def _standing(result: TrainResult, share: float) -> str:
    """How the map a fallback follows stood, for the notes: "was flagged", "passed, but only just" (its transport
    excess above ``share`` of the tolerance), or "passed" (``share`` 0: a fallback that follows every map)."""
    if _flagged(result):
        return "was flagged"
    return "passed" if share == 0 else "passed, but only just"


def _time_left(config: TrainConfig, runs: list[_Run]) -> float:
    return math.inf if config.time_limit is None else config.time_limit - sum(r.result.elapsed for r in runs)


def _fresh(template: TransportMap, seed: int) -> TransportMap:
    """A new network of ``template``'s registry class and settings, on its device and dtype, seeded with ``seed``."""
    fresh = seeded_map(type(template).__name__, seed, **template.config())
    return fresh.to(device=next(template.parameters()).device, dtype=next(template.parameters()).dtype)


def _run(model: TransportMap, source: Any, target: Any, config: TrainConfig, callback: Callback | None,
         runs: list[_Run], attempt: int, attempts: int, reverse: bool, fallback: bool = False,
         standing: str = "", warm: bool = False, frame: ProblemFrame | None = None, longer: bool = False,
         before: int = 0) -> _Run:
    """Train one run after ``runs`` (appended to them), its progress counted on from theirs, with a note saying what
    it does when it is not the first; ``standing``: how the map a fallback follows stood (_standing); ``warm``: a
    fallback that goes on from the trained weights."""
    lead = f"Attempt {attempt} of {attempts}: " if attempt > 1 and not fallback else ""
    if fallback:
        how = "goes on training from the weights it reached" if warm else "trains again from its starting weights"
        note = f"The map {standing}: the network {how} on the {config.objective.heading}, {_what_it_sees(config)}."
    elif reverse:
        note = _sentence(lead, "the map from the source was flagged: training a second network from the target back "
                               "to the source, whose inverse may do better.")
    else:
        note = lead + "the map was flagged, so the network trains again from a fresh start." if lead else ""
    done = sum(r.result.history["step"][-1] for r in runs if r.result.history["step"])
    phase = _Phase(offset=done, total=done + config.steps, elapsed=sum(r.result.elapsed for r in runs), note=note)
    remaining = _time_left(config, runs)
    config = replace(config, time_limit=None if math.isinf(remaining) else remaining)
    result = _train_one_way(model, source, target, config, callback, reverse=reverse, phase=phase, frame=frame)
    runs.append(_Run(result, attempt, reverse, config.objective.heading if fallback else "", warm, longer, before))
    return runs[-1]


def _what_it_sees(config: TrainConfig) -> str:
    """Why a fallback's objective can do what the run before it did not, for its note."""
    if not config.objective.needs_target_density:
        return "which compares the mapped points with the target's samples as a whole"
    if config.objective.heading != config.objective.title:       # a density objective with its Sinkhorn term
        return ("whose Sinkhorn term first moves mass between the target's parts as a whole, then fades so that the "
                f"{config.objective.title} sharpens each part's shape")
    return f"for {config.steps} more steps"


def _nearer(first: _Run, second: _Run, strewn: bool = False) -> _Run:
    """Of two runs, ``first`` completed and flagged: ``second`` when it completed and the verdict passes it, else the
    one whose pushforward is nearer the target in W2 (the transport check, which ranked the benchmark's maps as their
    exact error did: docs/method.md §6.8), else ``first``.

    With ``strewn`` (``second`` the run back of direction "auto"), ``second`` is also kept when its only fault named
    is the source mass it sends where the target is thin: such an inverse was better than the flagged forward map in
    24 of 25 MNIST runs (docs/method.md §4.8); judged at the schedule's last bandwidth it can show a large W2 excess
    (the blurred source's rim, which the network trained back never reached, lands between the strokes) while its
    error at the authors' final bandwidth is small, so that rule comes before the comparison."""
    one, two = first.result.verdict, second.result.verdict
    if second.result.stopped != "completed" or two is None:
        return first
    if two.ok or (strewn and set(two.failed) - {"transport"} == {"misplaced"}):
        return second
    if one is not None and one.transport is not None and two.transport is not None:
        return second if two.transport_excess < one.transport_excess else first
    return first


def _nearer_of_two(first: _Run, second: _Run) -> _Run:
    """Of the first map and the fallback's, ``second``: a fallback that went on from the trained weights (``warm``)
    when the verdict passes it, since it is the same network trained further (not when ``first`` is the inverse of
    a network trained back: the fallback went on from the one trained forward); never a flagged map for a passed one;
    otherwise the one whose pushforward is nearer the target (the transport check's excess; both judged on the same
    samples), where the check ran, else ``second`` when the verdict passes it and not ``first``. On 44 mixture runs
    trained both ways from the starting weights the nearer was the more accurate map every time (docs/method.md
    §4.11); after a warm fallback the transport check can miss a seam the first map has put in the wrong place, which
    the fallback moves (§4.13)."""
    one, two = first.result.verdict, second.result.verdict
    if second.result.stopped != "completed" or two is None:
        return first
    if two.ok and second.warm and not first.reverse:
        return second
    if one is not None and one.ok and not two.ok:
        return first
    if one is not None and one.transport is not None and two.transport is not None:
        return second if two.transport_excess < one.transport_excess else first
    return second if two.ok and (one is None or not one.ok) else first


def _more_steps(n: int) -> str:
    """"1 more step", "800 more steps"."""
    return f"{n:,} more step{'' if n == 1 else 's'}"


def _account(runs: list[_Run], kept: _Run, cut: str, share: float = 1.0) -> str:
    """The final message: the kept run's own, and after several runs one sentence before it on what was tried
    and which map is shown; ``share``: TrainConfig.fallback_from, for how the first map stood (_standing)."""
    tail = f" The map was flagged, and {cut}." if cut else ""
    if len(runs) == 1:
        return kept.result.message + tail
    tried = [run.tried for run in runs[1:]]
    series = tried[0] if len(tried) == 1 else ", ".join(tried[:-1]) + " and " + tried[-1]
    last = runs[-1].result
    first = runs[0].result.verdict
    doubt = first is not None and first.ok           # trained again after a pass (TrainConfig.fallback_from)
    standing = _standing(runs[0].result, share) if doubt else "was flagged"
    # "passed": a phase that follows every map (fallback_from 0), said so, so that a pass followed by more training
    # does not read as a contradiction
    why = f" ({first.fault})" if first is not None and not first.ok and first.fault else ""
    if (standing == "passed" and len(runs) == 2 and kept is runs[-1] and kept.warm and last.stopped == "completed"
            and last.verdict is not None and last.verdict.ok):
        # The usual end of the digit and mixture presets, told in one sentence (a review found the long account
        # below hard to read after every digit): the kept run's own message without its "Trained N steps" sentence.
        rest = kept.result.message.partition(". ")[2]
        return (f"The map passed after {runs[0].result.steps:,} steps and, as these settings always do, trained "
                f"{last.steps:,} more on the {kept.fallback} from there; it passes again, and that is the map shown."
                + (f" {rest}" if rest else "") + tail)
    said = (f"The first map passed; as after every map with these settings, the network was then trained {series}"
            if standing == "passed" else f"The first map {standing}{why}, so the network was trained again {series}")
    if last.stopped != "completed":
        which = "which" if len(tried) == 1 else "the last of which"
        said += f", {which} did not finish ({last.message.rstrip('.')}); the map shown is {kept.shown}"
    elif doubt:
        # both passed and the nearer kept, or the map kept passes (a warm fallback's; the first over a flagged one)
        nearer = not runs[-1].warm and last.verdict is not None and last.verdict.ok
        said += f"; the map shown is {kept.shown}, {'which lands nearer the target' if nearer else 'which passes'}"
    elif kept.result.verdict is not None and kept.result.verdict.ok:
        said += f"; the map shown is {kept.shown}, which passes"
    else:
        said += ("; it was" if len(tried) == 1 else "; they were") + f" flagged too, and the map shown is {kept.shown}"
        if kept.result.verdict is not None and kept.result.verdict.transport is not None:
            said += ", judged the nearest the target"
    own = kept.result.message
    if kept.warm and kept.fallback:
        # its "Trained 800 steps" beside the table's 1,000, the steps of every run (a review): this network's own
        # steps, and every run's where other networks trained too (a fresh start, a network trained back)
        network = kept.before + kept.result.steps
        total = int(sum(run.result.history["step"][-1] for run in runs if run.result.history["step"]))
        start = f"Trained {kept.result.steps} step{'' if kept.result.steps == 1 else 's'}"
        if kept.before and own.startswith(start):
            count = f"{network:,} in all" if total == network else f"{network:,} on this network, {total:,} in all"
            own = f"Trained {_more_steps(kept.result.steps)} ({count}){own[len(start):]}"
    return f"{said}. {own}{tail}"


@dataclass(frozen=True)
class _Phase:
    """Where a run sits in the whole (a fresh start of ``TrainConfig.attempts``, or the run back of direction
    "auto"): the steps and seconds before it and the total so far, for progress reports, and its note."""

    offset: int
    total: int
    elapsed: float
    note: str


def _sentence(lead: str, text: str) -> str:
    """``text`` after ``lead``, or alone with a capital first letter."""
    return lead + text if lead else text[:1].upper() + text[1:]


def _relay(callback: Callback | None, shown: TransportMap | None, phase: _Phase) -> Callback | None:
    """The callback a run reports to: the caller's, with the map being trained (``shown``, when it is not the
    model itself) and, after a first run, steps and seconds counted over the whole (``phase``)."""
    if callback is None or (shown is None and phase.offset == 0 and phase.elapsed == 0 and not phase.note):
        return callback

    def relay(progress: Progress) -> bool | None:
        return callback(replace(progress, step=progress.step + phase.offset, total=phase.total,
                                model=progress.model if shown is None else shown,
                                elapsed=progress.elapsed + phase.elapsed, note=phase.note))

    return relay


def _train_one_way(model: TransportMap, source: Any, target: Any, config: TrainConfig, callback: Callback | None,
                   reverse: bool, phase: _Phase | None = None,
                   frame: ProblemFrame | None = None) -> TrainResult:
    """One training run of ``model``: from source to target, or with ``reverse`` from target to source,
    the map then being its inverse; judged as a map from source to target when ``config.assess``. With ``frame``
    (a ``ProblemFrame``) the densities are the problem's in its coordinates: the map (``TrainResult.map``, also
    in the progress reports) is a RescaledMap, judged on the problem's own densities; ``judged_on`` stays rescaled."""
    device = resolve_device(config.device, model, config.batch_size)
    home = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    run = RunContext(steps=config.steps, batch_size=config.batch_size, device=device, dtype=dtype,
                     generator=torch.Generator(device=device).manual_seed(config.seed), seed=config.seed)
    phase = phase or _Phase(0, config.steps, 0.0, "")
    start, end = (target, source) if reverse else (source, target)
    if reverse and isinstance(model, GradientNetwork):
        # Without the strict term an mGradNet-M's range is bounded, and source points outside it have no
        # image under the inverse (a Gaussian source's tail: 0.2 % of the points, an energy distance 18x).
        model.add_strict_term()
    shown = InverseMap(model) if reverse else model
    if frame is not None:
        shown = RescaledMap(shown, *frame)
    model.to(device)
    try:
        stepper = config.objective.bind(model, start, end, run)
        average = _MovingAverage.of(model, config)
        result = _loop(model, stepper, config, run, _relay(callback, None if shown is model else shown, phase),
                       average)
        if average is not None and result.stopped != "diverged":
            result.message += _settle_average(model, average, *stepper.judged(start, end), seed=config.seed)
        result.map, result.direction = shown, "reverse" if reverse else "forward"
        if config.assess:
            model.eval()
            judged = stepper.judged(start, end)
            result.judged_on = judged[::-1] if reverse else judged
            problem = result.judged_on if frame is None else frame.outward(*result.judged_on)
            try:
                result.verdict = assess_map(shown, *problem, seed=config.seed, jacobian=stepper.judged_by_jacobian)
            except torch.OutOfMemoryError:
                # Training split its batches to fit; the verdict's 1000 points at once may not fit.
                result.message += " No verdict: the device ran out of memory while judging the map."
        return result
    finally:
        model.eval()
        model.to(home)


def _joined(first: dict[str, list[float]], second: dict[str, list[float]]) -> dict[str, list[float]]:
    """Two runs' histories as one: the second's steps counted on from the first's last. A key only one of them
    records (a fallback on another objective records other keys) gets NaN for each of the other's steps."""
    before, after = len(first.get("step", [])), len(second.get("step", []))
    history = {key: list(values) for key, values in first.items()}
    shift = first["step"][-1] if before else 0
    for key, values in second.items():
        history.setdefault(key, [math.nan] * before).extend([v + shift for v in values] if key == "step" else values)
    for key in set(first) - set(second):
        history[key].extend([math.nan] * after)
    return history


class _MovingAverage:
    """An exponential moving average of the parameters over the steps from ``start`` on. With a constant learning
    rate the last step's weights jitter about the minimum they found, and their average often lies nearer it
    (docs/method.md §4.10). Any weights of a monotone network make a monotone map, so the average's does."""

    def __init__(self, params: list[Tensor], start: int, decay: float):
        self.params, self.start, self.decay, self.count = params, start, decay, 0
        self.values = [p.detach() for p in params]      # views of the parameters, which the optimiser updates in place
        self.mean: list[Tensor] = []

    @classmethod
    def of(cls, model: TransportMap, config: TrainConfig) -> "_MovingAverage | None":
        if config.average_from is None:
            return None
        return cls([p for p in model.parameters() if p.requires_grad], round(config.average_from * config.steps),
                   config.average_decay)

    def update(self, step: int) -> None:
        if step < self.start:
            return
        self.count += 1
        if self.count == 1:
            self.mean = [v.clone() for v in self.values]
        else:
            torch._foreach_lerp_(self.mean, self.values, 1.0 - self.decay)

    def swap(self) -> None:
        """Exchange the parameters and the average."""
        for v, m in zip(self.values, self.mean):
            held = v.clone()
            v.copy_(m)
            m.copy_(held)


def _settle_average(model: TransportMap, average: _MovingAverage, source: Any, target: Any, seed: int) -> str:
    """Keep in ``model`` its last step's weights or their moving average, whichever maps ``source`` nearer
    ``target`` (``verdict.pushforward_gap``, the same samples for both); a sentence for the message saying which.

    The average alone was nearer the exact map on 100 of 132 mixture runs, but on a few it was much further (an
    L2-UVP of 6 % became 23 %: a split between components smeared); the comparison keeps those at their last
    step (docs/method.md §4.10)."""
    if not average.count:
        return ""
    was = model.training
    model.eval()
    try:
        last = pushforward_gap(model, source, target, seed=seed)
        average.swap()
        mean = pushforward_gap(model, source, target, seed=seed)
    finally:
        model.train(was)
    if mean <= last:
        return (f" The map kept averages the network's weights over its last {round(1 / (1 - average.decay))} or so "
                "steps: it lands nearer the target than the last step's.")
    average.swap()
    return " The map kept has the last step's weights: they land nearer the target than their recent average."


def _loop(model: TransportMap, stepper: Stepper, config: TrainConfig, run: RunContext,
          callback: Callback | None, average: "_MovingAverage | None" = None) -> TrainResult:
    optimizer = _make_optimizer(model, config)
    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": [], **{k: [] for k in stepper.history_keys}}
    per_step = list(history)                     # keys with one value per step, trimmed on divergence
    losses: list[Tensor] = []                    # per-step losses since the last report, on the device
    good_state, good_step = _snapshot(model), 0
    chunks = 1                                   # batch split for GPU memory; grows on out-of-memory
    reported = 0
    stopped: str = "completed"
    message = ""
    start = time.perf_counter()
    last_report = start

    model.train()
    for step in range(config.steps):
        for key, value in stepper.begin(step).items():
            history[key].append(value)
        optimizer.lr = learning_rate(config.lr, step, config.lr_schedule, config.steps, config.lr_step_size,
                                     config.lr_gamma)
        history["lr"].append(optimizer.lr)
        batch = stepper.batch(step)
        optimizer.zero_grad()
        loss, chunks = _backward_in_chunks(stepper, batch, chunks, optimizer)
        if config.clip_grad is not None:
            optimizer.clip_grad_norm_(config.clip_grad)
        optimizer.step()
        if average is not None:
            average.update(step)
        losses.append(stepper.recorded(loss).detach())

        now = time.perf_counter()
        last = step + 1 == config.steps
        if not last and not stepper.report_due(step + 1) and now - last_report < config.report_seconds:
            continue
        chunk = torch.stack(losses).tolist()
        losses.clear()
        history["step"].extend(range(reported + 1, step + 2))
        history["loss"].extend(chunk)
        reported = step + 1
        if not all(math.isfinite(v) for v in chunk) or not _parameters_finite(model):
            bad = next((i for i, v in enumerate(history["loss"]) if not math.isfinite(v)), step)
            bad_loss = history["loss"][bad] if bad < len(history["loss"]) else math.nan
            model.load_state_dict(good_state)
            stopped = "diverged"
            message = stepper.diverged_message(bad + 1, bad_loss, good_step)
            break
        good_state, good_step = _snapshot(model), reported
        last_report = now
        if callback is not None:
            elapsed = now - start
            progress = Progress(step=reported, total=config.steps, loss=sum(chunk) / len(chunk),
                                lr=optimizer.lr, elapsed=elapsed,
                                steps_per_second=reported / elapsed if elapsed > 0 else 0.0,
                                device=str(run.device), model=model, objective=config.objective.name,
                                info=stepper.info())
            if callback(progress) and not last:
                stopped = "stopped"
                message = stepper.stopped_message(reported, config.steps)
                break
        if config.time_limit is not None and now - start >= config.time_limit and not last:
            stopped = "stopped"
            message = (f"Stopped at the time limit of {config.time_limit:g} s after {reported:,} of "
                       f"{config.steps:,} steps; the model is kept as it was then.")
            break

    kept = good_step if stopped == "diverged" else reported
    if stopped == "diverged":
        for key in per_step:
            del history[key][good_step:]
    stepper.finish(history, kept, completed=stopped == "completed")
    if stopped == "completed":
        message = stepper.completed_message(history, config.steps)
    if chunks > 1:
        message += (f" The device ran out of memory, so each batch of {config.batch_size} was processed "
                    f"in {chunks} parts (same gradients, slower).")
    return TrainResult(history=history, stopped=stopped, message=message, steps=kept,
                       elapsed=time.perf_counter() - start, device=str(run.device))
