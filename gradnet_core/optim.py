"""The optimisers of the training loop (Adam, AdamW, SGD with momentum) and its learning-rate schedules.

``torch.optim`` imports ``torch._dynamo`` (thousands of modules, about 1.4 CPU s) on an optimiser's first
step, in every process that trains: the command line, a test run, the app's first training. These
optimisers call the same fused kernels ``torch.optim`` calls with ``fused=True`` (``torch._fused_adam_``,
``torch._fused_adamw_``, ``torch._fused_sgd_``), so a step gives the same parameters bit for bit
(tests/test_optim.py), without that import. On a device without the fused kernels the same updates run
as plain tensor operations.

Adam (Kingma & Ba 2015), with ``weight_decay`` added to the gradient (L2); AdamW (Loshchilov & Hutter
2019) decays the parameters directly, p <- p (1 - lr wd), before the Adam step:

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   p <- p - lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)

SGD with momentum: b <- mu b + g (b = g at the first step), p <- p - lr b; ``weight_decay`` adds to g.

``Optimizer.clip_grad_norm_`` scales the gradients as ``torch.nn.utils.clip_grad_norm_`` does (2-norm, foreach), with
the same operations and so the same gradients bit for bit, without that function's grouping of the tensors by device
and dtype on every call: about 20 Python-level torch calls, a twentieth of a small step (mGradNet-C at d = 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["Optimizer", "Adam", "SGD", "learning_rate"]

_FUSED_DEVICES = ("cpu", "cuda")


class Optimizer(ABC):
    """Updates ``params`` (tensors with ``requires_grad``) from their ``.grad`` at ``lr``; parameters
    without a gradient at a step are left alone, their state untouched."""

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr = lr
        self.weight_decay = weight_decay

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> None:
        """Scale the gradients by min(1, max_norm / (||g|| + 1e-6)), ||g|| the 2-norm of all of them together."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        if grads[0].device.type not in _FUSED_DEVICES or len({(g.device, g.dtype) for g in grads}) != 1:
            torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=False)
            return
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(float(max_norm) / (total + 1e-6), max=1.0))

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        if params[0].device.type in _FUSED_DEVICES and len({(p.device, p.dtype) for p in params}) == 1:
            self._fused(live, params, grads)
        else:
            self._plain(live, params, grads)

    @abstractmethod
    def _fused(self, live: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        """One step with torch's fused kernel for the parameters ``live`` (indices into ``self.params``)."""

    @abstractmethod
    def _plain(self, live: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        """The same step written out in tensor operations (devices without the fused kernels)."""


class Adam(Optimizer):
    """Adam, or AdamW with ``decoupled=True``; ``betas`` (b1, b2) and ``eps`` as in the module docstring."""

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float = 0.0, decoupled: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr, weight_decay)
        self.decoupled, self.betas, self.eps = decoupled, betas, eps
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        # One step count per parameter (a parameter skipped at a step keeps its own), as float32
        # tensors on the parameter's device, which is what the fused kernels read.
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def _fused(self, live: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        kernel(params, grads, [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [], steps,
               lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay,
               eps=self.eps, amsgrad=False, maximize=False)

    def _plain(self, live: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        b1, b2 = self.betas
        for i, p, g in zip(live, params, grads):
            self.steps[i] += 1
            t = float(self.steps[i])
            if self.decoupled:
                p.mul_(1.0 - self.lr * self.weight_decay)
            elif self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            self.exp_avgs[i].lerp_(g, 1.0 - b1)
            self.exp_avg_sqs[i].mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (self.exp_avg_sqs[i].sqrt() / math.sqrt(1.0 - b2 ** t)).add_(self.eps)
            p.addcdiv_(self.exp_avgs[i], denom, value=-self.lr / (1.0 - b1 ** t))


class SGD(Optimizer):
    """Stochastic gradient descent with heavy-ball ``momentum`` (no dampening)."""

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float = 0.0, momentum: float = 0.9):
        super().__init__(params, lr, weight_decay)
        self.momentum = momentum
        # Zero buffers make the first step's b = mu 0 + g = g exactly, as torch's first step sets it.
        self.buffers = [torch.zeros_like(p) for p in self.params]

    def _fused(self, live: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        torch._fused_sgd_(params, grads, [self.buffers[i] for i in live], weight_decay=self.weight_decay,
                          momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False,
                          is_first_step=False)

    def _plain(self, live: list[int], params: list[Tensor], grads: list[Tensor]) -> None:
        for i, p, g in zip(live, params, grads):
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            p.add_(self.buffers[i].mul_(self.momentum).add_(g), alpha=-self.lr)


def learning_rate(base: float, step: int, schedule: str, total: int, step_size: int = 1000,
                  gamma: float = 0.5) -> float:
    """The rate at optimiser step ``step`` (0-based) of ``total``: ``"constant"``; ``"step"``,
    base x gamma^floor(step / step_size); ``"cosine"``, base (1 + cos(pi step / total)) / 2 (annealed to 0
    at ``total``, as ``torch.optim.lr_scheduler.CosineAnnealingLR`` with T_max = total)."""
    if schedule == "step":
        return base * gamma ** (step // step_size)
    if schedule == "cosine":
        return base * (1.0 + math.cos(math.pi * step / total)) / 2.0
    return base
