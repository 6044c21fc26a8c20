"""Transport maps: monotone gradient networks (mGradNet-C, mGradNet-M) and an MLP baseline.

Every map is an ``nn.Module`` with ``forward(x) -> T(x)``, ``map_and_logdet(x) -> (T(x), log det J_T(x))``
and ``jacobian(x) -> (n, d, d)`` for ``x: (n, d)``. The mGradNets compute their Jacobian in closed
form (docs/method.md §2) alongside the forward pass; any other map uses the shared autograd fallback
(vmap of jacrev, then slogdet), which is also how the GradNetOT authors compute it.
"""

from __future__ import annotations

import functools
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _fused

__all__ = [
    "TransportMap", "GradientNetwork", "MGradNetC", "MGradNetM", "MLPMap", "NETWORKS", "ACTIVATIONS",
    "autograd_jacobian", "autograd_map_and_logdet", "build_map", "seeded_map", "unpack_jacobian", "logdet_packed",
    "check_positive_int", "xavier_uniform", "InverseSolution", "InverseMap", "RescaledMap", "network_of",
    "evaluation_rows", "in_chunks",
]


# --------------------------------------------------------------------------------------------
# Autograd fallback
# --------------------------------------------------------------------------------------------
def autograd_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Jacobian of a batched map ``fn: (n, d) -> (n, d)`` at each row of ``x``; returns ``(n, d, d)``."""
    return torch.func.vmap(torch.func.jacrev(lambda xi: fn(xi[None])[0]))(x)


def autograd_map_and_logdet(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """T(x) and log |det J_T(x)| by autograd (vmap of jacrev, then slogdet), differentiable in the parameters."""
    def single(xi: Tensor) -> tuple[Tensor, Tensor]:
        out = fn(xi[None])[0]
        return out, out

    jac, out = torch.func.vmap(torch.func.jacrev(single, has_aux=True))(x)
    return out, torch.linalg.slogdet(jac)[1]


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------
class TransportMap(nn.Module):
    """A map R^d -> R^d. Subclasses implement ``forward``; the Jacobian defaults to autograd."""

    #: True when the map is the gradient of a convex function for every parameter value.
    monotone: bool = False

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dimension must be a positive integer; got {dim!r}")
        self.dim = dim

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """T(x): (n, d) and log det J_T(x): (n,) (log |det| for maps that are not monotone)."""
        return autograd_map_and_logdet(self, x)

    def jacobian(self, x: Tensor) -> Tensor:
        """J_T(x): (n, d, d)."""
        return autograd_jacobian(self, x)

    def map_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """T(x): (n, d) and J_T(x): (n, d, d)."""
        return self(x), self.jacobian(x)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the architecture (used by ``save_map``)."""
        return {"dim": self.dim}

    def dtype_and_device(self) -> tuple[torch.dtype, torch.device | None]:
        """Where the map computes: its parameters' dtype and device (the defaults for a map without any)."""
        param = next(self.parameters(), None)
        return (torch.get_default_dtype(), None) if param is None else (param.dtype, param.device)

    def solve_inverse(self, y: Tensor, start: "Tensor | InverseSolution | None" = None, *, t: float = 1.0,
                      tol: float | None = None, max_iter: int = 100) -> "InverseSolution":
        """Solve (1 - t) x + t T(x) = y for every row of ``y: (n, d)``: the inverse of T at t = 1, of
        McCann's interpolant at time t in [0, 1] otherwise (docs/method.md §2.7).

        Newton on the Jacobian (closed form for the mGradNets), vectorised over points, with a
        backtracking line search on |residual|, from ``start``: points ``(n, d)``, a solution for
        nearby ``y`` or t (its T and J are reused, not recomputed), or ``y`` itself by default. For
        the gradient of a strictly convex function the solution is unique and the iteration
        converges wherever it exists; a point converges when its residual is at most ``tol`` times
        (1 + |y|) (1e-5 in float32, 1e-10 in float64 by default). Runs without gradients, on the
        model's device and dtype.
        """
        if not self.monotone:
            raise ValueError(f"{type(self).__name__} is not monotone, so T(x) = y may have several "
                             "solutions or none: only monotone maps have an inverse")
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1]; got {t}")
        check_positive_int(max_iter, "max_iter")
        dtype, device = self.dtype_and_device()
        y = torch.as_tensor(y).to(device=device, dtype=dtype)
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"points must have shape (n, {self.dim}); got {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("points must be finite")
        with torch.no_grad():
            if isinstance(start, InverseSolution):
                x, mapped, jac = (v.to(device=device, dtype=dtype).clone() for v in (start.x, start.mapped,
                                                                                      start.jacobian))
            else:
                x = y.clone() if start is None else torch.as_tensor(start).to(device=device, dtype=dtype).clone()
                mapped, jac = None, None
            if x.shape != y.shape:
                raise ValueError(f"start must have the points' shape {tuple(y.shape)}; got {tuple(x.shape)}")
            rows = evaluation_rows(self, y.device)

            def evaluate(points: Tensor) -> tuple[Tensor, Tensor]:
                return in_chunks(self.map_and_jacobian, points, rows)

            if mapped is None:
                mapped, jac = evaluate(x)
            tol = _NEWTON_TOL.get(dtype, 1e-5) if tol is None else float(tol)
            return _newton(evaluate, y, x, mapped, jac, t, tol, max_iter)

    def inverse(self, y: Tensor, start: Tensor | None = None, *, tol: float | None = None,
                max_iter: int = 100) -> Tensor:
        """T^-1(y): ``(n, d)`` for ``y: (n, d)`` by ``solve_inverse``; raises ValueError naming how many
        points did not converge (they lie outside T's range, or T is nearly singular there)."""
        solution = self.solve_inverse(y, start, tol=tol, max_iter=max_iter)
        failed = int((~solution.converged).sum())
        if failed:
            raise ValueError(f"T(x) = y did not converge for {failed} of {len(solution.x)} points (largest "
                             f"residual {solution.residual.max().item():.3g}): they may lie outside the map's "
                             "range; solve_inverse returns the partial solution")
        return solution.x


@dataclass(frozen=True)
class InverseSolution:
    """What ``TransportMap.solve_inverse`` found: the points, each one's residual, whether it converged,
    and T and J_T there (so that a solve for a nearby y or t can start from it without recomputing)."""

    x: Tensor            # (n, d): the solutions (the last iterate where not converged)
    residual: Tensor     # (n,): |(1 - t) x + t T(x) - y|
    converged: Tensor    # (n,) bool: residual <= tol (1 + |y|)
    mapped: Tensor       # (n, d): T(x)
    jacobian: Tensor     # (n, d, d): J_T(x), the map's (not the interpolant's)
    iterations: int      # Newton steps taken (the most any point needed)


