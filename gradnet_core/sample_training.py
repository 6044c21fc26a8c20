"""Training a map on a sample-only loss: the target, and optionally the source, given as points.

``train`` dispatches here when ``config.loss`` is one of ``SAMPLE_LOSSES`` ("gaussian-kl",
"wasserstein", "sinkhorn") or when the target is an ``(m, d)`` array or tensor of samples instead of a
``Density``. Same ``TrainConfig``, ``Progress``, ``TrainResult``, callback, stop and divergence
semantics as ``train``; the history's "loss" is the Gaussian-moment KL, the Sinkhorn divergence or,
for "wasserstein", the critic's estimate of W1 (E D(y) - E D(T(x))) at that step.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from .densities import Density, as_tensor
from .networks import TransportMap
from .sample_losses import SAMPLE_LOSSES, Critic, gaussian_moment_kl, gaussian_moments, gradient_penalty, \
    sinkhorn_divergence
from .training import Callback, Progress, TrainConfig, TrainResult, _make_optimizer, _make_scheduler, \
    _parameters_finite, _snapshot, resolve_device

__all__ = ["train_on_samples", "as_samples"]

#: Adam's betas for the critic; (0.5, 0.9) as in WGAN-GP (Gulrajani et al. 2017) keeps it responsive.
CRITIC_BETAS = (0.5, 0.9)


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


class _Batches:
    """Draws batches from a Density or, with replacement, from a fixed set of points."""

    def __init__(self, data: Density | Tensor, device: torch.device, dtype: torch.dtype):
        self.data = data.to(device, dtype)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        if isinstance(self.data, Density):
            return self.data.sample(n, generator)
        idx = torch.randint(self.data.shape[0], (n,), generator=generator, device=self.data.device)
        return self.data[idx]

    def moments(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Mean and covariance: exact when the density knows them, else from the points (or 100k samples)."""
        if isinstance(self.data, Density):
            mean, cov = getattr(self.data, "mean", None), getattr(self.data, "cov", None)
            if isinstance(mean, Tensor) and isinstance(cov, Tensor):
                return mean, cov
            return gaussian_moments(self.data.sample(100_000, generator))
        return gaussian_moments(self.data)


def _inputs(model: TransportMap, source: Any, target: Any, config: TrainConfig) -> tuple[Any, Any]:
    if not isinstance(model, TransportMap):
        raise ValueError(f"model must be a gradnet_core map (TransportMap); got {type(model).__name__}")
    if config.loss not in SAMPLE_LOSSES:
        raise ValueError(f"the target is given as samples, so the loss must be one of {', '.join(SAMPLE_LOSSES)}; "
                         f"{config.loss!r} needs the target's density")
    if config.scheme != "direct":
        raise ValueError(f"scheme {config.scheme!r} needs densities; sample-only losses train with scheme 'direct'")
    checked = []
    for name, data in (("source", source), ("target", target)):
        if isinstance(data, Density):
            if data.dim != model.dim:
                raise ValueError(f"{name} is {data.dim}-dimensional but the map is {model.dim}-dimensional")
            checked.append(data)
        else:
            checked.append(as_samples(data, f"{name} samples", model.dim))
    return checked[0], checked[1]


