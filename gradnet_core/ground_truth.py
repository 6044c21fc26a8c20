"""Ground-truth OT maps: the closed-form Gaussian map and the barycentric projection of an exact plan.

Both come from POT, imported only inside ``gaussian_map`` and ``barycentric_projection`` so that
importing gradnet_core stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .densities import Density, Gaussian, GaussianMixture, as_point_sets, as_tensor
from ._pot import import_pot

__all__ = ["GaussianMap", "gaussian_map", "barycentric_projection", "barycentric_projections", "reference_sample"]


class GaussianMap:
    """The affine map T(x) = m_t + A (x - m_s), callable on ``(n, d)`` tensors or arrays."""

    def __init__(self, A: Tensor, source_mean: Tensor, target_mean: Tensor):
        self.A, self.source_mean, self.target_mean = A, source_mean, target_mean

    def __call__(self, x: Any) -> Any:
        if isinstance(x, Tensor):
            A = self.A.to(x.device, x.dtype)
            return self.target_mean.to(x.device, x.dtype) + (x - self.source_mean.to(x.device, x.dtype)) @ A.T
        arr = np.asarray(x, dtype=np.float64)
        return self(torch.from_numpy(arr)).numpy()

    def __repr__(self) -> str:
        return f"GaussianMap(A={self.A.tolist()}, source_mean={self.source_mean.tolist()})"


def gaussian_map(source: Gaussian, target: Gaussian) -> GaussianMap:
    """Closed-form OT map between Gaussians N(m_s, S_s) -> N(m_t, S_t) (docs/method.md §5), in float64.

    T(x) = m_t + A (x - m_s),  A = S_s^{-1/2} (S_s^{1/2} S_t S_s^{1/2})^{1/2} S_s^{-1/2}
    (Knott & Smith 1984; Peyré & Cuturi, Computational Optimal Transport, Remark 2.31). A comes from
    POT's ``ot.gaussian.bures_wasserstein_mapping`` (torch backend, on the CPU) and is symmetrised
    against rounding. With target N(0, I) this is whitening, T(x) = S_s^{-1/2} (x - m_s).
    """
    ot = import_pot()  # POT: a heavy import, only here

    if not (isinstance(source, Gaussian) and isinstance(target, Gaussian)):
        raise ValueError("gaussian_map needs two Gaussian densities")
    if source.dim != target.dim:
        raise ValueError(f"source is {source.dim}-dimensional but target is {target.dim}-dimensional")
    ms, mt, cs, ct = (t.detach().to("cpu", torch.float64)
                      for t in (source.mean, target.mean, source.cov, target.cov))
    A, _ = ot.gaussian.bures_wasserstein_mapping(ms, mt, cs, ct)
    return GaussianMap(0.5 * (A + A.T), ms, mt)


def barycentric_projection(xs: Any, xt: Any, weights: Any = None, target_weights: Any = None,
                           max_iter: int = 10_000_000) -> Tensor:
    """T_hat(x_i) = sum_j G_ij y_j / sum_j G_ij for the exact OT plan G between samples (docs/method.md §5).

    ``xs: (n, d)`` source points, ``xt: (m, d)`` target points, optional weights (uniform by
    default). G = ot.emd(a, b, ||x_i - y_j||^2): O(nm) memory, about n^2 time. Returns
    ``(n, d)`` float64 on the CPU. A source point whose row of G is empty (zero weight) maps to
    its nearest target point.
    """
    return barycentric_projections(xs, xt, weights, target_weights, max_iter)[0]


def barycentric_projections(xs: Any, xt: Any, weights: Any = None, target_weights: Any = None,
                            max_iter: int = 10_000_000) -> tuple[Tensor, Tensor]:
    """Both barycentric projections of one exact plan G: source to target at ``xs`` ``(n, d)`` (as
    ``barycentric_projection``) and target to source at ``xt`` ``(m, d)``, y_j -> sum_i G_ij x_i / sum_i G_ij:
    the ground truth of the inverse map, for the cost of one plan."""
    ot = import_pot()  # POT: a heavy import, only here

    xs_t, xt_t = as_point_sets(xs, xt, ("source points", "target points"), "barycentric projection")
    n, m = xs_t.shape[0], xt_t.shape[0]
    a = _weights(weights, n, "source weights")
    b = _weights(target_weights, m, "target weights")
    cost = torch.cdist(xs_t, xt_t).square().numpy()
    plan = ot.emd(a, b, cost, numItermax=max_iter)
    return (_project(plan, xt_t.numpy(), cost), _project(plan.T, xs_t.numpy(), cost.T))


def _project(plan: np.ndarray, points: np.ndarray, cost: np.ndarray) -> Tensor:
    """Rows of ``plan`` averaging ``points``; an empty row takes its cheapest point."""
    row = plan.sum(axis=1)
    mapped = plan @ points
    empty = row <= 1e-15
    out = np.empty_like(mapped)
    out[~empty] = mapped[~empty] / row[~empty, None]
    if empty.any():
        out[empty] = points[cost[empty].argmin(axis=1)]
    return torch.from_numpy(out)


def _weights(w: Any, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    arr = as_tensor(w, name, dtype=torch.float64).reshape(-1).numpy()
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries; got {arr.shape[0]}")
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError(f"{name} must be non-negative with a positive sum")
    return arr / arr.sum()


def reference_sample(density: Density, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples of ``density`` for a barycentric-projection reference: a mixture's stratified (each component its
    share of the points, ``Density.sample_stratified``), others plain. With random counts per component the exact
    plan carries the surplus of one component's points to another, far from where the continuous map sends them: the
    exact map between two blobs 40 apart scored 6 % L2-UVP against 1500 plain points a side, under 0.3 % stratified,
    and a second reference from another target draw at the same source points does not show it (docs/method.md
    §5.2)."""
    if isinstance(density, GaussianMixture):
        return density.sample_stratified(n, generator)
    return density.sample(n, generator)
