"""Training a transport map on the Monge–Ampère (or KL) objective, with progress callbacks.

``train(model, source, target, config, callback)`` runs ``config.steps`` optimiser steps on batches
drawn from ``source`` and returns a ``TrainResult``. The loop never synchronises with the device
except when it reports (about every ``config.report_seconds``): losses are kept on the device and
read back in chunks, and divergence is detected per chunk.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Literal

import torch
from torch import Tensor

from .densities import Density, ImageDensity
from .losses import LOSSES, RESIDUALS
from .networks import TransportMap, autograd_map_and_logdet
from .sample_losses import SAMPLE_LOSSES

__all__ = ["TrainConfig", "TrainResult", "Progress", "train", "bandwidth_schedule", "resolve_device",
           "OPTIMIZERS", "LR_SCHEDULES", "SCHEMES", "FLOW_VARIANTS", "FLOW_SCORES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
SCHEMES = ("direct", "constrained-flow")
FLOW_VARIANTS = ("explicit", "implicit")
FLOW_SCORES = ("exact", "entropic")


@dataclass
class TrainConfig:
    """How to train. Defaults learn the paper's 2-D Gaussian map in a few seconds on a CPU."""

    steps: int = 1000                 # optimiser steps
    batch_size: int = 1000            # source samples per step
    lr: float = 1e-2                  # learning rate
    optimizer: str = "adam"           # "adam", "adamw" or "sgd"
    weight_decay: float = 0.0         # decoupled for adamw, L2 for the others
    lr_schedule: str = "constant"     # "constant", "step" (x lr_gamma every lr_step_size steps) or "cosine"
    lr_step_size: int = 1000          # steps between decays of the "step" schedule
    lr_gamma: float = 0.5             # decay factor of the "step" schedule
    loss: str = "monge-ampere"        # "monge-ampere" (reference §3), "kl", or a sample-only loss (SAMPLE_LOSSES)
    residual: str = "l1"              # Monge–Ampère residual penalty: "l1" (the authors') or "l2"
    clip_grad: float | None = None    # max gradient norm, None for no clipping
    bandwidth_start: float = 1e-2     # image-density kernel variance at the first step ...
    bandwidth_end: float = 1e-4       # ... annealed geometrically to this at the last (reference §4)
    jacobian: str = "closed-form"     # "closed-form" (mGradNets) or "autograd" (vmap of jacrev, any map)
    seed: int = 0                     # seeds the batches (seed the model with torch.manual_seed)
    device: str = "auto"              # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    report_seconds: float = 0.25      # wall time between progress reports (and divergence checks)
    # Training scheme. "direct": `steps` optimiser steps on `loss`. "constrained-flow": the constrained
    # Wasserstein gradient flow of KL(T#p || q) (reference §3, gradnet_core.flow), log-concave targets only;
    # it runs flow_outer_steps x flow_inner_steps Adam steps and ignores steps, lr, optimizer, schedule.
    scheme: str = "direct"            # "direct" or "constrained-flow"
    flow_variant: str = "explicit"    # "explicit" (regress onto T_n + tau v_n) or "implicit" (proximal; stable for large tau)
    flow_score: str = "exact"         # explicit flow's score of T_n#p: "exact" (mGradNets) or "entropic" (Sinkhorn estimate)
    flow_outer_steps: int = 10        # outer steps N; the flow runs to time N * tau
    flow_tau: float = 0.4             # outer step size tau
    flow_inner_steps: int = 100       # Adam steps per outer step
    flow_inner_lr: float = 1e-2       # Adam learning rate of the inner steps
    # Sample-only losses (reference §3, gradnet_core.sample_training): "gaussian-kl", "wasserstein", "sinkhorn".
    critic_steps: int = 5             # "wasserstein": critic updates per map update
    critic_lr: float = 1e-4           # "wasserstein": the critic's Adam learning rate (reference §3)
    gradient_penalty: float = 10.0    # "wasserstein": weight of the critic's gradient penalty
    sinkhorn_epsilon: float = 0.01    # "sinkhorn": entropic regularisation of the cost ||x - y||^2 (squared data units)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "lr_step_size", "flow_outer_steps", "flow_inner_steps",
                     "critic_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("lr", "bandwidth_start", "bandwidth_end", "lr_gamma", "flow_tau", "flow_inner_lr",
                     "critic_lr", "gradient_penalty", "sinkhorn_epsilon"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be zero or positive; got {self.weight_decay!r}")
        if self.clip_grad is not None and not (math.isfinite(self.clip_grad) and self.clip_grad > 0):
            raise ValueError(f"clip_grad must be a positive number or None; got {self.clip_grad!r}")
        choices = {"optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES, "loss": tuple(LOSSES) + SAMPLE_LOSSES,
                   "residual": tuple(RESIDUALS), "jacobian": ("closed-form", "autograd"),
                   "scheme": SCHEMES, "flow_variant": FLOW_VARIANTS, "flow_score": FLOW_SCORES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """What a training run reports to its callback."""

    step: int                          # steps completed
    total: int                         # steps planned
    loss: float                        # mean loss over the steps since the last report
    lr: float                          # current learning rate
    elapsed: float                     # wall seconds since the start
    steps_per_second: float            # average over the run so far
    bandwidth: float | None            # current image-density bandwidth, None without images
    device: str                        # where the model trains
    model: TransportMap                # the model, live (evaluate it under torch.no_grad())
    scheme: str = "direct"             # TrainConfig.scheme; the fields below are set by "constrained-flow"
    outer_step: int | None = None      # outer step in progress, 1-based
    outer_total: int | None = None     # outer steps planned
    inner_step: int | None = None      # inner steps done in this outer step
    inner_total: int | None = None     # inner steps per outer step
    kl: float | None = None            # estimate of KL(T_n#p || q) at the start of this outer step

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

    history: dict[str, list[float]]    # "step", "loss", "lr" and, with images, "bandwidth"
    stopped: Literal["completed", "stopped", "diverged"]
    message: str                       # one sentence for the user
    steps: int                         # optimiser steps kept in the model
    elapsed: float                     # wall seconds
    device: str                        # where training ran

    @property
    def final_loss(self) -> float:
        return self.history["loss"][-1] if self.history["loss"] else math.nan


def bandwidth_schedule(step: int, steps: int, start: float, end: float) -> float:
    """Geometric interpolation start -> end: s_i = start (end/start)^(i/(steps-1)), reference §4."""
    if steps <= 1:
        return end
    return start * (end / start) ** (step / (steps - 1))


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else as torch understands it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return resolved


def _make_optimizer(model: TransportMap, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # One fused kernel for all parameters where torch has one (about 3x faster than foreach on the
    # CPU for the small parameter lists of these maps); foreach elsewhere.
    extra: dict[str, Any] = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **extra)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **extra)
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9, **extra)


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_size, config.lr_gamma)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    return None


