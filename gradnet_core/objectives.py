"""What a training run minimises: one small config class per method, plugged into ``training.train``.

The training loop (``gradnet_core.training``) owns everything that is the same for every method:
optimiser, learning-rate schedule, clipping, progress reports, stop requests, divergence recovery,
out-of-memory splitting and the device. An objective is a frozen dataclass of its own settings; its
``bind`` validates the inputs and returns a ``Stepper``, the per-run state the loop drives step by step:

    for each step:  values = stepper.begin(step)     # per-step setup (bandwidth, critic, outer step)
                    batch = stepper.batch(step)       # tensors split along dim 0 on out-of-memory
                    loss = stepper.loss(*batch)       # a batch mean, backpropagated by the loop

The objectives (docs/method.md §3):

- ``MongeAmpere``: the Monge–Ampère residual log det J_T(x) - log p(x) + log q(T(x)) (GradNetOT).
- ``ReverseKL``: KL(T#p || q) = E_p[log p - log det J_T - log q(T)].
- ``GaussianMomentKL``, ``SinkhornLoss``, ``AdversarialW1``: need only samples of the target.
- ``ConstrainedFlow``: the constrained Wasserstein gradient flow of KL(T#p || q) (Dumont et al. 2026).

``OBJECTIVES`` maps each name (``Objective.name``) to its class, for select boxes and saved settings.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor

from .densities import MIN_BANDWIDTH, Density, GaussianMixture, ImageDensity, as_tensor
from .flow import entropic_score, log_concave_target, pushforward_score
from .losses import LOSSES, RESIDUALS
from .networks import GradientNetwork, TransportMap, autograd_map_and_logdet
from .optim import Adam
from .sample_losses import Critic, gaussian_moment_kl, gaussian_moments, gradient_penalty, sinkhorn_divergence

__all__ = ["Objective", "Stepper", "RunContext", "MongeAmpere", "ReverseKL", "GaussianMomentKL", "SinkhornLoss",
           "AdversarialW1", "ConstrainedFlow", "OBJECTIVES", "SAMPLE_OBJECTIVES", "objective_from_dict",
           "as_samples", "bandwidth_schedule", "smoothing_schedule"]


@dataclass
class RunContext:
    """What the loop tells an objective about the run it is bound to."""

    steps: int                         # optimiser steps planned
    batch_size: int                    # source samples per step
    device: torch.device               # where the model trains
    dtype: torch.dtype                 # the model's floating-point type
    generator: torch.Generator         # seeded, on ``device``: every random draw of the run
    seed: int                          # the run's seed (for generators on other devices)


def _steps(n: int) -> str:
    """"1 step", "600 steps": for the messages."""
    return f"{n} step{'' if n == 1 else 's'}"


class Stepper(ABC):
    """One run of an objective: the state the training loop drives. Subclasses implement ``batch``
    and ``loss`` and override the other hooks where they need to."""

    #: Extra per-step history keys; ``begin`` returns a value for each of them every step.
    history_keys: tuple[str, ...] = ()
    #: Whether a batch may be split into parts whose gradients add up to the whole batch's (a batch
    #: mean of per-sample terms); the loop splits such batches when the device runs out of memory.
    splittable: bool = True
    #: Appended to the divergence message: what the user can change.
    divergence_hint: str = "Try a smaller learning rate or gradient clipping."

    def begin(self, step: int) -> dict[str, float]:
        """Called before step ``step`` (0-based); returns the values of ``history_keys`` for it."""
        return {}

    @abstractmethod
    def batch(self, step: int) -> tuple[Tensor, ...]:
        """The tensors of step ``step``, split along dim 0 on out-of-memory when ``splittable``."""

    @abstractmethod
    def loss(self, *batch: Tensor) -> Tensor:
        """The scalar to minimise on ``batch``: a mean over its rows when ``splittable``."""

    def recorded(self, loss: Tensor) -> Tensor:
        """The value the history records for a step whose loss was ``loss``."""
        return loss

    def report_due(self, steps_done: int) -> bool:
        """True to report after this many steps whatever the time since the last report."""
        return False

    def info(self) -> dict[str, float]:
        """Method-specific numbers for ``Progress.info`` (bandwidth, outer step, KL estimate ...)."""
        return {}

    def finish(self, history: dict[str, list[float]], steps_kept: int, completed: bool) -> None:
        """Add whole-run entries (not per step) to ``history`` once training has ended."""

    #: Whether the verdict reads the map's Jacobian against the densities (the KL, misplaced-mass and
    #: uncovered-mass checks of ``verdict.assess_map``).
    judged_by_jacobian: bool = True

    def judged(self, source: Any, target: Any) -> tuple[Any, Any]:
        """The source and target the trained map is judged against (``verdict.assess_map``): what the
        run was asked for, at the end of any continuation schedule."""
        return source, target

    def completed_message(self, history: dict[str, list[float]], steps: int) -> str:
        return f"Trained {_steps(steps)}; final loss {history['loss'][-1]:.4g}."

    def stopped_message(self, steps_done: int, total: int) -> str:
        return f"Stopped by request after {steps_done} of {total} steps."

    def diverged_message(self, bad_step: int, bad_loss: float, good_step: int) -> str:
        return (f"Training diverged at step {bad_step} (loss {bad_loss}); the model was restored to its "
                f"last good state after step {good_step}. {self.divergence_hint}")


@dataclass(frozen=True)
class Objective(ABC):
    """Base of the objectives: a frozen config whose ``bind`` starts one run."""

    name: ClassVar[str] = ""
    #: The objective in the words of the app's menus, for messages ("the Sinkhorn divergence").
    title: ClassVar[str] = ""
    #: Whether the target must be a ``Density``; sample-only objectives also take ``(m, d)`` points.
    needs_target_density: ClassVar[bool] = True
    #: Whether it can train a map from the target back to the source (``TrainConfig.direction``): it needs
    #: both densities and asks nothing of either that the other lacks.
    reversible: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self._validate()

    @property
    def heading(self) -> str:
        """The objective as a run's later phase is named ("the KL divergence with a Sinkhorn term"): its title, and
        what it trains with beside it."""
        return self.title

    def _validate(self) -> None:
        """Raise ValueError on bad settings."""

    @abstractmethod
    def bind(self, model: TransportMap, source: Any, target: Any, run: RunContext) -> Stepper:
        """Validate ``source``/``target`` against ``model`` and return this objective's stepper."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer; got {value!r}")


