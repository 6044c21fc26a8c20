"""Transport maps: monotone gradient networks (mGradNet-C, mGradNet-M) and an MLP baseline.

Every map is an ``nn.Module`` with ``forward(x) -> T(x)``, ``map_and_logdet(x) -> (T(x), log det J_T(x))``
and ``jacobian(x) -> (n, d, d)`` for ``x: (n, d)``. The mGradNets compute their Jacobian in closed
form (reference §2) alongside the forward pass; any other map uses the shared autograd fallback
(vmap of jacrev, then slogdet), which is also how the GradNetOT authors compute it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TransportMap", "GradientNetwork", "MGradNetC", "MGradNetM", "MLPMap", "NETWORKS", "ACTIVATIONS",
    "autograd_jacobian", "autograd_map_and_logdet", "build_map",
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

    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the architecture (used by ``save_map``)."""
        return {"dim": self.dim}


def _triu(d: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    rows, cols = torch.triu_indices(d, d, device=device)
    return rows, cols


def _pack(matrix: Tensor) -> Tensor:
    """Upper triangle (row-major, i <= j) of ``(..., d, d)`` as ``(..., d(d+1)/2)``."""
    rows, cols = _triu(matrix.shape[-1], matrix.device)
    return matrix[..., rows, cols]


def _unpack(packed: Tensor, d: int) -> Tensor:
    """Symmetric ``(n, d, d)`` from its packed upper triangle ``(n, d(d+1)/2)``."""
    rows, cols = _triu(d, packed.device)
    out = packed.new_zeros(packed.shape[0], d, d)
    out[:, rows, cols] = packed
    out[:, cols, rows] = packed
    return out


def logdet_packed(packed: Tensor, d: int) -> Tensor:
    """log det of symmetric positive definite matrices given as packed upper triangles.

    d = 1, 2 use the determinant directly; larger d a Cholesky factorisation. Rows that are not
    positive definite get -inf (their loss is then non-finite and training reports divergence).
    """
    if d == 1:
        return torch.log(packed[:, 0])
    if d == 2:
        a, b, c = packed.unbind(-1)
        return torch.log(a * c - b * b)
    chol, info = torch.linalg.cholesky_ex(_unpack(packed, d))
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return torch.where(info == 0, logdet, torch.full_like(logdet, -math.inf))


class GradientNetwork(TransportMap, ABC):
    """A map T = grad(u), u convex, with a closed-form symmetric PSD Jacobian.

    Subclasses implement ``_evaluate(x, jacobian) -> (T, packed J or None)``. The optional
    strict-convexity term adds (eps I + V^T V) x, which keeps J positive definite even when the
    network's own rank is below d.
    """

    monotone = True

    def __init__(self, dim: int, strict: bool = False, eps: float = 1e-3):
        super().__init__(dim)
        if strict and not eps > 0:
            raise ValueError(f"eps of the strict-convexity term must be positive; got {eps}")
        self.strict = bool(strict)
        self.eps = float(eps)
        if self.strict:
            self.V = nn.Parameter(0.1 * torch.eye(dim))
        rows, cols = _triu(dim)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    @abstractmethod
    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        """T(x) without the strict term, and its packed Jacobian when ``jacobian`` is true."""

    def _square_products(self, W: Tensor) -> Tensor:
        """W[..., i] * W[..., j] for i <= j: the rows of W's contribution to a packed J."""
        return W[..., self._rows] * W[..., self._cols]

    def _with_strict(self, x: Tensor, out: Tensor, packed: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if not self.strict:
            return out, packed
        quad = self.V.T @ self.V + self.eps * torch.eye(self.dim, dtype=x.dtype, device=x.device)
        out = out + x @ quad
        if packed is not None:
            packed = packed + quad[self._rows, self._cols]
        return out, packed

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self._with_strict(x, *self._evaluate(x, jacobian=False))
        return out

    def map_and_packed_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """T(x): (n, d) and the upper triangle of J_T(x): (n, d(d+1)/2), in one pass."""
        return self._with_strict(x, *self._evaluate(x, jacobian=True))

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, packed = self.map_and_packed_jacobian(x)
        return out, logdet_packed(packed, self.dim)

    def jacobian(self, x: Tensor) -> Tensor:
        return _unpack(self.map_and_packed_jacobian(x)[1], self.dim)

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
    # is not confined to a box. Slope sp(a)(1 - tanh^2) + sp(b) tanh^2 > 0.
    t = torch.tanh(z)
    t2 = t * t
    return a * t + b * (z - t), a * (1.0 - t2) + b * t2


#: Nondecreasing activations for mGradNet-C: name -> (value, derivative) given learnable scales a, b.
ACTIVATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "weighted-tanh": _weighted_tanh,
    "tanh": _tanh,
    "softplus": _softplus,
}


def _xavier(*shape: int) -> Tensor:
    fan_out, fan_in = shape[-2], shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (2.0 * torch.rand(*shape) - 1.0) * bound


class MGradNetC(GradientNetwork):
    """Cascaded monotone gradient network (reference §2), ``depth`` layers of ``width`` units.

    z_0 = sp(b_0)(Wx + c_0);  z_l = sp(b_l)(Wx + c_l) + sp(a_{l-1}) s(z_{l-1});
    T(x) = W^T [sp(a_{L-1}) s(z_{L-1})] + c_L;   J = W^T diag(delta) W, delta >= 0.
    """

    def __init__(self, dim: int, width: int = 32, depth: int = 4, activation: str = "weighted-tanh",
                 strict: bool = False, eps: float = 1e-3):
        super().__init__(dim, strict=strict, eps=eps)
        _check_positive_int(width, "width")
        _check_positive_int(depth, "depth")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.width, self.depth, self.activation = width, depth, activation
        self._act = ACTIVATIONS[activation]
        self.W = nn.Parameter(_xavier(width, dim))
        self.bias = nn.Parameter(torch.zeros(depth, width))
        self.out_bias = nn.Parameter(torch.zeros(dim))
        self.alpha = nn.Parameter(torch.rand(depth, width))
        self.beta = nn.Parameter(torch.rand(depth, width))
        self.act_a = nn.Parameter(torch.rand(depth, width))
        self.act_b = nn.Parameter(torch.rand(depth, width))

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        sa, sb = F.softplus(self.alpha), F.softplus(self.beta)
        aa, ab = F.softplus(self.act_a), F.softplus(self.act_b)
        wx = x @ self.W.T                                              # (n, h)
        z = sb[0] * (wx + self.bias[0])
        chain = sb[0]                                                  # d z_l / d(Wx), per unit
        for layer in range(1, self.depth):
            s, ds = self._act(z, aa[layer - 1], ab[layer - 1])
            if jacobian:
                chain = sb[layer] + sa[layer - 1] * ds * chain
            z = sb[layer] * (wx + self.bias[layer]) + sa[layer - 1] * s
        s, ds = self._act(z, aa[-1], ab[-1])
        out = (sa[-1] * s) @ self.W + self.out_bias
        if not jacobian:
            return out, None
        delta = sa[-1] * ds * chain                                    # (n, h), >= 0
        return out, delta @ self._square_products(self.W)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "depth": self.depth, "activation": self.activation}