#: Batches of a fixed source are drawn this many numbers at a time (up to 64 steps per call).
_SAMPLES_PER_CALL = 1 << 18


def _source_batches(source: Density, batch_size: int, steps: int, generator: torch.Generator,
                    fixed: bool) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, log p(x))`` for each step. A ``fixed`` source (one whose parameters do not change during
    training) is sampled and evaluated for many steps in one call, which saves a few small kernel
    launches per step; an image source is drawn step by step, at the bandwidth of that step."""
    per_call = max(1, min(64, _SAMPLES_PER_CALL // (batch_size * source.dim))) if fixed else 1
    done = 0
    while done < steps:
        k = min(per_call, steps - done)
        x = source.sample(k * batch_size, generator)
        log_p = source.log_prob(x)
        for i in range(k):
            yield x[i * batch_size:(i + 1) * batch_size], log_p[i * batch_size:(i + 1) * batch_size]
        done += k


def _backward_in_chunks(loss_of: Callable[[Tensor, Tensor], Tensor], x: Tensor, log_p: Tensor, chunks: int,
                        optimizer: torch.optim.Optimizer) -> tuple[Tensor, int]:
    """Backpropagate the batch loss, split into ``chunks`` parts whose gradients add up to the
    full batch's (the losses are batch means). On an out-of-memory error the split doubles and the
    step is retried; one sample at a time that still does not fit is reported as an error."""
    while True:
        try:
            if chunks == 1:
                loss = loss_of(x, log_p)
                loss.backward()
                return loss.detach(), chunks
            total = x.new_zeros(())
            for xc, lc in zip(x.chunk(chunks), log_p.chunk(chunks)):
                part = loss_of(xc, lc) * (xc.shape[0] / x.shape[0])
                part.backward()
                total += part.detach()
            return total, chunks
        except torch.OutOfMemoryError as err:
            optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if chunks >= x.shape[0]:
                raise RuntimeError("the device ran out of memory even with one sample at a time; "
                                   "use a smaller network or train on the CPU") from err
            chunks = min(2 * chunks, x.shape[0])


def _snapshot(model: TransportMap) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _parameters_finite(model: TransportMap) -> bool:
    flat = [p.detach() for p in model.parameters()]
    if not flat:
        return True
    norms = torch.stack([torch.linalg.vector_norm(p) for p in flat])
    return bool(torch.isfinite(norms).all() and norms.max() < 1e8)


def train(model: TransportMap, source: Density, target: Density, config: TrainConfig | None = None,
          callback: Callback | None = None) -> TrainResult:
    """Train ``model`` in place so that it pushes ``source`` onto ``target``.

    The model trains on ``config.device`` and is returned to the device it came on. Image
    densities are copied and their bandwidth annealed; the caller's densities are not changed.
    ``source`` and ``target`` may also be ``(m, d)`` points (array or tensor) for the sample-only
    losses (``SAMPLE_LOSSES``, trained by ``gradnet_core.sample_training.train_on_samples``).
    """
    config = config or TrainConfig()
    if config.scheme == "constrained-flow":
        from .flow import train_constrained_flow  # imported here: flow imports this module
        return train_constrained_flow(model, source, target, config, callback)
    if config.loss in SAMPLE_LOSSES or not isinstance(target, Density):
        from .sample_training import train_on_samples  # imported here: it imports this module
        return train_on_samples(model, source, target, config, callback)
    if not isinstance(model, TransportMap):
        raise ValueError(f"model must be a gradnet_core map (TransportMap); got {type(model).__name__}")
    for name, dens in (("source", source), ("target", target)):
        if not isinstance(dens, Density):
            raise ValueError(f"{name} must be a Density; got {type(dens).__name__}")
        if dens.dim != model.dim:
            raise ValueError(f"{name} is {dens.dim}-dimensional but the map is {model.dim}-dimensional")
    device = resolve_device(config.device)
    home = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    model.to(device)
    source, target = source.to(device, dtype), target.to(device, dtype)
    images = [d for d in (source, target) if isinstance(d, ImageDensity)]

    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = _make_optimizer(model, config, device)
    scheduler = _make_scheduler(optimizer, config)
    loss_fn = LOSSES[config.loss]
    map_and_logdet = (model.map_and_logdet if config.jacobian == "closed-form"
                      else (lambda x: autograd_map_and_logdet(model, x)))
    params = [p for p in model.parameters() if p.requires_grad]

    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": []}
    if images:
        history["bandwidth"] = []
    losses: list[Tensor] = []                      # per-step losses since the last report, on the device
    batches = _source_batches(source, config.batch_size, config.steps, generator,
                              fixed=not isinstance(source, ImageDensity))
    good_state, good_step = _snapshot(model), 0
    chunks = 1                                     # batch split for GPU memory; grows on out-of-memory
    reported = 0
    stopped: str = "completed"
    message = ""
    start = time.perf_counter()
    last_report = start

    def batch_loss(x: Tensor, log_p: Tensor) -> Tensor:
        return loss_fn(map_and_logdet, x, log_p, target, residual=config.residual)

    def flush(upto: int) -> tuple[bool, float]:
        """Read back losses of steps [reported, upto); True when all are finite."""
        chunk = torch.stack(losses).tolist() if losses else []
        losses.clear()
        history["step"].extend(range(reported + 1, upto + 1))
        history["loss"].extend(chunk)
        finite = all(math.isfinite(v) for v in chunk)
        return finite, (sum(chunk) / len(chunk) if chunk else math.nan)

    model.train()
    step = 0
    try:
        for step in range(config.steps):
            if images:
                bw = bandwidth_schedule(step, config.steps, config.bandwidth_start, config.bandwidth_end)
                for dens in images:
                    dens.bandwidth = bw
                history["bandwidth"].append(bw)
            history["lr"].append(optimizer.param_groups[0]["lr"])

            x, log_p = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss, chunks = _backward_in_chunks(batch_loss, x, log_p, chunks, optimizer)
            if config.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(params, config.clip_grad, foreach=True)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.detach())

            now = time.perf_counter()
            last = step + 1 == config.steps
            if not last and now - last_report < config.report_seconds:
                continue
            finite, mean_loss = flush(step + 1)
            reported = step + 1
            if not finite or not _parameters_finite(model):
                bad = next((i for i, v in enumerate(history["loss"]) if not math.isfinite(v)), step)
                model.load_state_dict(good_state)
                stopped = "diverged"
                message = _divergence_message(history["loss"][bad] if bad < len(history["loss"]) else math.nan,
                                              bad + 1, good_step)
                break
            good_state, good_step = _snapshot(model), reported
            last_report = now
            if callback is not None:
                elapsed = now - start
                progress = Progress(step=reported, total=config.steps, loss=mean_loss,
                                    lr=optimizer.param_groups[0]["lr"], elapsed=elapsed,
                                    steps_per_second=reported / elapsed if elapsed > 0 else 0.0,
                                    bandwidth=images[0].bandwidth if images else None,
                                    device=str(device), model=model)
                if callback(progress) and not last:
                    stopped = "stopped"
                    message = f"Stopped by request after {reported} of {config.steps} steps."
                    break
    finally:
        model.eval()
        model.to(home)

    kept = good_step if stopped == "diverged" else reported
    if stopped == "diverged":
        for key in history:
            del history[key][good_step:]
    if stopped == "completed":
        message = f"Trained {config.steps} steps; final loss {history['loss'][-1]:.4g}."
    if chunks > 1:
        message += (f" The device ran out of memory, so each batch of {config.batch_size} was processed "
                    f"in {chunks} parts (same gradients, slower).")
    return TrainResult(history=history, stopped=stopped, message=message, steps=kept,
                       elapsed=time.perf_counter() - start, device=str(device))


def _divergence_message(bad_loss: float, bad_step: int, good_step: int) -> str:
    hint = ("The Jacobian became singular (log det = -inf): use a wider network or turn on the "
            "strict-convexity term." if bad_loss == math.inf else
            "Try a smaller learning rate or gradient clipping.")
    return (f"Training diverged at step {bad_step} (loss {bad_loss}); the model was restored to its "
            f"last good state after step {good_step}. {hint}")