def _positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a positive number; got {value!r}")


def _choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_densities(model: TransportMap, what: str, **densities: Any) -> None:
    for name, dens in densities.items():
        if not isinstance(dens, Density):
            if name == "target":
                names = ", ".join(SAMPLE_OBJECTIVES)
                raise ValueError(f"the target is given as samples, so the objective must need only samples "
                                 f"({names}); {what} needs the target's density")
            raise ValueError(f"{name} must be a Density; got {type(dens).__name__}")
        if dens.dim != model.dim:
            raise ValueError(f"{name} is {dens.dim}-dimensional but the map is {model.dim}-dimensional")


def bandwidth_schedule(step: int, steps: int, start: float, end: float) -> float:
    """Geometric interpolation start -> end: s_i = start (end/start)^(i/(steps-1)) (docs/method.md §4)."""
    if steps <= 1:
        return end
    return start * (end / start) ** (step / (steps - 1))


# ------------------------------------------------------------------------------------------------
# Density objectives: Monge–Ampère and reverse KL
# ------------------------------------------------------------------------------------------------
#: Batches of a fixed source are drawn this many numbers at a time (up to 64 steps per call).
_SAMPLES_PER_CALL = 1 << 18


def _source_batches(source: Density, batch_size: int, steps: int,
                    generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, log p(x))`` for each step of a fixed source (one that is not annealed), sampled and
    evaluated for many steps in one call, which saves a few small kernel launches per step."""
    per_call = max(1, min(64, _SAMPLES_PER_CALL // (batch_size * source.dim)))
    done = 0
    while done < steps:
        k = min(per_call, steps - done)
        x = source.sample(k * batch_size, generator)
        log_p = source.log_prob(x)
        for i in range(k):
            yield x[i * batch_size:(i + 1) * batch_size], log_p[i * batch_size:(i + 1) * batch_size]
        done += k


def smoothing_schedule(step: int, steps: int, start: float, fraction: float) -> float:
    """Smoothing variance v_i = start (1 - i / (fraction N))_+^2: zero from step fraction N on
    (docs/method.md §4.5)."""
    return start * max(0.0, 1.0 - step / (fraction * steps)) ** 2


def _mean_variance(density: Density) -> float:
    """trace Cov / d of a mixture: the scale of the target's smoothing."""
    return float(torch.diagonal(density.cov).mean())


