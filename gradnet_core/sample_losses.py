"""Sample-only objectives (docs/method.md §3): they compare mapped points T(x) with target samples y and need
no density.

- ``gaussian_moment_kl``: closed-form KL between the Gaussians fitted to T(x) and to y (matches mean and
  covariance only).
- ``sinkhorn_divergence``: the debiased entropic OT divergence (Feydy et al., AISTATS 2019), a log-domain
  Sinkhorn in torch with epsilon-scaling; zero exactly when the two point clouds coincide.
- ``Critic`` and ``gradient_penalty``: the adversarial dual Wasserstein-1 loss (WGAN-GP, Gulrajani et
  al. 2017): a 3-layer leaky-ReLU critic of width 64 kept near 1-Lipschitz by a gradient penalty.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from . import _fused

__all__ = ["gaussian_moments", "gaussian_kl", "gaussian_moment_kl", "sinkhorn_divergence",
           "entropic_ot", "Critic", "gradient_penalty"]

# --------------------------------------------------------------------------------------------
# Gaussian-moment KL
# --------------------------------------------------------------------------------------------
def gaussian_moments(y: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean (d,) and unbiased covariance (d, d) of ``y: (n, d)``."""
    mean = y.mean(0)
    centred = y - mean
    return mean, centred.T @ centred / max(y.shape[0] - 1, 1)