def train_on_samples(model: TransportMap, source: Density | Any, target: Density | Any,
                     config: TrainConfig | None = None, callback: Callback | None = None) -> TrainResult:
    """Train ``model`` in place so that T#source matches ``target`` under a sample-only loss.

    ``source`` and ``target`` are each a ``Density`` or ``(m, d)`` points (array or tensor); every step
    draws ``config.batch_size`` points of each (with replacement from points). ``config.loss``:
    "gaussian-kl" compares the batch's mean and covariance with the whole target's; "sinkhorn" is
    the debiased Sinkhorn divergence to a target batch (``config.sinkhorn_epsilon``); "wasserstein"
    runs ``config.critic_steps`` critic updates (Adam, ``config.critic_lr``, gradient penalty weight
    ``config.gradient_penalty``) before each map update.
    """
    config = config or TrainConfig(loss="sinkhorn")
    source, target = _inputs(model, source, target, config)
    device = resolve_device(config.device)
    home = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    model.to(device)
    sources, targets = _Batches(source, device, dtype), _Batches(target, device, dtype)

    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = _make_optimizer(model, config, device)
    scheduler = _make_scheduler(optimizer, config)
    params = [p for p in model.parameters() if p.requires_grad]
    n = config.batch_size

    if config.loss == "gaussian-kl":
        target_mean, target_cov = targets.moments(generator)
    if config.loss == "wasserstein":
        critic = Critic(model.dim, generator=torch.Generator().manual_seed(config.seed)).to(device, dtype)
        critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, betas=CRITIC_BETAS)

    def step_loss() -> Tensor:
        """One update's objective for the map; returns the value to record."""
        x = sources.draw(n, generator)
        if config.loss == "gaussian-kl":
            loss = gaussian_moment_kl(model(x), target_mean, target_cov)
            record = loss
        elif config.loss == "sinkhorn":
            loss = sinkhorn_divergence(model(x), targets.draw(n, generator), config.sinkhorn_epsilon)
            record = loss
        else:
            critic.requires_grad_(True)
            for _ in range(config.critic_steps):
                with torch.no_grad():
                    fake = model(sources.draw(n, generator))
                real = targets.draw(n, generator)
                gap = critic(real).mean() - critic(fake).mean()
                critic_loss = -gap + config.gradient_penalty * gradient_penalty(critic, real, fake, generator)
                critic_optimizer.zero_grad(set_to_none=True)
                critic_loss.backward()
                critic_optimizer.step()
            critic.requires_grad_(False)
            loss = -critic(model(x)).mean()
            record = gap.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return record

    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": []}
    losses = torch.empty(config.steps, device=device, dtype=dtype)
    good_state, good_step = _snapshot(model), 0
    reported = 0
    stopped = "completed"
    message = ""
    start = time.perf_counter()
    last_report = start

    model.train()
    try:
        for step in range(config.steps):
            history["lr"].append(optimizer.param_groups[0]["lr"])
            losses[step] = step_loss().detach()
            if config.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(params, config.clip_grad, foreach=True)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()

            now = time.perf_counter()
            last = step + 1 == config.steps
            if not last and now - last_report < config.report_seconds:
                continue
            chunk = losses[reported:step + 1].tolist()
            history["step"].extend(range(reported + 1, step + 2))
            history["loss"].extend(chunk)
            reported = step + 1
            if not all(math.isfinite(v) for v in chunk) or not _parameters_finite(model):
                bad = next((i for i, v in enumerate(history["loss"]) if not math.isfinite(v)), step)
                model.load_state_dict(good_state)
                stopped = "diverged"
                message = (f"Training diverged at step {bad + 1}; the model was restored to its last good "
                           f"state after step {good_step}. Try a smaller learning rate or gradient clipping.")
                break
            good_state, good_step = _snapshot(model), reported
            last_report = now
            if callback is not None:
                elapsed = now - start
                progress = Progress(step=reported, total=config.steps, loss=sum(chunk) / len(chunk),
                                    lr=optimizer.param_groups[0]["lr"], elapsed=elapsed,
                                    steps_per_second=reported / elapsed if elapsed > 0 else 0.0,
                                    bandwidth=None, device=str(device), model=model)
                if callback(progress) and not last:
                    stopped = "stopped"
                    message = f"Stopped by request after {reported} of {config.steps} steps."
                    break
    finally:
        model.eval()
        model.to(home)

    if stopped == "diverged":
        for key in history:
            del history[key][good_step:]
    kept = good_step if stopped == "diverged" else reported
    if stopped == "completed":
        message = f"Trained {config.steps} steps on the {config.loss} loss; final loss {history['loss'][-1]:.4g}."
    return TrainResult(history=history, stopped=stopped, message=message, steps=kept,
                       elapsed=time.perf_counter() - start, device=str(device))