@dataclass(frozen=True)
class _DensityObjective(Objective):
    """Shared settings of the objectives that need both densities (log p, log q) and samples of p.

    Training runs through a continuation in smoothness (docs/method.md §4.4-§4.5): at step i the
    densities are replaced by their convolutions with N(0, v_i I), v_i falling to zero (a target
    mixture of several components) or to ``bandwidth_end`` (image KDEs: both, by their kernel variance).
    """

    reversible: ClassVar[bool] = True

    jacobian: str = "closed-form"      # "closed-form" (mGradNets) or "autograd" (vmap of jacrev, any map)
    smoothing: float = 3.0             # mixture target: smoothing variance at the first step, in
    #                                    units of the target's mean variance trace(Cov q)/d; 0 turns it off ...
    smoothing_fraction: float = 0.7    # ... falling as (1 - i/(fraction N))^2 to 0 at this fraction of the steps
    bandwidth_start: float = 1e-2      # image-density kernel variance at the first step ...
    bandwidth_end: float = 1e-4        # ... annealed geometrically to this at the last (docs/method.md §4.4)
    global_weight: float = 0.0         # weight at the first step of a debiased Sinkhorn divergence between
    #                                    T(x) and fresh target samples (docs/method.md §3.8); 0 turns it off ...
    global_fraction: float = 0.3       # ... falling linearly to 0 at this fraction of the steps
    global_epsilon: float = 1e-3       # its entropic regularisation (squared data units)
    global_points: int = 256           # mapped points and target samples it compares per step

    @property
    def heading(self) -> str:
        return f"{self.title} with a Sinkhorn term" if self.global_weight else self.title

    def _validate(self) -> None:
        owner = type(self).__name__
        if isinstance(self.global_weight, bool) or not (isinstance(self.global_weight, (int, float))
                                                        and math.isfinite(self.global_weight)
                                                        and self.global_weight >= 0):
            raise ValueError(f"{owner}: global_weight must be zero (off) or a positive number; "
                             f"got {self.global_weight!r}")
        _positive(owner, "global_fraction", self.global_fraction)
        _positive(owner, "global_epsilon", self.global_epsilon)
        _positive_int(owner, "global_points", self.global_points)
        _choice(owner, "jacobian", self.jacobian, ("closed-form", "autograd"))
        if isinstance(self.smoothing, bool) or not (isinstance(self.smoothing, (int, float))
                                                    and math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise ValueError(f"{owner}: smoothing must be zero (off) or a positive number; got {self.smoothing!r}")
        _positive(owner, "smoothing_fraction", self.smoothing_fraction)
        if self.smoothing_fraction > 1:
            raise ValueError(f"{owner}: smoothing_fraction is the share of the steps over which the smoothing "
                             f"falls to zero, so at most 1; got {self.smoothing_fraction!r}")
        for name in ("bandwidth_start", "bandwidth_end"):
            _positive(owner, name, getattr(self, name))
            if getattr(self, name) < MIN_BANDWIDTH:
                raise ValueError(f"{owner}: {name} must be at least {MIN_BANDWIDTH:g} (a kernel variance; narrower "
                                 f"kernels overflow float32 log-densities); got {getattr(self, name)!r}")

    def _loss_function(self):
        return LOSSES[self.name]

    def _loss_options(self) -> dict[str, Any]:
        return {}

    def bind(self, model: TransportMap, source: Any, target: Any, run: RunContext) -> Stepper:
        _check_densities(model, f"the {self.name} objective", source=source, target=target)
        return _DensityStepper(self, model, source, target, run)


class _Annealed:
    """A density trained against through its smoothings: at step i, base.smoothed(value(i) - offset),
    where value(i) is what the history records (a smoothing variance, or an image's kernel variance)."""

    def __init__(self, base: Density, value: Callable[[int], float], key: str, offset: float = 0.0):
        self.base, self.value, self.key, self.offset = base, value, key, offset

    def at(self, step: int) -> tuple[Density, float]:
        v = self.value(step)
        return self.base.smoothed(max(0.0, v - self.offset)), v


class _DensityStepper(Stepper):
    def __init__(self, objective: _DensityObjective, model: TransportMap, source: Density, target: Density,
                 run: RunContext):
        self.source, self.target = source.to(run.device, run.dtype), target.to(run.device, run.dtype)
        self.objective, self.steps = objective, run.steps
        # One continuation for every density (docs/method.md §4.4-§4.5): a base density and the variance
        # of the Gaussian it is convolved with at each step. An image's base has the sharpest kernel of
        # the schedule, so that base.smoothed(s_i - sharpest) has kernel variance s_i.
        o = objective
        self.annealed: dict[str, _Annealed] = {}
        sharpest = min(o.bandwidth_start, o.bandwidth_end)
        for side in ("source", "target"):
            dens = getattr(self, side)
            if isinstance(dens, ImageDensity):
                base = copy.copy(dens)
                base.bandwidth = sharpest
                self.annealed[side] = _Annealed(
                    base, lambda i: bandwidth_schedule(i, self.steps, o.bandwidth_start, o.bandwidth_end),
                    "bandwidth", offset=sharpest)
            elif side == "target" and o.smoothing > 0 and isinstance(dens, GaussianMixture) and len(dens.weights) > 1:
                # Only a target with several components has the empty-component minima the continuation
                # is for; a Gaussian target is trained against as is (docs/method.md §4.5).
                start = o.smoothing * _mean_variance(dens)
                self.annealed[side] = _Annealed(
                    dens, lambda i: smoothing_schedule(i, self.steps, start, o.smoothing_fraction), "smoothing")
        self.history_keys = tuple(dict.fromkeys(a.key for a in self.annealed.values()))
        self.shown: dict[str, float] = {}
        self.map_and_logdet = (model.map_and_logdet if objective.jacobian == "closed-form"
                               else (lambda x: autograd_map_and_logdet(model, x)))
        self.loss_fn, self.options = objective._loss_function(), objective._loss_options()
        self.generator, self.batch_size = run.generator, run.batch_size
        self.batches = (None if "source" in self.annealed
                        else _source_batches(self.source, run.batch_size, run.steps, run.generator))
        self.model, self.step = model, 0
        self.global_steps = round(o.global_fraction * run.steps) if o.global_weight > 0 else 0
        if self.global_steps:
            self.splittable = False        # the Sinkhorn term compares whole point clouds
            # Its own stream of target samples, so that turning it on leaves the batches as they were.
            self.global_generator = torch.Generator(device=run.device).manual_seed(run.seed + 1)

    def begin(self, step: int) -> dict[str, float]:
        self.step = step
        if not self.annealed:
            return {}
        for side, annealed in self.annealed.items():
            dens, self.shown[annealed.key] = annealed.at(step)
            setattr(self, side, dens)
        return dict(self.shown)

    def batch(self, step: int) -> tuple[Tensor, ...]:
        if self.batches is not None:
            return next(self.batches)
        x = self.source.sample(self.batch_size, self.generator)
        return x, self.source.log_prob(x)

    def loss(self, x: Tensor, log_p: Tensor) -> Tensor:
        if self.step >= self.global_steps:
            return self.loss_fn(self.map_and_logdet, x, log_p, self.target, **self.options)
        # The residual sees q only through log q(T(x)): between the strokes of a digit it cannot tell
        # where the target's mass is. Early on, a global term pulls T#p towards q as a whole. It compares
        # the first points of the batch as the residual maps them, so the network runs once.
        mapped: list[Tensor] = []

        def map_and_logdet(points: Tensor) -> tuple[Tensor, Tensor]:
            y, logdet = self.map_and_logdet(points)
            mapped.append(y)
            return y, logdet

        loss = self.loss_fn(map_and_logdet, x, log_p, self.target, **self.options)
        o = self.objective
        weight = o.global_weight * (1.0 - self.step / self.global_steps)
        m = min(o.global_points, x.shape[0])
        y = self.target.sample(m, self.global_generator)
        return loss + weight * sinkhorn_divergence(mapped[0][:m], y, o.global_epsilon)

    def info(self) -> dict[str, float]:
        return dict(self.shown)

    def judged(self, source: Any, target: Any) -> tuple[Any, Any]:
        # An image handed to train() is a KDE at bandwidth_start, a blur the map is trained away from:
        # judged against it, a right map looks wrong and wrong maps hide in the blur (docs/method.md §6.7).
        # The schedule's last step is the density the run was meant to reach; a mixture's smoothing is meant to
        # reach 0, which a run of fewer than 1 / smoothing_fraction + 1 steps stops short of (a 1-step run judged
        # against the smoothed target passed a map 147 % off, and the fallback trained towards that blur).
        end = {side: annealed.at(self.steps - 1)[0] if annealed.key == "bandwidth" else annealed.base
               for side, annealed in self.annealed.items()}
        return end.get("source", source), end.get("target", target)

    def diverged_message(self, bad_step: int, bad_loss: float, good_step: int) -> str:
        if bad_loss == math.inf:
            self.divergence_hint = ("The Jacobian became singular (log det = -inf): use a wider network or "
                                    "turn on the strict-convexity term.")
        return super().diverged_message(bad_step, bad_loss, good_step)


@dataclass(frozen=True)
class MongeAmpere(_DensityObjective):
    """Mean penalty of the Monge–Ampère residual (GradNetOT Algorithm 1; docs/method.md §3)."""

    name: ClassVar[str] = "monge-ampere"
    title: ClassVar[str] = "Monge–Ampère loss"
    residual: str = "l1"               # penalty of the residual: "l1" (the authors') or "l2"

    def _validate(self) -> None:
        super()._validate()
        _choice("MongeAmpere", "residual", self.residual, tuple(RESIDUALS))

    def _loss_options(self) -> dict[str, Any]:
        return {"residual": self.residual}


@dataclass(frozen=True)
class ReverseKL(_DensityObjective):
    """KL(T#p || q), the likelihood of the map (docs/method.md §3)."""

    name: ClassVar[str] = "kl"
    title: ClassVar[str] = "KL divergence"


# ------------------------------------------------------------------------------------------------
# Sample-only objectives
# ------------------------------------------------------------------------------------------------
def as_samples(points: Any, name: str, dim: int | None = None) -> Tensor:
    """Validate points given as an ``(m, d)`` array or tensor (at least 2 finite rows); returns a tensor."""
    t = as_tensor(points, name)
    if t.ndim == 1 and dim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"{name} must be an (m, d) array of points; got shape {tuple(t.shape)}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} are {t.shape[1]}-dimensional but the map is {dim}-dimensional")
    if t.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 points; got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite numbers; they contain NaN or infinity")
    return t