# --------------------------------------------------------------------------------------------
# mGradNet-M
# --------------------------------------------------------------------------------------------
class MGradNetM(GradientNetwork):
    """Modular monotone gradient network (reference §2) with weighted-softmax modules.

    u_k = sp(beta_k)(W_k x + b_k);  T(x) = sum_k sp(alpha_k) W_k^T [sp(a_k) softmax(u_k) - sp(b_k) softmax(-u_k)] + c.
    """

    def __init__(self, dim: int, width: int = 32, modules: int = 4, strict: bool = False, eps: float = 1e-3):
        super().__init__(dim, strict=strict, eps=eps)
        _check_positive_int(width, "width")
        _check_positive_int(modules, "modules")
        if width < 2:
            raise ValueError("width of an mGradNet-M module must be at least 2 (softmax over one unit is constant)")
        self.width, self.n_modules = width, modules
        self.W = nn.Parameter(_xavier(modules, width, dim))
        self.bias = nn.Parameter(torch.zeros(modules, width))
        self.alpha = nn.Parameter(torch.rand(modules))
        self.beta = nn.Parameter(torch.rand(modules))
        self.softmax_a = nn.Parameter(torch.full((modules,), 0.5))
        self.softmax_b = nn.Parameter(torch.full((modules,), 0.5))
        self.out_bias = nn.Parameter(torch.zeros(dim))

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        k, h, d = self.W.shape
        scale = F.softplus(self.beta)                                  # (K,)
        ga = F.softplus(self.alpha) * F.softplus(self.softmax_a)       # (K,)
        gb = F.softplus(self.alpha) * F.softplus(self.softmax_b)
        w_flat = self.W.reshape(k * h, d)
        u = ((x @ w_flat.T).view(-1, k, h) + self.bias) * scale[:, None]
        p = torch.softmax(u, dim=-1)
        q = torch.softmax(-u, dim=-1)
        vp = torch.einsum("nkh,khd->nkd", p, self.W)                   # W_k^T p_k
        vq = torch.einsum("nkh,khd->nkd", q, self.W)
        out = torch.einsum("k,nkd->nd", ga, vp) - torch.einsum("k,nkd->nd", gb, vq) + self.out_bias
        if not jacobian:
            return out, None
        # sum_k sp(beta_k) [ga_k (W^T diag p W - vp vp^T) + gb_k (W^T diag q W - vq vq^T)]
        weights = (scale * ga)[:, None] * p + (scale * gb)[:, None] * q        # (n, K, h)
        diag_part = weights.reshape(-1, k * h) @ self._square_products(w_flat)
        outer_part = torch.einsum("k,nkp->np", scale * ga, self._square_products(vp)) \
            + torch.einsum("k,nkp->np", scale * gb, self._square_products(vq))
        return out, diag_part - outer_part

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "modules": self.n_modules}


# --------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------
class MLPMap(TransportMap):
    """Unconstrained MLP d -> width x depth (tanh) -> d: the paper's baseline; not monotone."""

    monotone = False

    def __init__(self, dim: int, width: int = 128, depth: int = 3):
        super().__init__(dim)
        _check_positive_int(width, "width")
        _check_positive_int(depth, "depth")
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


def _check_positive_int(value: Any, name: str) -> None:
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
