"""The mathematics of the constrained Wasserstein gradient flow for log-concave targets
(Dumont et al. 2026; docs/method.md §3): the target check and the score of a pushforward.

The flow itself is an objective of the training loop (``gradnet_core.objectives.ConstrainedFlow``):
each outer step moves the mapped points along v_n = grad log q - grad log rho_n, rho_n = T_n#p. The
score grad log rho_n is exact for an mGradNet and a known source density (``pushforward_score``) or
estimated from samples by entropic self-transport (``entropic_score``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .densities import Density, Gaussian, GaussianMixture
from .networks import GradientNetwork, logdet_packed, unpack_jacobian
from ._pot import import_pot

__all__ = ["log_concave_target", "pushforward_score", "entropic_score", "entropic_bandwidth",
           "sinkhorn_plan"]


def log_concave_target(target: Density) -> Density:
    """The target as a log-concave density, or ValueError.

    A one-component ``GaussianMixture`` is a Gaussian and is converted to one; any density whose
    ``is_log_concave`` is False is refused, because the flow's convergence to the OT map rests on
    q ∝ exp(-V) with V convex.
    """
    if isinstance(target, GaussianMixture):
        live = torch.nonzero(target.weights > 0).flatten()
        if live.numel() == 1:
            i = int(live[0])
            return Gaussian(target.means[i], target.covs[i])
    if not target.is_log_concave:
        kind = type(target).__name__
        extra = (f" (this one has {int((target.weights > 0).sum())} components, so it is multimodal)"
                 if isinstance(target, GaussianMixture) else "")
        raise ValueError(f"The constrained gradient flow needs a target with a log-concave density "
                         f"(q ∝ exp(-V), V convex), such as a Gaussian; a {kind} is not log-concave"
                         f"{extra}. Train it with another objective, such as the Monge–Ampère loss.")
    return target


def pushforward_score(model: GradientNetwork, source: Density, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact score of rho = T#p at y = T(x), for ``x: (n, d)`` drawn from p.

    log rho(T(x)) = log p(x) - log det J_T(x), so with J symmetric positive definite
    grad_y log rho(y) = J^{-1} grad_x [log p(x) - log det J_T(x)]; grad_x log det J comes from autograd
    through the closed-form log-determinant. Returns ``y: (n, d)``, ``score: (n, d)`` and
    ``log_rho: (n,)`` = log rho(y), all detached.
    """
    if not isinstance(model, GradientNetwork):
        raise ValueError(f"the exact pushforward score needs a monotone gradient network (mGradNet) with a "
                         f"closed-form symmetric Jacobian; got {type(model).__name__}. Use "
                         f"score='entropic' (ConstrainedFlow) for other maps.")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y, packed = model.map_and_packed_jacobian(x)
        log_rho = source.log_prob(x) - logdet_packed(packed, model.dim)
        (grad_x,) = torch.autograd.grad(log_rho.sum(), x)
    jac = unpack_jacobian(packed.detach(), model.dim)
    score = torch.linalg.solve(jac, grad_x.unsqueeze(-1)).squeeze(-1)
    return y.detach(), score, log_rho.detach()


def entropic_bandwidth(reference: Tensor) -> float:
    """Kernel scale h for ``entropic_score``: the median distance from a reference point to its k-th
    nearest neighbour, k = round(m^(4/(d+4))) for ``reference: (m, d)``.

    The k-NN radius adapts to multimodal densities (a global standard deviation would blur separate
    modes); k grows like the kernel-estimator rate m^(4/(d+4)). The constant was chosen on N(0, I)
    in 2-D, where it gives h ≈ 0.63 at m = 1000 and an estimate whose least-squares slope against the
    true score is 1.00 ± 0.11 over seeds (smaller h: noisier and biased upwards by the discreteness
    of the plan; larger h: biased towards zero).
    """
    m, d = reference.shape
    if m < 2:
        raise ValueError("the entropic score needs at least 2 reference points")
    k = min(m - 1, max(1, round(m ** (4.0 / (d + 4)))))
    dist = torch.cdist(reference.detach(), reference.detach())
    return float(dist.kthvalue(k + 1, dim=1).values.median())       # k + 1: skip the point itself


def sinkhorn_plan(cost: Tensor, eps: float, max_iter: int = 2000, tol: float = 1e-6) -> Tensor:
    """Entropic OT plan between uniform weights for ``cost: (n, m)``: argmin <P, C> - eps H(P).

    POT's log-domain Sinkhorn (``ot.sinkhorn(..., method="sinkhorn_log")``, Flamary et al. 2021) in
    float64, stable for any eps; it stops when the column marginal's error is below ``tol`` or after
    ``max_iter`` iterations. Rows are exact at the end (the last update matches them).
    """
    ot = import_pot()  # POT: a heavy import, only here

    c = cost.to(torch.float64)
    n, m = c.shape
    a = torch.full((n,), 1.0 / n, dtype=c.dtype, device=c.device)
    b = torch.full((m,), 1.0 / m, dtype=c.dtype, device=c.device)
    return ot.sinkhorn(a, b, c, eps, method="sinkhorn_log", numItermax=max_iter, stopThr=tol)


def entropic_score(y: Tensor, reference: Tensor, bandwidth: float | None = None,
                   max_iter: int = 2000, tol: float = 1e-6) -> Tensor:
    """Score of rho estimated at ``y: (n, d)`` from an independent sample ``reference: (m, d)`` of rho,
    by entropic self-transport (Mordant 2024, "The entropic optimal (self-)transport problem").

    Sinkhorn couples the empirical measures of y and the reference with cost ||y_i - y'_j||^2 and
    regularisation 2 h^2 (a Gaussian kernel of variance h^2); the barycentric projection
    b_i = sum_j P_ij y'_j / sum_j P_ij satisfies b(y) = y + (h^2 / 2) grad log rho(y) + O(h^4) for the
    population plan, so the estimate is 2 (b(y) - y) / h^2. What it estimates is the score of rho
    seen through a kernel of width h: biased towards zero where rho curves on scales below h (on the
    four-corner mixture, whose modes have standard deviation 0.5, it recovers about half the true
    score at m = 1000) and noisy (variance ~ 1 / (m h^(d+2))). The reference must be a fresh sample:
    coupling y with itself would let each point keep most of its own mass. ``bandwidth`` h defaults
    to ``entropic_bandwidth(reference)``. Returns ``(n, d)`` in y's dtype and device.
    """
    h = entropic_bandwidth(reference) if bandwidth is None else float(bandwidth)
    if not (math.isfinite(h) and h > 0):
        raise ValueError(f"the entropic score's bandwidth must be a positive number; got {h}")
    y64 = y.detach().to(torch.float64)
    r64 = reference.detach().to(y64.device, torch.float64)
    plan = sinkhorn_plan(torch.cdist(y64, r64).square(), 2 * h * h, max_iter=max_iter, tol=tol)
    bary = (plan @ r64) / plan.sum(1, keepdim=True).clamp_min(1e-300)
    return (2.0 * (bary - y64) / (h * h)).to(y.dtype)