class _Draws:
    """Draws batches from a Density or, with replacement, from a fixed set of points."""

    def __init__(self, data: Density | Tensor, run: RunContext):
        self.data = data.to(run.device, run.dtype)
        self.generator = run.generator

    def draw(self, n: int) -> Tensor:
        if isinstance(self.data, Density):
            return self.data.sample(n, self.generator)
        idx = torch.randint(self.data.shape[0], (n,), generator=self.generator, device=self.data.device)
        return self.data[idx]

    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean and covariance: exact when the density knows them, else from the points (or 100k samples)."""
        if isinstance(self.data, Density):
            mean, cov = getattr(self.data, "mean", None), getattr(self.data, "cov", None)
            if isinstance(mean, Tensor) and isinstance(cov, Tensor):
                return mean, cov
            return gaussian_moments(self.data.sample(100_000, self.generator))
        return gaussian_moments(self.data)


def _points_or_density(model: TransportMap, name: str, data: Any) -> Density | Tensor:
    if isinstance(data, Density):
        if data.dim != model.dim:
            raise ValueError(f"{name} is {data.dim}-dimensional but the map is {model.dim}-dimensional")
        return data
    return as_samples(data, f"{name} samples", model.dim)


@dataclass(frozen=True)
class _SampleObjective(Objective):
    """Objectives that compare mapped points T(x) with target samples; source and target may each be
    a ``Density`` or ``(m, d)`` points (drawn with replacement)."""

    needs_target_density: ClassVar[bool] = False
    stepper: ClassVar[type[_SampleStepper]]       # what runs it, given (objective, model, draws, run)

    def bind(self, model: TransportMap, source: Any, target: Any, run: RunContext) -> Stepper:
        sources = _Draws(_points_or_density(model, "source", source), run)
        targets = _Draws(_points_or_density(model, "target", target), run)
        return self.stepper(self, model, sources, targets, run)


class _SampleStepper(Stepper):
    splittable = False                 # losses over whole point clouds, not per-sample means
    # The checks that read the Jacobian need the fine structure that samples do not train: Sinkhorn maps of the
    # 2 -> 3 mixture within 1.7-1.8 % L2-UVP of the exact map showed KL estimates of 0.33-0.55 nats and were
    # flagged as "leaving 42 % uncovered" (docs/method.md §6.7). The sample and transport checks still use the
    # target's density where there is one (stratified: two plain samples of a mixture differ by far more, §4.11).
    judged_by_jacobian = False

    def __init__(self, objective: _SampleObjective, model: TransportMap, sources: _Draws, targets: _Draws,
                 run: RunContext):
        self.objective, self.name = objective, objective.name
        self.model, self.sources, self.targets, self.n = model, sources, targets, run.batch_size

    def completed_message(self, history: dict[str, list[float]], steps: int) -> str:
        return f"Trained {_steps(steps)} on the {self.objective.title}; final loss {history['loss'][-1]:.4g}."

    def diverged_message(self, bad_step: int, bad_loss: float, good_step: int) -> str:
        return (f"Training diverged at step {bad_step}; the model was restored to its last good state after "
                f"step {good_step}. {self.divergence_hint}")


class _MomentStepper(_SampleStepper):
    def __init__(self, objective: GaussianMomentKL, model: TransportMap, sources: _Draws, targets: _Draws,
                 run: RunContext):
        super().__init__(objective, model, sources, targets, run)
        self.target_mean, self.target_cov = self.targets.moments()

    def batch(self, step: int) -> tuple[Tensor, ...]:
        return (self.sources.draw(self.n),)

    def loss(self, x: Tensor) -> Tensor:
        return gaussian_moment_kl(self.model(x), self.target_mean, self.target_cov)


@dataclass(frozen=True)
class GaussianMomentKL(_SampleObjective):
    """KL between the Gaussians fitted to T(x) and to the whole target (mean and covariance only)."""

    name: ClassVar[str] = "gaussian-kl"
    title: ClassVar[str] = "Gaussian-moment KL"
    stepper: ClassVar[type[_SampleStepper]] = _MomentStepper


class _SinkhornStepper(_SampleStepper):
    def batch(self, step: int) -> tuple[Tensor, ...]:
        return self.sources.draw(self.n), self.targets.draw(self.n)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return sinkhorn_divergence(self.model(x), y, self.objective.epsilon)


@dataclass(frozen=True)
class SinkhornLoss(_SampleObjective):
    """Debiased Sinkhorn divergence between T(x) and a target batch (Feydy et al. 2019)."""

    name: ClassVar[str] = "sinkhorn"
    title: ClassVar[str] = "Sinkhorn divergence"
    stepper: ClassVar[type[_SampleStepper]] = _SinkhornStepper
    epsilon: float = 0.01              # entropic regularisation of the cost ||x - y||^2 (squared data units)

    def _validate(self) -> None:
        _positive("SinkhornLoss", "epsilon", self.epsilon)


#: Adam's betas for the critic; (0.5, 0.9) as in WGAN-GP (Gulrajani et al. 2017) keeps it responsive.
CRITIC_BETAS = (0.5, 0.9)


class _CriticStepper(_SampleStepper):
    def __init__(self, objective: AdversarialW1, model: TransportMap, sources: _Draws, targets: _Draws,
                 run: RunContext):
        super().__init__(objective, model, sources, targets, run)
        self.generator = run.generator
        self.critic = Critic(model.dim, generator=torch.Generator().manual_seed(run.seed)).to(run.device, run.dtype)
        self.optimizer = Adam(list(self.critic.parameters()), lr=objective.critic_lr, betas=CRITIC_BETAS)
        self.gap = torch.zeros((), device=run.device, dtype=run.dtype)

    def begin(self, step: int) -> dict[str, float]:
        self.critic.requires_grad_(True)
        for _ in range(self.objective.critic_steps):
            with torch.no_grad():
                fake = self.model(self.sources.draw(self.n))
            real = self.targets.draw(self.n)
            gap = self.critic(real).mean() - self.critic(fake).mean()
            penalty = gradient_penalty(self.critic, real, fake, self.generator)
            critic_loss = -gap + self.objective.gradient_penalty * penalty
            self.optimizer.zero_grad()
            critic_loss.backward()
            self.optimizer.step()
        self.critic.requires_grad_(False)
        self.gap = gap.detach()
        return {}

    def batch(self, step: int) -> tuple[Tensor, ...]:
        return (self.sources.draw(self.n),)

    def loss(self, x: Tensor) -> Tensor:
        return -self.critic(self.model(x)).mean()

    def recorded(self, loss: Tensor) -> Tensor:
        return self.gap


@dataclass(frozen=True)
class AdversarialW1(_SampleObjective):
    """The dual Wasserstein-1 loss with a critic kept near 1-Lipschitz by a gradient penalty (WGAN-GP).

    The history records the critic's estimate of W1, E D(y) - E D(T(x)), at each step.
    """

    name: ClassVar[str] = "wasserstein"
    title: ClassVar[str] = "adversarial W1"
    stepper: ClassVar[type[_SampleStepper]] = _CriticStepper
    critic_steps: int = 5              # critic updates per map update
    critic_lr: float = 1e-4            # the critic's Adam learning rate (docs/method.md §3)
    gradient_penalty: float = 10.0     # weight of the critic's gradient penalty

    def _validate(self) -> None:
        _positive_int("AdversarialW1", "critic_steps", self.critic_steps)
        _positive("AdversarialW1", "critic_lr", self.critic_lr)
        _positive("AdversarialW1", "gradient_penalty", self.gradient_penalty)


# ------------------------------------------------------------------------------------------------
# The constrained Wasserstein gradient flow
# ------------------------------------------------------------------------------------------------
FLOW_VARIANTS = ("explicit", "implicit")
FLOW_SCORES = ("exact", "entropic")


@dataclass(frozen=True)
class ConstrainedFlow(Objective):
    """The constrained Wasserstein gradient flow of KL(T#p || q) for log-concave targets
    (Dumont et al. 2026; docs/method.md §3).

    The run's ``steps`` are split into ``outer_steps`` outer steps of ``steps / outer_steps`` inner
    optimiser steps each; the flow runs to time ``outer_steps * tau`` and starts from the model as given.

    * explicit: T_{n+1} = argmin E_p ||T(x) - y_n(x)||^2,  y_n = T_n(x) + tau v_n(T_n(x)),
      v_n = grad log q - grad log rho_n, on a pool of ``batch_size`` source points drawn per outer step;
    * implicit (proximal, JKO-like): T_{n+1} = argmin (1/(2 tau)) E_p ||T(x) - T_n(x)||^2 + KL(T#p || q),
      a fresh batch every inner step; stable for larger tau.

    The score of rho_n = T_n#p is exact for an mGradNet and a known source density
    (``flow.pushforward_score``) or estimated by entropic self-transport (``flow.entropic_score``).
    The history adds, per step, "outer_step", and "kl": the estimate of KL(rho_n || q) at the start
    of each outer step and after the last (``outer_steps + 1`` values when completed).
    """

    name: ClassVar[str] = "constrained-flow"
    title: ClassVar[str] = "constrained gradient flow"
    variant: str = "explicit"          # "explicit" (regress onto T_n + tau v_n) or "implicit" (proximal)
    score: str = "exact"               # explicit variant's score of T_n#p: "exact" (mGradNets) or "entropic"
    outer_steps: int = 10              # outer steps N; the flow runs to time N * tau
    tau: float = 0.4                   # outer step size

    def _validate(self) -> None:
        _choice("ConstrainedFlow", "variant", self.variant, FLOW_VARIANTS)
        _choice("ConstrainedFlow", "score", self.score, FLOW_SCORES)
        _positive_int("ConstrainedFlow", "outer_steps", self.outer_steps)
        _positive("ConstrainedFlow", "tau", self.tau)

    def bind(self, model: TransportMap, source: Any, target: Any, run: RunContext) -> Stepper:
        _check_densities(model, "the constrained flow", source=source, target=target)
        target = log_concave_target(target)
        if self.variant == "explicit" and self.score == "exact" and not isinstance(model, GradientNetwork):
            raise ValueError(f"the exact pushforward score needs a monotone gradient network (mGradNet); got "
                             f"{type(model).__name__}. Use score='entropic' or the implicit variant.")
        if run.steps % self.outer_steps:
            raise ValueError(f"the constrained flow splits the {run.steps} training steps into {self.outer_steps} "
                             f"outer steps, so steps must be a multiple of {self.outer_steps}")
        return _FlowStepper(self, model, source, target, run)


class _FlowStepper(Stepper):
    history_keys = ("outer_step",)

    def __init__(self, objective: ConstrainedFlow, model: TransportMap, source: Density, target: Density,
                 run: RunContext):
        self.objective, self.model = objective, model
        self.source, self.target = source.to(run.device, run.dtype), target.to(run.device, run.dtype)
        self.generator, self.n = run.generator, run.batch_size
        self.explicit = objective.variant == "explicit"
        self.inner_total = run.steps // objective.outer_steps
        self.kl: list[tuple[int, float]] = []         # (step the outer step began at, KL estimate)
        self.outer = 0                                # 1-based outer step in progress
        self.inner = 0                                # inner steps begun in it
        if self.explicit:
            self.divergence_hint = ("The pushforward's score blew up: use a smaller tau, the implicit variant, "
                                    "or a strictly convex network (strict=True).")

    def _kl_now(self, x: Tensor) -> float:
        with torch.no_grad():
            y, logdet = self.model.map_and_logdet(x)
            return float((self.source.log_prob(x) - logdet - self.target.log_prob(y)).mean())

    def begin(self, step: int) -> dict[str, float]:
        if step % self.inner_total == 0:
            self.outer, self.inner = step // self.inner_total + 1, 0
            if self.explicit:
                self._explicit_targets()
            else:
                self.kl.append((step, self._kl_now(self.source.sample(self.n, self.generator))))
                self.frozen = copy.deepcopy(self.model).requires_grad_(False)
        self.inner += 1
        return {"outer_step": self.outer}

    def _explicit_targets(self) -> None:
        """The pool of this outer step and its regression targets y_n = T_n(x) + tau v_n(T_n(x))."""
        x = self.source.sample(self.n, self.generator)
        if self.objective.score == "exact":
            y, score, log_rho = pushforward_score(self.model, self.source, x)
            kl = float((log_rho - self.target.log_prob(y)).mean())
        else:
            with torch.no_grad():
                y = self.model(x)
                reference = self.model(self.source.sample(x.shape[0], self.generator))
            score = entropic_score(y, reference)
            kl = self._kl_now(x)
        self.kl.append(((self.outer - 1) * self.inner_total, kl))
        self.pool, self.y_target = x, y + self.objective.tau * (self.target.score(y) - score)

    def batch(self, step: int) -> tuple[Tensor, ...]:
        if self.explicit:
            return self.pool, self.y_target
        x = self.source.sample(self.n, self.generator)
        with torch.no_grad():
            y_prev = self.frozen(x)
        return x, y_prev, self.source.log_prob(x)

    def loss(self, *batch: Tensor) -> Tensor:
        if self.explicit:
            x, y_target = batch
            return (self.model(x) - y_target).square().sum(-1).mean()
        x, y_prev, log_p = batch
        y, logdet = self.model.map_and_logdet(x)
        return ((y - y_prev).square().sum(-1).mean() / (2 * self.objective.tau)
                + (log_p - logdet - self.target.log_prob(y)).mean())

    def report_due(self, steps_done: int) -> bool:
        return steps_done % self.inner_total == 0

    def info(self) -> dict[str, float]:
        return {"outer_step": self.outer, "outer_total": self.objective.outer_steps, "inner_step": self.inner,
                "inner_total": self.inner_total, "kl": self.kl[-1][1] if self.kl else math.nan}

    def finish(self, history: dict[str, list[float]], steps_kept: int, completed: bool) -> None:
        # An outer step's estimate is kept when training went past its start; a completed run adds
        # the estimate for the final map.
        history["kl"] = [kl for start, kl in self.kl if start < steps_kept]
        if completed:
            history["kl"].append(self._kl_now(self.source.sample(self.n, self.generator)))

    def completed_message(self, history: dict[str, list[float]], steps: int) -> str:
        o = self.objective
        return (f"Ran {o.outer_steps} outer steps of the {o.variant} constrained flow (tau {o.tau:g}, "
                f"{self.inner_total} inner steps each); KL(T#p || q) ≈ {history['kl'][-1]:.4g}.")

    def stopped_message(self, steps_done: int, total: int) -> str:
        return (f"Stopped by request in outer step {self.outer} of {self.objective.outer_steps} "
                f"after {steps_done} inner steps.")

    def diverged_message(self, bad_step: int, bad_loss: float, good_step: int) -> str:
        outer = (bad_step - 1) // self.inner_total + 1
        return (f"The constrained flow diverged in outer step {outer} (the inner loss or the parameters are "
                f"not finite); the model was restored to its last good state after {good_step} inner steps. "
                f"{self.divergence_hint}")


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------
#: Objective name -> class, for select boxes, the command line and saved settings.
OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (
    MongeAmpere, ReverseKL, GaussianMomentKL, SinkhornLoss, AdversarialW1, ConstrainedFlow)}

#: Names of the objectives that need only samples of the target.
SAMPLE_OBJECTIVES = tuple(name for name, cls in OBJECTIVES.items() if not cls.needs_target_density)


def objective_from_dict(settings: dict[str, Any]) -> Objective:
    """The objective ``Objective.to_dict`` described; ValueError for unknown names or fields."""
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"the {name} objective has no setting {', '.join(unknown)}")
    return cls(**settings)