def evaluation_rows(module: nn.Module, device: torch.device) -> int | None:
    """Rows per chunk when evaluating ``module`` on many points without gradients: on the CPU about 2^20
    parameter-rows per chunk, a power of two in [256, 4096], so that each chunk's intermediates stay in
    cache (2x faster for the paper's mGradNet-M on 10 000 points); None (one pass) on a GPU."""
    if device.type != "cpu":
        return None
    params = max(1, sum(p.numel() for p in module.parameters()))
    return int(min(4096, max(256, 2 ** math.floor(math.log2(max(1, 2 ** 20 // params))))))


def in_chunks(fn: Callable[[Tensor], Any], x: Tensor, rows: int | None) -> Any:
    """``fn(x)`` computed ``rows`` rows at a time and concatenated (a tensor or a tuple of tensors); one
    call when ``rows`` is None or covers ``x``."""
    if rows is None or len(x) <= rows:
        return fn(x)
    parts = [fn(chunk) for chunk in x.split(rows)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(column) for column in zip(*parts))
    return torch.cat(parts)


#: Default Newton tolerance on |residual| / (1 + |y|), per dtype: a few hundred rounding errors of T.
_NEWTON_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
#: Trial steps per Newton iteration at most (each shrinking the last by 2 to 10 times).
_MAX_TRIALS = 30
#: A point whose step must shrink below this fraction to lower |r| has stalled (2^-30: where halving
#: alone gave up).
_MIN_STEP = 2.0 ** -30
#: Each point's first trial step is this many times the step it took last (at most a full step): a
#: point that needed a short step needs a similar one next, so it skips most halvings, and a point
#: back in Newton's quadratic region regains full steps within a few iterations.
_STEP_GROWTH = 4.0


def _backtrack(scale: Tensor, phi0: Tensor, phi: Tensor) -> Tensor:
    """The next trial step fraction after ``scale`` failed: the minimiser of the quadratic through
    phi(0) = |r|^2, phi'(0) = -2|r|^2 (a Newton step's slope) and phi(scale), kept within [0.1, 0.5]
    times ``scale`` (Dennis & Schnabel's safeguarded backtracking; 0.1 where phi is not finite). A step
    that overshoots far (a saturated direction, phi(scale) >> phi(0)) shrinks tenfold, not twofold."""
    curvature = (phi - phi0 + 2.0 * phi0 * scale) / scale ** 2
    best = phi0 / curvature
    best = torch.where(torch.isfinite(best) & (curvature > 0), best, 0.1 * scale)
    return torch.minimum(torch.maximum(best, 0.1 * scale), 0.5 * scale)


def _newton(map_and_jacobian: Callable[[Tensor], tuple[Tensor, Tensor]], y: Tensor, x: Tensor, mapped: Tensor,
            jac: Tensor, t: float, tol: float, max_iter: int) -> InverseSolution:
    """Solve F(x) = (1 - t) x + t T(x) = y by damped Newton from ``x`` (where T is ``mapped`` and J_T
    ``jac``); updates those three in place.

    The Newton step s = -J_F^-1 r is a descent direction of |r|^2 (its slope is -2|r|^2), so halving
    the step until |r| falls (Armijo) makes the iteration converge from any start where J_F stays
    nonsingular. A point whose step cannot lower |r| at any fraction down to ``_MIN_STEP`` has stalled
    (at rounding level, or where there is no solution) and is left where it is. The backtracking
    (``_backtrack``) starts from ``_STEP_GROWTH`` times the point's last accepted fraction and shrinks
    by up to tenfold a trial: a point outside T's range creeps towards its boundary in ever shorter
    steps, and halving from a full step each time cost a dozen evaluations per iteration.
    """
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)

    def residual(points: Tensor, values: Tensor, targets: Tensor) -> Tensor:
        return (values if t == 1.0 else torch.lerp(points, values, t)) - targets

    def interpolant_jacobian(j: Tensor) -> Tensor:
        return j if t == 1.0 else torch.lerp(eye, j, t)

    r = residual(x, mapped, y)
    norm = torch.linalg.vector_norm(r, dim=-1)
    limit = tol * (1.0 + torch.linalg.vector_norm(y, dim=-1))
    active = (norm > limit).nonzero()[:, 0]
    taken = torch.ones(len(x), dtype=x.dtype, device=x.device)     # each point's last accepted step fraction
    iterations = 0
    while active.numel() and iterations < max_iter:
        iterations += 1
        j = interpolant_jacobian(jac[active])
        # A tiny ridge keeps the solve defined where rounding made J singular; it barely changes the step.
        ridge = 1e-12 * torch.diagonal(j, dim1=-2, dim2=-1).abs().sum(-1).clamp_min(1e-30)
        step = torch.linalg.solve_ex(j + ridge[:, None, None] * eye, r[active])[0]
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        scale = (taken[active] * _STEP_GROWTH).clamp_max(1.0)
        base, start_norm = x[active], norm[active]
        accepted = torch.zeros(active.numel(), dtype=torch.bool, device=x.device)
        for _ in range(_MAX_TRIALS):
            pending = (~accepted & (scale >= _MIN_STEP)).nonzero()[:, 0]
            if not pending.numel():
                break
            rows = active[pending]
            candidate = base[pending] - scale[pending, None] * step[pending]
            values, jac_new = map_and_jacobian(candidate)
            r_new = residual(candidate, values, y[rows])
            norm_new = torch.linalg.vector_norm(r_new, dim=-1)
            ok = (norm_new <= (1.0 - 1e-4 * scale[pending]) * start_norm[pending]) & torch.isfinite(norm_new)
            rows = rows[ok]
            x[rows], mapped[rows], jac[rows], r[rows], norm[rows] = (candidate[ok], values[ok], jac_new[ok],
                                                                     r_new[ok], norm_new[ok])
            accepted[pending[ok]] = True
            taken[rows] = scale[pending[ok]]
            failed = pending[~ok]
            scale[failed] = _backtrack(scale[failed], start_norm[failed] ** 2, norm_new[~ok] ** 2)
        active = active[accepted & (norm[active] > limit[active])]
    return InverseSolution(x=x, residual=norm, converged=norm <= limit, mapped=mapped, jacobian=jac,
                           iterations=iterations)


def _triu(d: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    rows, cols = torch.triu_indices(d, d, device=device)
    return rows, cols


@functools.lru_cache(maxsize=64)
def _index_maps(d: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat positions i * d + j of the packed upper triangle, and for every (i, j) of a d x d matrix
    the packed index of (min(i, j), max(i, j)); cached, built once per (d, device)."""
    rows, cols = torch.triu_indices(d, d, device=device)
    flat = rows * d + cols
    full = torch.empty(d, d, dtype=torch.long, device=device)
    position = torch.arange(flat.numel(), device=device)
    full[rows, cols] = position
    full[cols, rows] = position
    return flat, full.reshape(-1)


@functools.lru_cache(maxsize=64)
def _diagonal_twice(d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Per packed entry, 2 on the diagonal and 1 off it (the derivative of v_i v_j in v_i where i = j); cached."""
    return 3.0 - _off_diagonal_twice(d, device, dtype)


@functools.lru_cache(maxsize=64)
def _off_diagonal_twice(d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Per packed entry, 1 on the diagonal and 2 off it (an off-diagonal entry stands for two of the
    matrix); cached, built once per (d, device, dtype)."""
    rows, cols = torch.triu_indices(d, d, device=device)
    return torch.where(rows == cols, 1.0, 2.0).to(dtype)


def _pack(matrix: Tensor) -> Tensor:
    """Upper triangle (row-major, i <= j) of ``(..., d, d)`` as ``(..., d(d+1)/2)``."""
    d = matrix.shape[-1]
    return matrix.flatten(-2).index_select(-1, _index_maps(d, matrix.device)[0])


def unpack_jacobian(packed: Tensor, d: int) -> Tensor:
    """Symmetric ``(n, d, d)`` matrices (Jacobians of gradient networks) from their packed upper
    triangles ``(n, d(d+1)/2)``, row-major with i <= j."""
    return packed.index_select(-1, _index_maps(d, packed.device)[1]).unflatten(-1, (d, d))


def logdet_packed(packed: Tensor, d: int) -> Tensor:
    """log det of symmetric positive definite matrices given as packed upper triangles.

    d = 1, 2 use the determinant directly; larger d a Cholesky factorisation, with log |det| by LU
    for rows whose factorisation fails to rounding (``_PackedCholeskyLogdet``); singular rows get -inf.
    """
    if d == 1:
        return torch.log(packed[:, 0])
    if d == 2:
        a, b, c = packed.unbind(-1)
        return torch.log(a * c - b * b)
    return _PackedCholeskyLogdet.apply(packed, d)


class _PackedCholeskyLogdet(torch.autograd.Function):
    """log det J from the packed upper triangle of SPD J via Cholesky.

    The gradient is d log det / dJ = J^{-1}, read straight from the factor (one cholesky_inverse)
    and packed, off-diagonal entries counted twice; autograd through the factorisation would
    form it from triangular solves, several times slower. First order only.

    J is positive semi-definite by construction, but rounding can make a nearly singular J fail the
    factorisation. Those rows fall back to log |det J| by LU (what the GradNetOT authors use
    throughout), gradient J^{-1} from its inverse, so training goes on where it can; rows that are
    singular even for LU get -inf and no gradient (their loss is then non-finite and training
    reports divergence). Checking for such rows reads one flag back from the device per step.
    """

    @staticmethod
    def forward(ctx: Any, packed: Tensor, d: int) -> Tensor:
        matrices = unpack_jacobian(packed, d)
        chol, info = torch.linalg.cholesky_ex(matrices)
        ok = info == 0
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        failed = None
        if not bool(ok.all()):
            failed = (~ok).nonzero()[:, 0]
            logdet = logdet.index_put((failed,), torch.linalg.slogdet(matrices[failed])[1])
        ctx.save_for_backward(chol, ok, matrices[failed] if failed is not None else chol[:0], logdet,
                              failed if failed is not None else ok.nonzero()[:0, 0])
        ctx.d = d
        return logdet

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        chol, ok, fallen, logdet, failed = ctx.saved_tensors
        d = ctx.d
        if failed.numel():
            # An identity factor keeps cholesky_inverse defined; those rows take the LU inverse below.
            chol = torch.where(ok[:, None, None], chol, torch.eye(d, dtype=chol.dtype, device=chol.device))
        inverse = torch.cholesky_inverse(chol)
        if failed.numel():
            finite = torch.isfinite(logdet[failed])
            inv, _ = torch.linalg.inv_ex(fallen)
            inverse[failed] = torch.where(finite[:, None, None] & torch.isfinite(inv), inv, torch.zeros_like(inv))
            grad = torch.where(torch.isfinite(logdet), grad, torch.zeros_like(grad))
        flat, _ = _index_maps(d, chol.device)
        packed_inverse = inverse.flatten(-2).index_select(-1, flat)
        return grad[:, None] * packed_inverse * _off_diagonal_twice(d, chol.device, packed_inverse.dtype), None


def _low_rank_logdet(A: Tensor, U: Tensor, times_g: Callable[[Tensor], Tensor]) -> Tensor:
    """log det(A + U^T C_i U) per sample, with A (d, d) SPD, U (r, d) and C_i (r, r) PSD, given
    ``times_g(G) -> (n, r, r)``, the products C_i G with G = U A^-1 U^T: log det A + log det(I_r + C_i G)
    (matrix determinant lemma). I + C G is similar to the SPD I + C^1/2 G C^1/2, so its determinant is
    positive; it is taken by LU (slogdet), whose gradient needs no square root of C (which may be singular)."""
    chol = torch.linalg.cholesky(A)
    half = torch.linalg.solve_triangular(chol, U.T, upper=False)          # L^-1 U^T: (d, r)
    eye = torch.eye(U.shape[0], dtype=U.dtype, device=U.device)
    logdet_a = 2.0 * torch.log(torch.diagonal(chol)).sum()
    return logdet_a + torch.linalg.slogdet(eye + times_g(half.T @ half))[1]


#: Up to this dimension per-sample packed products use selector matmuls, and mGradNet-M trains
#: through ``_SoftmaxModules``; above it the packed Jacobian (d(d+1)/2 columns) dominates the cost.
_SMALL_DIM = 2


class GradientNetwork(TransportMap, ABC):
    """A map T = grad(u), u convex, with a closed-form symmetric PSD Jacobian.

    Subclasses implement ``_evaluate(x, jacobian) -> (T, packed J or None)``. The optional
    strict-convexity term adds (eps I + V^T V) x (V: (d, d), a parameter), which keeps J positive
    definite even when the network's own rank is below d; ``strict`` says whether the map has it.
    Subclasses that always carry the term (the ICASSP baselines) call ``_add_quadratic_term``.
    """

    monotone = True

    def __init__(self, dim: int, strict: bool = False, eps: float = 1e-3):
        super().__init__(dim)
        if strict and not eps > 0:
            raise ValueError(f"eps of the strict-convexity term must be positive; got {eps}")
        self.strict = False
        self.eps = float(eps)
        if strict:
            self._add_quadratic_term(eps, v_init=0.1)
        rows, cols = _triu(dim)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        # One-hot (d, d(d+1)/2) selectors: in low dimension a tiny matmul gathers columns (and
        # scatters their gradients) much faster than advanced indexing. Only there: they grow as d^3.
        if dim <= _SMALL_DIM:
            eye = torch.eye(dim)
            self.register_buffer("_select_rows", eye[:, rows], persistent=False)
            self.register_buffer("_select_cols", eye[:, cols], persistent=False)

    @abstractmethod
    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        """T(x) without the quadratic term, and its packed Jacobian when ``jacobian`` is true."""

    def _square_products(self, W: Tensor) -> Tensor:
        """W[..., i] * W[..., j] for i <= j: the rows of W's contribution to a packed J."""
        if self.dim <= _SMALL_DIM:
            return (W @ self._select_rows) * (W @ self._select_cols)
        return W[..., self._rows] * W[..., self._cols]

    def add_strict_term(self) -> None:
        """Give the map the strict-convexity term (eps I + V^T V) x, V = 0.1 I to start, if it lacks it; its
        range is then the whole space. A network trained in reverse gets it so that its inverse maps every
        point (an mGradNet-M's own range is bounded; TrainConfig.direction)."""
        if not self.strict:
            self._add_quadratic_term(self.eps if self.eps > 0 else 1e-3, v_init=0.1)

    def _add_quadratic_term(self, eps: float, v_init: float) -> None:
        """Give the map the term (eps I + V^T V) x, the gradient of (1/2) x^T (eps I + V^T V) x, with
        V = v_init * I to start; ``eps`` >= 0 (checked by the caller)."""
        self.strict, self.eps = True, float(eps)
        self.V = nn.Parameter(v_init * torch.eye(self.dim))

    def _quadratic(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """eps I + V^T V: the strict term's constant Jacobian."""
        quad = self.V.T @ self.V
        return quad + self.eps * torch.eye(self.dim, dtype=dtype, device=device) if self.eps else quad

    def _with_quadratic_term(self, x: Tensor, out: Tensor,
                             packed: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Add (eps I + V^T V) x to ``out`` and its constant Jacobian to ``packed`` (when given)."""
        if not self.strict:
            return out, packed
        quad = self._quadratic(x.dtype, x.device)
        out = out + x @ quad
        if packed is not None:
            packed = packed + quad[self._rows, self._cols]
        return out, packed

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self._with_quadratic_term(x, *self._evaluate(x, jacobian=False))
        return out

    def map_and_packed_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """T(x): (n, d) and the upper triangle of J_T(x): (n, d(d+1)/2), in one pass."""
        return self._with_quadratic_term(x, *self._evaluate(x, jacobian=True))

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, packed = self.map_and_packed_jacobian(x)
        return out, logdet_packed(packed, self.dim)

    def jacobian(self, x: Tensor) -> Tensor:
        return unpack_jacobian(self.map_and_packed_jacobian(x)[1], self.dim)

    def map_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, packed = self.map_and_packed_jacobian(x)
        return out, unpack_jacobian(packed, self.dim)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "strict": self.strict, "eps": self.eps}


# --------------------------------------------------------------------------------------------
# mGradNet-C
# --------------------------------------------------------------------------------------------
def _tanh(z: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(z)
    return t, 1.0 - t * t


def _softplus(z: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return F.softplus(z), torch.sigmoid(z)


def _weighted_tanh(z: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    # sp(a) tanh z + sp(b) (z - tanh z): bounded slope near 0, linear growth far out, so the map
    # is not confined to a box. Slope sp(a)(1 - tanh^2) + sp(b) tanh^2 > 0. Written as
    # (a - b) t + b z and a + (b - a) t^2: two fused kernels each instead of four.
    t = torch.tanh(z)
    return torch.addcmul(b * z, a - b, t), torch.addcmul(a, b - a, t * t)


#: Nondecreasing activations for mGradNet-C: name -> (value, derivative) given learnable scales a, b.
ACTIVATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "weighted-tanh": _weighted_tanh,
    "tanh": _tanh,
    "softplus": _softplus,
}


def xavier_uniform(*shape: int) -> Tensor:
    """Glorot-uniform weights of ``shape`` (..., fan_out, fan_in); leading axes are separate layers,
    which is where this differs from ``torch.nn.init.xavier_uniform_`` (it counts them in the fans)."""
    fan_out, fan_in = shape[-2], shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (2.0 * torch.rand(*shape) - 1.0) * bound


class MGradNetC(GradientNetwork):
    """Cascaded monotone gradient network (docs/method.md §2), ``depth`` layers of ``width`` units.

    z_0 = sp(b_0)(Wx + c_0);  z_l = sp(b_l)(Wx + c_l) + sp(a_{l-1}) s(z_{l-1});
    T(x) = W^T [sp(a_{L-1}) s(z_{L-1})] + c_L;   J = W^T diag(delta) W, delta >= 0.
    """

    def __init__(self, dim: int, width: int = 32, depth: int = 4, activation: str = "weighted-tanh",
                 strict: bool = False, eps: float = 1e-3):
        super().__init__(dim, strict=strict, eps=eps)
        check_positive_int(width, "width")
        check_positive_int(depth, "depth")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.width, self.depth, self.activation = width, depth, activation
        self._act = ACTIVATIONS[activation]
        self.W = nn.Parameter(xavier_uniform(width, dim))
        self.bias = nn.Parameter(torch.zeros(depth, width))
        self.out_bias = nn.Parameter(torch.zeros(dim))
        self.alpha = nn.Parameter(torch.rand(depth, width))
        self.beta = nn.Parameter(torch.rand(depth, width))
        self.act_a = nn.Parameter(torch.rand(depth, width))
        self.act_b = nn.Parameter(torch.rand(depth, width))

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        if self.dim == 2 and self._kernel_applies(x):
            # At d = 2 the kernel also forms Wx, T and the packed Jacobian: torch's matmuls with an inner dimension
            # of 2 are slow.
            out, packed = _Cascade.apply(x, self.W, jacobian, self.activation == "tanh", False, *self._layers())
            return out + self.out_bias, (packed if jacobian else None)
        out, delta = self._map_and_delta(x, jacobian)
        return out, (None if delta is None else delta @ self._square_products(self.W))

    def _kernel_applies(self, x: Tensor) -> bool:
        """Whether the fused kernel runs the cascade for ``x``: the network and ``x`` in float32 on the CPU, and no
        gradient in x asked for (the kernel's backward pass is first order only)."""
        return (self.activation in _fused.CASCADE_ACTIVATIONS and not (x.requires_grad and torch.is_grad_enabled())
                and _fused.cascade_usable(x, self.W))

    def _layers(self) -> tuple[Tensor, ...]:
        """The layers' positive scales and biases as the kernel takes them: sp(beta), c, sp(alpha) and the weighted
        tanh's sp(a), sp(b), which are 1 and 0 for tanh."""
        if self.activation == "tanh":
            a, b = torch.ones_like(self.act_a), torch.zeros_like(self.act_b)
        else:
            a, b = F.softplus(self.act_a), F.softplus(self.act_b)
        return F.softplus(self.beta), self.bias, F.softplus(self.alpha), a, b

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.dim == 2 and not self.strict and self._kernel_applies(x):
            # The kernel takes the log det of its 2 x 2 Jacobians too, and its gradient back, instead of the
            # half-dozen small operations of logdet_packed each way: about a tenth of a 2-D Gaussian training step.
            out, logdet = _Cascade.apply(x, self.W, True, self.activation == "tanh", True, *self._layers())
            return out + self.out_bias, logdet
        if not (self.strict and self.width < self.dim):
            return super().map_and_logdet(x)
        # J = A + W^T diag(delta) W with A = eps I + V^T V: an update of rank width < d. By the matrix
        # determinant lemma det J = det A det(I + diag(delta) G), G = W A^-1 W^T (width x width), so
        # neither J nor its d x d factorisation is formed (docs/method.md §2.4).
        out, delta = self._map_and_delta(x, True)
        out, _ = self._with_quadratic_term(x, out, None)
        return out, _low_rank_logdet(self._quadratic(x.dtype, x.device), self.W, lambda G: delta[:, :, None] * G)

    def _map_and_delta(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        """T(x) without the quadratic term and, when ``jacobian``, delta >= 0 with J = W^T diag(delta) W."""
        if self._kernel_applies(x):
            # One kernel runs the cascade and its backward unit by unit (docs/method.md §2.2).
            S, delta = _Cascade.apply(x @ self.W.T, None, jacobian, self.activation == "tanh", False, *self._layers())
            return torch.addmm(self.out_bias, S, self.W), (delta if jacobian else None)
        wx = x @ self.W.T                                              # (n, h)
        # Layer by layer through unbind, not indexing: the backward pass of each index of a (L, n, h) tensor
        # fills a zero tensor of its whole size, and of unbind stacks the layers' gradients once.
        sa, sb = F.softplus(self.alpha).unbind(0), F.softplus(self.beta)
        aa, ab = F.softplus(self.act_a).unbind(0), F.softplus(self.act_b).unbind(0)
        # sp(b_l)(Wx + c_l) for every layer at once: (L, n, h)
        base = torch.addcmul((sb * self.bias)[:, None, :], wx, sb[:, None, :]).unbind(0)
        sb = sb.unbind(0)
        z = base[0]
        chain = sb[0]                                                  # d z_l / d(Wx), per unit
        for layer in range(1, self.depth):
            s, ds = self._act(z, aa[layer - 1], ab[layer - 1])
            if jacobian:
                chain = torch.addcmul(sb[layer], sa[layer - 1] * ds, chain)
            z = torch.addcmul(base[layer], sa[layer - 1], s)
        s, ds = self._act(z, aa[-1], ab[-1])
        out = torch.addmm(self.out_bias, sa[-1] * s, self.W)
        if not jacobian:
            return out, None
        return out, sa[-1] * ds * chain                                # (n, h), >= 0

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "depth": self.depth, "activation": self.activation}


class _Cascade(torch.autograd.Function):
    """mGradNet-C's cascade in the fused kernel (``_fused.cascade_forward``), given the layers' positive scales and
    biases ``sb, c, sa, aa, ab: (L, h)`` (``MGradNetC._map_and_delta`` has the formulas, which its torch path
    computes layer by layer). With ``W`` None, from ``wx = x W^T (n, h)`` to S and delta ``(n, h)``; at d = 2 from
    x ``(n, 2)`` and ``W`` to T - c_L ``(n, 2)`` and the packed Jacobian ``(n, 3)``, or with ``logdet`` its log det
    ``(n,)``, x getting no gradient. Without ``jacobian`` the second output is empty; ``plain`` for tanh itself. The
    backward pass recomputes the cascade; first order only."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, W: Tensor | None, jacobian: bool, plain: bool, logdet: bool,
                *layers: Tensor) -> tuple[Tensor, Tensor]:
        ctx.jacobian, ctx.plain, ctx.two, ctx.logdet = jacobian, plain, W is not None, logdet
        out, packed, ld = _fused.cascade_forward(inputs, W, layers, jacobian, plain, logdet)
        ctx.save_for_backward(inputs, W, packed if logdet else None, *layers)
        if logdet:
            return out, ld
        return out, (packed if jacobian else out.new_empty(out.shape[0], 0))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor, grad_second: Tensor) -> tuple[Tensor | None, ...]:
        inputs, W, packed, *layers = ctx.saved_tensors
        if ctx.logdet:
            grads = _fused.cascade_backward(inputs, W, layers, grad_out, None, ctx.plain, packed, grad_second)
        else:
            grads = _fused.cascade_backward(inputs, W, layers, grad_out, grad_second if ctx.jacobian else None,
                                            ctx.plain)
        grad_in, *grads = grads
        if ctx.two:
            return None, grad_in, None, None, None, *grads
        return grad_in, None, None, None, None, *grads


# --------------------------------------------------------------------------------------------
# mGradNet-M
# --------------------------------------------------------------------------------------------
def _combine_blocks(x: Tensor, A: Tensor, R: Tensor, signed: Tensor,
                    weight: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """mGradNet-M's softmax blocks combined into T(x) and its packed Jacobian, by torch (``_SoftmaxModules``; the
    fused kernel does the same on the CPU in float32 at d = 2).

    ``x: (n, d+1)`` (inputs with a column of ones last, so the last column of A is the bias), ``A: (2K, h, d+1)``,
    ``R: (K, h, C)`` (block b's output rows are those of module b mod K: a module's two blocks share them),
    ``signed, weight: (2K,)``. With M[b] = softmax(x A[b]^T) @ R[b mod K], v_b its first d columns and s_b the rest
    (C = d + d(d+1)/2 with the Jacobian, else C = d and s_b empty), returns T = sum_b signed[b] v_b ``(n, d)``,
    P = sum_b weight[b] (s_b - sq(v_b)) ``(n, C - d)``, sq(v) the products v_i v_j, i <= j, and what
    ``_combine_blocks_backward`` reads. Only the softmax S = softmax(x A^T) is kept (with M), and the backward pass
    reads it once: with G[b] = dL/dM[b] and g' = (G, <G, M>), dL/du = S * (g' [R -1]^T), so every parameter
    gradient is a slice of the single contraction S^T [g' (x) x] and dL/du is never formed.

    On a GPU every operation costs about as much host time as it takes there at the paper's size, so each line
    here is as few operations as it can be (a module's two blocks broadcast against one R, the ones column a pad).
    """
    u = torch.bmm(x.expand(A.shape[0], -1, -1), A.transpose(1, 2))           # (2K, n, h)
    floor = _EXP_FLOOR.get(u.dtype) if u.device.type == "cpu" else None
    if floor is not None and 2.0 * _bound_abs(x, A) > -floor:
        # CPU exp takes a slow path for results below the smallest normal float. Terms this far
        # below the row maximum weigh < 1e-37 of it, so clamping them changes nothing.
        u.sub_(u.amax(-1, keepdim=True)).clamp_min_(floor).exp_()
        p = u.div_(u.sum(-1, keepdim=True))
    else:
        p = torch.softmax(u, dim=-1)
    blocks, n, h = p.shape
    out = torch.matmul(p.view(2, -1, n, h), R).view(blocks, n, -1)          # (2K, n, C)
    d = x.shape[1] - 1
    v = out[..., :d]
    T = torch.einsum("b,bnd->nd", signed, v)
    if out.shape[-1] == d:                                                     # no Jacobian
        return T, out.new_zeros(n, 0), (x, R, signed, weight, p, out)
    spread = out[..., d:] - _pack(v[..., :, None] * v[..., None, :])            # s_b - sq(v_b)
    return T, torch.einsum("b,bnc->nc", weight, spread), (x, R, signed, weight, p, out, spread)


def _square_products_backward(grad: Tensor, v: Tensor) -> Tensor:
    """The gradient in v of <grad, sq(v)>, sq(v) the packed products v_i v_j, i <= j (``_pack``), for ``grad``
    ``(..., d(d+1)/2)`` and ``v`` ``(..., d)``: S v with S the symmetric matrix of ``grad``, its diagonal doubled."""
    d = v.shape[-1]
    return torch.matmul(unpack_jacobian(grad * _diagonal_twice(d, v.device, v.dtype), d), v[..., None])[..., 0]


def _combine_blocks_backward(saved: tuple[Tensor, ...], grad_T: Tensor,
                             grad_P: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The gradients of A, R, signed and weight given those of ``_combine_blocks``'s T and P (exact; x gets none)."""
    x, R, signed, weight, p, out, *spread = saved
    blocks, n, c = out.shape
    k = x.shape[1]
    d = k - 1
    v = out[..., :d]
    # G = dL/dM: signed dT on v and, with the Jacobian, weight dP on s and -weight dP through sq(v) on v.
    g = out.new_empty(blocks, n, c + 1)
    torch.mul(signed[:, None, None], grad_T, out=g[..., :d])
    grad_signed = torch.einsum("nd,bnd->b", grad_T, v)
    if c > d:
        weighted = torch.mul(weight[:, None, None], grad_P, out=g[..., d:c])    # (2K, n, C - d)
        g[..., :d] -= _square_products_backward(weighted, v)
        grad_weight = torch.einsum("nc,bnc->b", grad_P, spread[0])
    else:
        grad_weight = torch.zeros_like(weight)
    torch.linalg.vecdot(g[..., :c], out, out=g[..., c])
    rhs = torch.mul(g[:, :, None, :], x[:, :, None])                         # (2K, n, d+1, C+1)
    t = torch.bmm(p.transpose(1, 2), rhs.view(blocks, n, -1)).view(2, R.shape[0], -1, k, c + 1)
    grad_a = torch.einsum("khc,xkhjc->xkhj", R, t[..., :c]) - t[..., c]
    grad_r = t[..., -1, :c].sum(0)                                           # the ones column of x, both blocks
    return grad_a.flatten(0, 1), grad_r, grad_signed, grad_weight


class _SoftmaxModules(torch.autograd.Function):
    """mGradNet-M at small d for inputs that take no gradient, as one node of the graph: from ``parameters`` (W, bias,
    alpha, beta, softmax_a, softmax_b, out_bias) to T(x) and, with ``jacobian``, the packed Jacobian (else
    ``(n, 0)``). On the CPU in float32 at d = 2 one fused kernel does all of it each way, forming the blocks from the
    parameters and taking their gradients back, recomputing the softmax in the backward pass (``_fused``,
    docs/method.md §2.3). Elsewhere torch does: ``MGradNetM._block_parts``, ``_combine_blocks`` and, backward, the
    blocks' gradients taken back through the parameters' transforms by hand (which autograd ran as some twenty
    small operations each way). First order only."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, net: "MGradNetM", jacobian: bool, *parameters: Tensor) -> tuple[Tensor, Tensor]:
        ctx.net, ctx.jacobian = net, jacobian
        ctx.fused = _fused.mgradnet_applies(x, parameters)
        if ctx.fused:
            T, packed, out, lse = _fused.mgradnet_forward(x, parameters, jacobian)
            ctx.save_for_backward(x, *parameters, out, lse)
            return T, packed
        a2, signed, weight, raw, softplus, inputs = net._block_parts()
        R = torch.cat([net.W, net._square_products(net.W)], -1) if jacobian else net.W
        T, packed, saved = _combine_blocks(F.pad(x, (0, 1), value=1.0), a2, R, signed, weight)
        ctx.save_for_backward(raw, softplus, inputs, *saved)
        return T + parameters[-1], packed

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_T: Tensor, grad_P: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.fused:
            x, *parameters, out, lse = ctx.saved_tensors
            return None, None, None, *_fused.mgradnet_backward(x, parameters, out, lse, grad_T,
                                                               grad_P if ctx.jacobian else None)
        raw, softplus, inputs, *saved = ctx.saved_tensors
        grad_a2, grad_r, grad_signed, grad_weight = _combine_blocks_backward(saved, grad_T, grad_P)
        k, h, d = grad_r.shape[0], grad_r.shape[1], inputs.shape[-1] - 1
        scale, sa, g = softplus[0], softplus[1], softplus[1] * softplus[2:]     # g: rows ga, gb (2, K)
        # a2 = [a; -a] with a = scale [W, bias] (inputs = [W, bias]); R = [W, sq(W)] for both blocks of a module;
        # signed = [ga; -gb]; weight = scale [ga; gb] (MGradNetM._block_parts).
        grad_a = grad_a2.view(2, k, h, d + 1)
        grad_a = grad_a[0] - grad_a[1]
        grad_weight, grad_signed = grad_weight.view(2, k), grad_signed.view(2, k)
        grad_scale = (grad_a * inputs).sum((1, 2)) + (grad_weight * g).sum(0)
        grad_inputs = scale[:, None, None] * grad_a
        grad_W = grad_inputs[..., :d] + grad_r[..., :d]
        if ctx.jacobian:
            grad_W += _square_products_backward(grad_r[..., d:], inputs[..., :d])
        grad_g = torch.addcmul(grad_signed * ctx.net._signs, grad_weight, scale)
        grad_softplus = torch.cat([grad_scale[None], (grad_g * softplus[2:]).sum(0, keepdim=True), sa * grad_g])
        grad_beta, grad_alpha, grad_softmax_a, grad_softmax_b = torch.ops.aten.softplus_backward(
            grad_softplus, raw, 1, 20).unbind()
        return (None, None, None, grad_W, grad_inputs[..., d], grad_alpha, grad_beta, grad_softmax_a, grad_softmax_b,
                grad_T.sum(0))


#: Where CPU exp leaves its fast path (just above the log of the smallest normal number).
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}


def _bound_abs(x: Tensor, A: Tensor) -> float:
    """An upper bound on |x_i . A[b, j]| over all i, b, j (Cauchy-Schwarz), cheap to compute."""
    return (torch.linalg.vector_norm(x, dim=-1).amax() * torch.linalg.vector_norm(A, dim=-1).amax()).item()


class MGradNetM(GradientNetwork):
    """Modular monotone gradient network (docs/method.md §2) with weighted-softmax modules.

    u_k = sp(beta_k)(W_k x + b_k);
    T(x) = sum_k sp(alpha_k) W_k^T [sp(gamma_k) softmax(u_k) - sp(delta_k) softmax(-u_k)] + c.
    """

    def __init__(self, dim: int, width: int = 32, modules: int = 4, strict: bool = False, eps: float = 1e-3):
        super().__init__(dim, strict=strict, eps=eps)
        check_positive_int(width, "width")
        check_positive_int(modules, "modules")
        if width < 2:
            raise ValueError("width of an mGradNet-M module must be at least 2 (softmax over one unit is constant)")
        self.width, self.n_modules = width, modules
        self.W = nn.Parameter(xavier_uniform(modules, width, dim))
        self.bias = nn.Parameter(torch.zeros(modules, width))
        self.alpha = nn.Parameter(torch.rand(modules))
        self.beta = nn.Parameter(torch.rand(modules))
        self.softmax_a = nn.Parameter(torch.full((modules,), 0.5))
        self.softmax_b = nn.Parameter(torch.full((modules,), 0.5))
        self.out_bias = nn.Parameter(torch.zeros(dim))
        # A module's two softmax blocks, of +u and -u, in the 2K blocks' order (_block_parts).
        self.register_buffer("_signs", torch.tensor([[1.0], [-1.0]]), persistent=False)

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        k, h, d = self.W.shape
        n = x.shape[0]
        if d <= _SMALL_DIM and not (x.requires_grad and torch.is_grad_enabled()):
            out, packed = _SoftmaxModules.apply(x, self, jacobian, self.W, self.bias, self.alpha, self.beta,
                                                self.softmax_a, self.softmax_b, self.out_bias)
            return out, (packed if jacobian else None)
        a2, w2, signed, weight = self._blocks()
        p, v, out = self._softmax_blocks(x, a2, w2, signed)
        if not jacobian:
            return out, None
        sq = self._square_products(w2).reshape(2 * k * h, -1)
        diag = (p * weight[:, None]).reshape(n, -1) @ sq
        if d <= _SMALL_DIM:
            return out, diag - (weight @ self._square_products(v).view(2 * k, -1)).view(n, -1)
        outer = torch.einsum("bni,bnj->nij", v * weight[:, None, None], v)
        return out, diag - _pack(outer)

    def _blocks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The 2K softmax blocks: input weights with the bias last ``(2K, h, d+1)``, output weights
        ``(2K, h, d)``, each block's signed output scale and its positive Jacobian weight ``(2K,)``."""
        a2, signed, weight, *_ = self._block_parts()
        return a2, torch.cat([self.W, self.W]), signed, weight

    def _block_parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``_blocks``'s input weights, signed scales and Jacobian weights (block b's output weights are W[b mod K]),
        and what ``_SoftmaxModules`` takes their gradients back through: the raw (beta, alpha, softmax_a, softmax_b)
        stacked ``(4, K)``, their softplus, and [W, bias] ``(K, h, d+1)``. In as few operations as they take (each
        is a kernel launch on a GPU)."""
        k, h, d = self.W.shape
        raw = torch.stack([self.beta, self.alpha, self.softmax_a, self.softmax_b])
        softplus = F.softplus(raw)
        scale, g = softplus[0], softplus[1] * softplus[2:]                # g: rows ga, gb (2, K)
        inputs = torch.cat([self.W, self.bias[..., None]], -1)            # (K, h, d+1)
        # softmax(-u_k) is the softmax of a module with weights -W_k, -b_k: 2K blocks in one pass.
        a2 = ((self._signs * scale)[..., None, None] * inputs).view(2 * k, h, d + 1)
        # J = sum_k sp(beta_k) [ga_k (W^T diag p W - vp vp^T) + gb_k (W^T diag q W - vq vq^T)]
        return a2, (self._signs * g).view(-1), (scale * g).view(-1), raw, softplus, inputs

    def _softmax_blocks(self, x: Tensor, a2: Tensor, w2: Tensor, signed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """softmax(+-u_k) of every block ``(n, 2K, h)``, W_k^T of it ``(2K, n, d)`` and T(x) without the
        quadratic term ``(n, d)``, by plain autograd-friendly ops (the path for d > 2)."""
        k2, h, d = w2.shape
        u = torch.addmm(a2[..., -1].reshape(-1), x, a2[..., :-1].reshape(-1, d).T)
        p = torch.softmax(u.view(x.shape[0], k2, h), dim=-1)
        v = torch.einsum("nbh,bhd->bnd", p, w2)
        return p, v, torch.einsum("b,bnd->nd", signed, v) + self.out_bias

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        k, h, d = self.W.shape
        if not (self.strict and k * h < d):
            return super().map_and_logdet(x)
        # J = A + U^T C U with A = eps I + V^T V, U the modules' W_k stacked (Kh x d) and C block
        # diagonal per sample, C_k = sum over module k's two softmax blocks of w_b (diag p_b - p_b p_b^T).
        # Of rank Kh < d: det J = det A det(I + C G), G = U A^-1 U^T (docs/method.md §2.4).
        n = x.shape[0]
        a2, w2, signed, weight = self._blocks()
        p, _, out = self._softmax_blocks(x, a2, w2, signed)
        out, _ = self._with_quadratic_term(x, out, None)
        p = p.view(n, 2, k, h)
        wp = p * weight.view(2, k)[None, :, :, None]

        def times_g(G: Tensor) -> Tensor:
            G = G.view(k, h, k * h)                                    # G's rows, module by module
            CG = wp.sum(1)[..., None] * G - torch.einsum("nskh,nskm->nkhm", wp, torch.einsum("nskh,khm->nskm", p, G))
            return CG.reshape(n, k * h, k * h)

        return out, _low_rank_logdet(self._quadratic(x.dtype, x.device), self.W.reshape(k * h, d), times_g)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "modules": self.n_modules}


# --------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------
# The inverse of a monotone network
# --------------------------------------------------------------------------------------------
class InverseMap(TransportMap):
    """T = S^-1 for a monotone network S: the map a network trained from the target back to the source
    gives (``TrainConfig.direction``; docs/method.md §4.8).

    S = grad u with u convex, so T = grad u*, the gradient of the convex conjugate: T is monotone, and it is
    the optimal map from p to q when S is the one from q to p. T(x) is found by Newton on S
    (``solve_inverse``), log det J_T(x) = -log det J_S(T(x)) and J_T = J_S(T(x))^-1. For evaluation only:
    nothing differentiates through the solve, and its parameters are S's (``train`` trains S itself).
    A point outside S's range has no image; it keeps Newton's last iterate (``image`` says which converged).
    With the strict term S is onto, but where S was not trained (beyond the reach of the target's samples)
    its slope may be as small as eps, and T sends such points far: fine for a source of bounded support (an
    image), not for the far tail of a Gaussian or a mixture (results/robustness/ab-auto-mixtures/).
    """

    monotone = True

    def __init__(self, base: TransportMap):
        if not isinstance(base, TransportMap) or not base.monotone or isinstance(base, InverseMap):
            raise ValueError(f"only a monotone network has an inverse map; got {type(base).__name__}")
        super().__init__(base.dim)
        self.base = base

    def image(self, x: Tensor, start: Tensor | None = None) -> InverseSolution:
        """S's Newton solution of S(z) = x: z = T(x), and J_S there."""
        return self.base.solve_inverse(x, start)

    def forward(self, x: Tensor) -> Tensor:
        return self.image(x).x

    def map_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        solution = self.image(x)
        return solution.x, torch.linalg.inv_ex(solution.jacobian)[0]

    def jacobian(self, x: Tensor) -> Tensor:
        return self.map_and_jacobian(x)[1]

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        solution = self.image(x)
        return solution.x, -torch.linalg.slogdet(solution.jacobian).logabsdet

    def solve_inverse(self, y: Tensor, start: "Tensor | InverseSolution | None" = None, *, t: float = 1.0,
                      tol: float | None = None, max_iter: int = 100) -> InverseSolution:
        """Solve (1 - t) x + t T(x) = y. With z = T(x), x = S(z), that is t z + (1 - t) S(z) = y: S's own
        interpolant at time 1 - t, strongly monotone for t > 0, so one Newton solve on S (no nested solves)
        gives z, and x = S(z); at t = 1 it is z = y at once (T^-1 = S)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1]; got {t}")
        if t == 0.0:                                   # the identity: x = y, and T(y) by a solve on S
            solution = self.image(y)
            return InverseSolution(x=torch.as_tensor(y).to(solution.x).clone(),
                                   residual=torch.zeros_like(solution.residual),
                                   converged=torch.ones_like(solution.converged), mapped=solution.x,
                                   jacobian=torch.linalg.inv_ex(solution.jacobian)[0], iterations=0)
        if isinstance(start, InverseSolution):
            start = start.mapped                       # z = T(x) at the previous solution
        elif start is not None:
            start = self.image(torch.as_tensor(start)).x
        solution = self.base.solve_inverse(y, start, t=1.0 - t, tol=tol, max_iter=max_iter)
        return InverseSolution(x=solution.mapped, residual=solution.residual, converged=solution.converged,
                               mapped=solution.x, jacobian=torch.linalg.inv_ex(solution.jacobian)[0],
                               iterations=solution.iterations)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "inverse_of": type(self.base).__name__, **self.base.config()}


class RescaledMap(TransportMap):
    """T(x) = s B((x - c) / s) + c': a map ``base`` B learned in coordinates u = (x - c) / s of the source and
    v = (y - c') / s of the target (``center_out`` c', by default c), in the problem's own.

    ``training.train`` learns a problem far from the scale its presets were tuned at (a mixture typed in
    millimetres or in kilometres, or a target typed 100 units from the source) in such coordinates (docs/method.md
    §4.14). A shift of either side and one scale for every axis keep optimality for the squared-distance cost: B is
    the optimal map between the rescaled densities exactly when T is between the problem's. T is monotone when B is
    (T = grad of s^2 phi((x - c) / s) + c'.x for B = grad phi), J_T(x) = J_B(u) and log det J_T(x) = log det J_B(u).
    """

    def __init__(self, base: TransportMap, scale: float, center: Any, center_out: Any = None):
        if not isinstance(base, TransportMap) or isinstance(base, RescaledMap):
            raise ValueError(f"only a map that is not rescaled already can be rescaled; got {type(base).__name__}")
        super().__init__(base.dim)
        scale = float(scale)
        centers = [torch.as_tensor(c, dtype=torch.float64).reshape(-1)
                   for c in (center, center if center_out is None else center_out)]
        if not (math.isfinite(scale) and scale > 0) or any(
                c.shape != (base.dim,) or not bool(torch.isfinite(c).all()) for c in centers):
            raise ValueError(f"a rescaled map needs a positive scale and {base.dim} finite centre coordinates a side; "
                             f"got {scale} and {[c.tolist() for c in centers]}")
        self.base, self.scale = base, scale
        dtype = base.dtype_and_device()[0]
        self.register_buffer("center", centers[0].to(dtype), persistent=False)
        self.register_buffer("center_out", centers[1].to(dtype), persistent=False)
        self.monotone = base.monotone

    def _inner(self, x: Tensor, center: Tensor | None = None) -> Tensor:
        return (x - (self.center if center is None else center).to(x)) / self.scale

    def _outer(self, u: Tensor, center: Tensor | None = None) -> Tensor:
        return u * self.scale + (self.center_out if center is None else center).to(u)

    def forward(self, x: Tensor) -> Tensor:
        return self._outer(self.base(self._inner(x)))

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, logdet = self.base.map_and_logdet(self._inner(x))
        return self._outer(out), logdet

    def jacobian(self, x: Tensor) -> Tensor:
        return self.base.jacobian(self._inner(x))

    def map_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, jac = self.base.map_and_jacobian(self._inner(x))
        return self._outer(out), jac

    def solve_inverse(self, y: Tensor, start: "Tensor | InverseSolution | None" = None, *, t: float = 1.0,
                      tol: float | None = None, max_iter: int = 100) -> InverseSolution:
        """(1 - t) x + t T(x) = y is (1 - t) u + t B(u) = (y - c_t) / s with c_t = (1 - t) c + t c': B's solve, its
        points taken back."""
        dtype, device = self.dtype_and_device()
        between = (1.0 - t) * self.center + t * self.center_out
        inner_y = self._inner(torch.as_tensor(y).to(device=device, dtype=dtype), between)
        if isinstance(start, InverseSolution):
            start = InverseSolution(x=self._inner(start.x), residual=start.residual / self.scale,
                                    converged=start.converged, mapped=self._inner(start.mapped, self.center_out),
                                    jacobian=start.jacobian, iterations=start.iterations)
        elif start is not None:
            start = self._inner(torch.as_tensor(start).to(device=device, dtype=dtype))
        solution = self.base.solve_inverse(inner_y, start, t=t, tol=tol, max_iter=max_iter)
        return InverseSolution(x=self._outer(solution.x, self.center), residual=solution.residual * self.scale,
                               converged=solution.converged, mapped=self._outer(solution.mapped),
                               jacobian=solution.jacobian, iterations=solution.iterations)

    def dtype_and_device(self) -> tuple[torch.dtype, torch.device | None]:
        return self.base.dtype_and_device()

    def config(self) -> dict[str, Any]:
        return {**self.base.config(), "scale": self.scale, "center": self.center.tolist(),
                "center_out": self.center_out.tolist()}


def network_of(model: TransportMap) -> TransportMap:
    """The network whose weights ``model`` is: the model itself, or the network an ``InverseMap`` inverts (either
    within a ``RescaledMap``)."""
    if isinstance(model, RescaledMap):
        model = model.base
    return model.base if isinstance(model, InverseMap) else model


# --------------------------------------------------------------------------------------------
class MLPMap(TransportMap):
    """Unconstrained MLP d -> width x depth (tanh) -> d: the paper's baseline; not monotone."""

    monotone = False

    def __init__(self, dim: int, width: int = 128, depth: int = 3):
        super().__init__(dim)
        check_positive_int(width, "width")
        check_positive_int(depth, "depth")
        self.width, self.depth = width, depth
        layers: list[nn.Module] = []
        sizes = [dim] + [width] * depth
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.Tanh()]
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "width": self.width, "depth": self.depth}


def check_positive_int(value: Any, name: str) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (bool refused); ``name`` is the argument's name."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


#: What a user picks in a select box -> the class that builds it.
NETWORKS: dict[str, type[TransportMap]] = {
    "mGradNet-M": MGradNetM,
    "mGradNet-C": MGradNetC,
    "MLP baseline": MLPMap,
}


def build_map(name: str, **kwargs: Any) -> TransportMap:
    """Build a map by its registry name (``NETWORKS``) or class name."""
    for label, cls in NETWORKS.items():
        if name in (label, cls.__name__):
            return cls(**kwargs)
    raise ValueError(f"unknown map {name!r}; choose one of {sorted(NETWORKS)}")


# torch's global generator is shared by every thread; seeding and building under a lock keeps one
# session's initialisation from being interleaved with another's.
_SEED_LOCK = threading.Lock()


def seeded_map(name: str, seed: int, **kwargs: Any) -> TransportMap:
    """``build_map(name, **kwargs)`` with parameters initialised from ``seed``, thread-safely, without
    changing torch's global random state."""
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_map(name, **kwargs)
