"""How close a learned map is to the truth (docs/method.md §6).

``pred`` and ``true`` are mapped points ``(n, d)`` (tensors or arrays) at the same source points.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .densities import Density, as_point_sets, as_tensor
from .losses import monge_ampere_residual_values
from .networks import TransportMap
from ._pot import import_pot

__all__ = ["map_mse", "l2_uvp", "cosine_similarity", "monotonicity", "monge_ampere_residual", "evaluate_map",
           "energy_distance", "exact_w2"]


def _pair(pred: Any, true: Any) -> tuple[Tensor, Tensor]:
    p = as_tensor(pred, "predicted points", dtype=torch.float64, device="cpu")
    t = as_tensor(true, "true points", dtype=torch.float64, device="cpu")
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"predicted and true points must both be (n, d); got {tuple(p.shape)} and {tuple(t.shape)}")
    return p, t


def map_mse(pred: Any, true: Any) -> float:
    """The paper's MSE: mean over samples and coordinates of (T_hat(x) - T*(x))^2."""
    p, t = _pair(pred, true)
    return (p - t).square().mean().item()


def l2_uvp(pred: Any, true: Any, target_variance: float) -> float:
    """L2-UVP (Korotin et al. 2021) in percent: 100 E||T_hat - T*||^2 / Var(q), Var(q) = trace Cov(q)."""
    if not target_variance > 0:
        raise ValueError(f"target variance must be positive; got {target_variance}")
    p, t = _pair(pred, true)
    return 100.0 * (p - t).square().sum(-1).mean().item() / float(target_variance)


def cosine_similarity(x: Any, pred: Any, true: Any) -> float:
    """<T* - id, T_hat - id>_p / (||T* - id||_p ||T_hat - id||_p) (Korotin et al. 2021)."""
    p, t = _pair(pred, true)
    x_t = as_tensor(x, "source points", dtype=torch.float64, device="cpu")
    dp, dt = p - x_t, t - x_t
    denom = (dp.square().sum().sqrt() * dt.square().sum().sqrt()).item()
    return (dp * dt).sum().item() / denom if denom > 0 else float("nan")


@torch.no_grad()
def monotonicity(model: TransportMap, x: Tensor) -> dict[str, float]:
    """Smallest eigenvalue of sym(J_T) over ``x`` (>= 0 for a monotone map) and max ||J - J^T||_F."""
    x = _model_input(model, x)
    jac = model.jacobian(x) if model.monotone else _autograd_jacobian(model, x)
    sym = 0.5 * (jac + jac.transpose(-1, -2))
    return {
        "min_eigenvalue": torch.linalg.eigvalsh(sym).amin().item(),
        "max_asymmetry": torch.linalg.matrix_norm(jac - jac.transpose(-1, -2)).amax().item(),
    }


@torch.no_grad()
def monge_ampere_residual(model: TransportMap, source: Density, target: Density, x: Tensor) -> float:
    """Mean |log det J_T(x) - log p(x) + log q(T(x))| over ``x`` (zero for the exact OT map)."""
    x = _model_input(model, x)
    source = source.to(x.device, x.dtype)
    target = target.to(x.device, x.dtype)
    if model.monotone:
        r = monge_ampere_residual_values(model.map_and_logdet, x, source.log_prob(x), target)
    else:
        with torch.enable_grad():
            r = monge_ampere_residual_values(model.map_and_logdet, x, source.log_prob(x), target)
    return r.abs().mean().item()


def _autograd_jacobian(model: TransportMap, x: Tensor) -> Tensor:
    with torch.enable_grad():
        return model.jacobian(x).detach()


def _model_input(model: TransportMap, x: Any) -> Tensor:
    param = next(model.parameters())
    return as_tensor(x, "points", dtype=param.dtype, device=param.device)


def evaluate_map(model: TransportMap, source: Density, target: Density, x: Any, truth: Any,
                 target_variance: float | None = None) -> dict[str, float]:
    """Every metric of a learned map at source points ``x: (n, d)`` against true images ``truth: (n, d)``.

    Returns mse, l2_uvp (percent; Var(q) from ``target.cov`` unless given), cosine,
    ma_residual, min_eigenvalue, max_asymmetry.
    """
    xt = _model_input(model, x)
    if model.monotone:
        with torch.no_grad():
            pred = model(xt)
    else:
        pred = model(xt).detach()
    if target_variance is None:
        target_variance = float(torch.trace(target.cov.to(torch.float64)))
    mono = monotonicity(model, xt)
    return {
        "mse": map_mse(pred, truth),
        "l2_uvp": l2_uvp(pred, truth, target_variance),
        "cosine": cosine_similarity(xt, pred, truth),
        "ma_residual": monge_ampere_residual(model, source, target, xt),
        "min_eigenvalue": mono["min_eigenvalue"],
        "max_asymmetry": mono["max_asymmetry"],
    }


def _mean_distance(a: Tensor, b: Tensor, chunk_elements: int) -> float:
    """Mean of ||a_i - b_j|| over all pairs, ``chunk_elements`` distances at a time."""
    rows = max(1, chunk_elements // b.shape[0])
    total = 0.0
    for i in range(0, a.shape[0], rows):
        # Direct differences, not the |a|^2 + |b|^2 - 2ab shortcut, which loses small distances.
        total += torch.cdist(a[i:i + rows], b, compute_mode="donot_use_mm_for_euclid_dist").sum().item()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: Any, y: Any, chunk_elements: int = 4_000_000) -> float:
    """Energy distance between the empirical measures of ``x: (n, d)`` and ``y: (m, d)``.

    D^2 = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (Székely & Rizzo 2013), every expectation the exact
    mean over all pairs (diagonal included: the V-statistic, so D^2 >= 0, and two samples of one
    distribution give D^2 of order 1/n rather than 0). Computed in float64 on the CPU, at most
    ``chunk_elements`` pairwise distances (8 bytes each) in memory at once.
    """
    a, b = as_point_sets(x, y, ("first sample", "second sample"), "energy distance")
    if not (isinstance(chunk_elements, int) and chunk_elements >= 1):
        raise ValueError(f"chunk_elements must be a positive integer; got {chunk_elements!r}")
    return (2.0 * _mean_distance(a, b, chunk_elements) - _mean_distance(a, a, chunk_elements)
            - _mean_distance(b, b, chunk_elements))


def exact_w2(x: Any, y: Any) -> float:
    """W2 between the equal-weight empirical measures of ``x: (n, d)`` and ``y: (m, d)``, by POT's exact EMD
    (float64, CPU)."""
    ot = import_pot()  # POT: a heavy import, only here

    a, b = as_point_sets(x, y, ("first sample", "second sample"), "W2")
    return math.sqrt(ot.emd2([], [], ot.dist(a.numpy(), b.numpy()), numItermax=10_000_000))