def gaussian_kl(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    """KL(N(m_p, S_p) || N(m_q, S_q)) = 1/2 [tr(S_q^-1 S_p) + (m_q - m_p)^T S_q^-1 (m_q - m_p) - d
    + log det S_q - log det S_p], in nats; covariances symmetric positive definite."""
    d = mean_p.shape[-1]
    # cholesky_ex: a covariance that is not positive definite (a collapsed or NaN batch) gives a NaN
    # loss, which training reports as divergence, instead of an exception.
    chol_p, info_p = torch.linalg.cholesky_ex(cov_p)
    chol_q, info_q = torch.linalg.cholesky_ex(cov_q)
    whitened = torch.linalg.solve_triangular(chol_q, chol_p, upper=False)        # L_q^-1 L_p
    shift = torch.linalg.solve_triangular(chol_q, (mean_q - mean_p)[:, None], upper=False)
    logdet_p = 2.0 * torch.log(torch.diagonal(chol_p)).sum()
    logdet_q = 2.0 * torch.log(torch.diagonal(chol_q)).sum()
    value = 0.5 * (whitened.square().sum() + shift.square().sum() - d + logdet_q - logdet_p)
    return torch.where((info_p == 0) & (info_q == 0), value, torch.full_like(value, math.nan))


def gaussian_moment_kl(y: Tensor, target_mean: Tensor, target_cov: Tensor, ridge: float = 1e-4) -> Tensor:
    """KL(N(mean(y), cov(y)) || N(target_mean, target_cov)) for mapped points ``y: (n, d)``.

    ``ridge`` x (mean target variance) is added to both covariances, so targets with constant
    coordinates (the always-black corner pixels of digits) still give a finite loss.
    """
    mean, cov = gaussian_moments(y)
    d = y.shape[1]
    eye = torch.eye(d, dtype=y.dtype, device=y.device)
    jitter = ridge * torch.diagonal(target_cov).mean().clamp_min(1e-12) * eye
    return gaussian_kl(mean, cov + jitter, target_mean.to(y.dtype), target_cov.to(y.dtype) + jitter)


# --------------------------------------------------------------------------------------------
# Sinkhorn divergence
# --------------------------------------------------------------------------------------------
def _squared_distances(x: Tensor, y: Tensor) -> Tensor:
    return (x.square().sum(-1)[:, None] + y.square().sum(-1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)


#: log2(e): exponents in natural units times this are exponents in base 2.
_LOG2E = 1.0 / math.log(2.0)


def _softmin(eps: float, cost: Tensor, h: Tensor) -> Tensor:
    """-eps log sum_j exp(h_j - C_ij / eps): (n,) for cost (n, m) and h (m,)."""
    # In base 2, 2^(z log2 e) = e^z: torch's CPU exp2 is about 3x faster than its exp (0.3 against 0.8 ns
    # per float32 on an AVX-512 CPU), and exponentials are most of a Sinkhorn iteration. Terms more than
    # e^80 below a row's largest add nothing in float32; flooring them there also keeps exp2 off its slow
    # path for results that underflow.
    z = torch.sub(h[None, :] * _LOG2E, cost, alpha=_LOG2E / eps)
    top = z.amax(1, keepdim=True).detach()
    if z.requires_grad:
        terms = (z - top).clamp_min(-80.0 * _LOG2E).exp2()
    else:
        terms = z.sub_(top).clamp_min_(-80.0 * _LOG2E).exp2_()
    return -eps / _LOG2E * (top[:, 0] + terms.sum(1).log2())


def _epsilon_schedule(diameter_sq: float, epsilon: float, scaling: float, iterations: int) -> list[float]:
    """eps from the squared diameter down to ``epsilon`` (times ``scaling^2`` per step), then
    ``iterations`` more steps at ``epsilon``."""
    steps = max(0, math.ceil(math.log(max(diameter_sq, epsilon) / epsilon) / (-2.0 * math.log(scaling))))
    return [diameter_sq * scaling ** (2 * k) for k in range(steps)] + [epsilon] * iterations


@torch.no_grad()
def _sinkhorn_loop(cxy: Tensor, cyx: Tensor, cxx: Tensor | None, cyy: Tensor | None, a_log: Tensor, b_log: Tensor,
                   schedule: list[float], self_from: int = 0) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The dual potentials f_ba, g_ab (and f_aa, g_bb given ``cxx``, ``cyy``) after the updates at each eps of
    ``schedule``, the self terms' from step ``self_from`` on, from the cost matrices; ``_fused.sinkhorn_potentials``
    is the same loop in C."""
    eps = schedule[0]
    f_ba, g_ab = _softmin(eps, cxy, b_log), _softmin(eps, cyx, a_log)
    eps_self = schedule[self_from]
    f_aa, g_bb = ((_softmin(eps_self, cxx, a_log), _softmin(eps_self, cyy, b_log)) if cxx is not None
                  else (None, None))
    for k, eps in enumerate(schedule):
        # Symmetric updates, each averaged with the last: far more accurate per iteration under
        # epsilon-scaling than alternating ones (which lag by half a step at every eps).
        ft_ba = _softmin(eps, cxy, b_log + g_ab / eps)
        gt_ab = _softmin(eps, cyx, a_log + f_ba / eps)
        f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
        if cxx is not None and k >= self_from:
            f_aa = 0.5 * (f_aa + _softmin(eps, cxx, a_log + f_aa / eps))
            g_bb = 0.5 * (g_bb + _softmin(eps, cyy, b_log + g_bb / eps))
    return f_ba, g_ab, f_aa, g_bb


def _sinkhorn_potentials(x: Tensor, y: Tensor, epsilon: float, scaling: float, iterations: int, debias: bool):
    """Dual potentials of OT_eps(x, y) (and of OT_eps(x, x), OT_eps(y, y) when ``debias``), differentiable
    in x and y through one last extrapolation only (envelope theorem), as in GeomLoss."""
    n, m = x.shape[0], y.shape[0]
    a_log = torch.full((n,), -math.log(n), dtype=x.dtype, device=x.device)
    b_log = torch.full((m,), -math.log(m), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        both = torch.cat([x.detach(), y.detach()])
        diameter_sq = float((both.amax(0) - both.amin(0)).square().sum())
    if not math.isfinite(diameter_sq):
        # A point at NaN or infinity (a map diverging in training): a NaN divergence that the training
        # loop reports as divergence, not an error from the eps schedule.
        nan_x, nan_y = x.sum(1) * math.nan, y.sum(1) * math.nan
        return nan_x, nan_y, (nan_x if debias else None), (nan_y if debias else None)
    schedule = _epsilon_schedule(diameter_sq, epsilon, scaling, iterations)
    # The self terms OT_eps(x, x), OT_eps(y, y) need no epsilon-scaling: their plans keep each point near itself, and
    # from the softmin at the final eps their potentials settle in as many updates as the cross terms' last ones
    # take (digit samples, 500 a side, eps 1e-3: the divergence's gradient within 5e-4 of the full schedule's, whose
    # own distance from the converged gradient is 22 %), at under half the loop's cost (docs/method.md §3.5).
    self_from = len(schedule) - iterations
    if _fused.sinkhorn_applies(x, y):
        f_ba, g_ab, f_aa, g_bb = _fused.sinkhorn_potentials(x, y, schedule, debias, self_from)
    else:
        xd, yd = x.detach(), y.detach()
        f_ba, g_ab, f_aa, g_bb = _sinkhorn_loop(_squared_distances(xd, yd), _squared_distances(yd, xd),
                                                _squared_distances(xd, xd) if debias else None,
                                                _squared_distances(yd, yd) if debias else None, a_log, b_log, schedule,
                                                self_from)
    # Each softmin carries the gradient of its first cloud only: x gets its share of the plan from f_ba and y
    # its share from g_ab (differentiating both through one cost would count the plan twice).
    eps = epsilon
    # The loop's potentials are close to these softmins: the kernel takes them as its guesses (_point_softmin).
    f_ba, g_ab = (_point_softmin(eps, x, y, b_log + g_ab / eps, f_ba),
                  _point_softmin(eps, y, x, a_log + f_ba / eps, g_ab))
    if not debias:
        return f_ba, g_ab, None, None
    return (f_ba, g_ab, _point_softmin(eps, x, x, a_log + f_aa / eps, f_aa),
            _point_softmin(eps, y, y, b_log + g_bb / eps, g_bb))


def _point_softmin(eps: float, p: Tensor, q: Tensor, h: Tensor, guess: Tensor | None = None) -> Tensor:
    """-eps log sum_j exp(h_j - |p_i - q_j|^2 / eps): (n,) for points ``p: (n, d)``, ``q: (m, d)``, differentiable
    in ``p`` only (q and the potential h are held fixed). ``guess (n,)``, a softmin near it, spares the fused kernel
    a pass (``_fused.softmin_barycentre``); the result does not depend on it."""
    q, h = q.detach(), h.detach()
    if not _fused.sinkhorn_applies(p, q):
        return _softmin(eps, _squared_distances(p, q), h)
    # Without a gradient to carry (the target's side, usually) the kernel alone: an autograd Function costs more.
    if p.requires_grad:
        return _PointSoftmin.apply(p, q, h, eps, guess)
    return _fused.softmin_barycentre(p, q, h, eps, guess)[0]


class _PointSoftmin(torch.autograd.Function):
    """``_point_softmin`` by the fused kernel, whose pass over the q_j also gives the softmin's weighted mean of
    them, bary_i: the gradient in p_i is 2 (p_i - bary_i). First order only (docs/method.md §3.5)."""

    @staticmethod
    def forward(ctx: Any, p: Tensor, q: Tensor, h: Tensor, eps: float, guess: Tensor | None) -> Tensor:
        out, bary = _fused.softmin_barycentre(p, q, h, eps, guess)
        ctx.save_for_backward(2.0 * (p.detach() - bary))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        (slope,) = ctx.saved_tensors
        return grad[:, None] * slope, None, None, None, None


def _check_sinkhorn(epsilon: float, scaling: float, iterations: int) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"Sinkhorn epsilon must be a positive number; got {epsilon!r}")
    if not 0 < scaling < 1:
        raise ValueError(f"Sinkhorn scaling must lie strictly between 0 and 1; got {scaling!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"Sinkhorn iterations must be a positive integer; got {iterations!r}")


def entropic_ot(x: Tensor, y: Tensor, epsilon: float = 0.01, scaling: float = 0.7, iterations: int = 3) -> Tensor:
    """OT_eps between uniform point clouds ``x: (n, d)``, ``y: (m, d)`` for the cost ||x - y||^2:
    min_P <P, C> + eps KL(P || a b^T), computed as its dual <a, f> + <b, g>."""
    _check_sinkhorn(epsilon, scaling, iterations)
    f, g, _, _ = _sinkhorn_potentials(x, y, epsilon, scaling, iterations, debias=False)
    return f.mean() + g.mean()


def sinkhorn_divergence(x: Tensor, y: Tensor, epsilon: float = 0.01, scaling: float = 0.7,
                        iterations: int = 3) -> Tensor:
    """Debiased Sinkhorn divergence S_eps = OT_eps(x, y) - OT_eps(x, x)/2 - OT_eps(y, y)/2 between uniform
    point clouds ``x: (n, d)`` and ``y: (m, d)``; zero when they coincide.

    Cost ||x - y||^2. ``epsilon`` is the entropic regularisation in squared data units (blur
    sqrt(epsilon)): smaller is closer to W2^2. The updates start at the clouds' squared diameter and
    multiply eps by ``scaling``^2 each time down to ``epsilon`` (epsilon-scaling), then run
    ``iterations`` more. The defaults land within a few percent of the converged value (1 % with
    scaling 0.9, at 2.5x the cost): plenty for a training loss.
    """
    _check_sinkhorn(epsilon, scaling, iterations)
    f_ba, g_ab, f_aa, g_bb = _sinkhorn_potentials(x, y, epsilon, scaling, iterations, debias=True)
    return (f_ba - f_aa).mean() + (g_ab - g_bb).mean()


# --------------------------------------------------------------------------------------------
# Adversarial Wasserstein-1
# --------------------------------------------------------------------------------------------
class Critic(nn.Module):
    """The dual W1 critic of docs/method.md §3: d -> hidden -> hidden -> 1, leaky ReLU (slope 0.2).

    ``generator`` makes the initialisation reproducible without touching torch's global seed.
    """

    def __init__(self, dim: int, hidden: int = 64, generator: torch.Generator | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)     # torch's default range
                    for p in (layer.weight, layer.bias):
                        p.copy_((2.0 * torch.rand(p.shape, generator=generator) - 1.0) * bound)

    def forward(self, y: Tensor) -> Tensor:
        """Critic values (n,) for points ``y: (n, d)``."""
        return self.net(y)[:, 0]


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """E (||grad D(z)|| - 1)^2 at random interpolates z of ``real`` and ``fake`` (both (n, d))."""
    t = torch.rand(real.shape[0], 1, generator=generator, dtype=real.dtype, device=real.device)
    z = (t * real + (1.0 - t) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(z).sum(), z, create_graph=True)
    return (torch.linalg.vector_norm(grad, dim=1) - 1.0).square().mean()
