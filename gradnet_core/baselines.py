"""Baseline monotone maps: the ICASSP 2023 gradient networks (C-MGN, M-MGN) and an input-convex network.

``CMGN`` and ``MMGN`` are the predecessors of the mGradNets (Chaudhari, Pranav and Moura, "Learning
gradients of convex functions with monotone gradient networks", ICASSP 2023; docs/method.md §2). Both carry
a V^T V x term and compute their Jacobian in closed form, packed like the mGradNets'. ``ICNNMap`` is the
gradient of an input-convex neural network (Amos, Xu and Kolter, ICML 2017; as an OT map, Makkuva et
al., ICML 2020): the map is the autograd gradient of the potential and its Jacobian the potential's
Hessian, by double backward.

The package registers these classes in ``gradnet_core.networks.NETWORKS`` (see ``BASELINES``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import GradientNetwork, TransportMap, check_positive_int, xavier_uniform

__all__ = ["CMGN", "MMGN", "ICNNMap", "BASELINES", "CMGN_ACTIVATIONS"]


def _tanh(z: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(z)
    return t, 1.0 - t * t


def _sigmoid(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    return s, s * (1.0 - s)


def _softplus(z: Tensor) -> tuple[Tensor, Tensor]:
    return F.softplus(z), torch.sigmoid(z)


#: Nondecreasing activations for C-MGN: name -> z -> (sigma(z), sigma'(z)).
CMGN_ACTIVATIONS: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
}


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be zero or a positive number; got {eps!r}")
    return float(eps)


class _QuadraticTerm(GradientNetwork):
    """Base of the ICASSP networks: the V^T V x (+ eps x) term is part of their architecture
    (docs/method.md §2), so they always carry the base class's quadratic term, V initialised to I / sqrt(2);
    ``eps`` >= 0 (eps = 0 is the paper's network).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__(dim)
        self._add_quadratic_term(_check_eps(eps), v_init=1.0 / math.sqrt(2.0))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "eps": self.eps}


class CMGN(_QuadraticTerm):
    """Cascaded monotone gradient network (ICASSP 2023), ``depth`` layers sharing one ``W: (width, d)``.

    z_0 = W x + b_0;  z_l = W x + s(z_{l-1}) + b_l;  T(x) = W^T s(z_{L-1}) + V^T V x + b_L.
    J = W^T diag(s'(z_{L-1}) c_{L-1}) W + V^T V with c_0 = 1, c_l = 1 + s'(z_{l-1}) c_{l-1}.
    """

    def __init__(self, dim: int, width: int = 32, depth: int = 4, activation: str = "tanh", eps: float = 0.0):
        super().__init__(dim, eps)
        check_positive_int(width, "width")
        check_positive_int(depth, "depth")
        if activation not in CMGN_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(CMGN_ACTIVATIONS)}")
        self.width, self.depth, self.activation = width, depth, activation
        self._act = CMGN_ACTIVATIONS[activation]
        self.W = nn.Parameter(xavier_uniform(width, dim))
        self.bias = nn.Parameter(torch.zeros(depth, width))
        self.out_bias = nn.Parameter(torch.zeros(dim))

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        wx = x @ self.W.T                                              # (n, h)
        z = wx + self.bias[0]
        chain = torch.ones_like(z) if jacobian else None               # d z_l / d(Wx), per unit
        for layer in range(1, self.depth):
            s, ds = self._act(z)
            if jacobian:
                chain = 1.0 + ds * chain
            z = wx + s + self.bias[layer]
        s, ds = self._act(z)
        out = s @ self.W + self.out_bias
        packed = (ds * chain) @ self._square_products(self.W) if jacobian else None
        return out, packed

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "depth": self.depth, "activation": self.activation}


class MMGN(_QuadraticTerm):
    """Modular monotone gradient network (ICASSP 2023), ``modules`` modules of ``width`` units.

    z_k = W_k x + b_k;  T(x) = a + V^T V x + sum_k s_k(z_k) W_k^T tanh(z_k),  s_k(z) = sum_i log cosh z_i.
    Module k is the gradient of (1/2) s_k(W_k x + b_k)^2; its Jacobian is
    W_k^T [s_k diag(sech^2 z_k) + tanh(z_k) tanh(z_k)^T] W_k.
    """

    def __init__(self, dim: int, width: int = 32, modules: int = 4, eps: float = 0.0):
        super().__init__(dim, eps)
        check_positive_int(width, "width")
        check_positive_int(modules, "modules")
        self.width, self.n_modules = width, modules
        # Each module is quartic near 0 (about (1/2) h^2 c^4 d |x| for weights of size c), so weights of
        # size (2 / (h^2 d K))^(1/4) start the whole map at about the identity's scale.
        scale = (2.0 / (width * width * dim * modules)) ** 0.25
        self.W = nn.Parameter(scale * torch.randn(modules, width, dim))
        self.bias = nn.Parameter(torch.zeros(modules, width))
        self.out_bias = nn.Parameter(torch.zeros(dim))

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        k, h, d = self.W.shape
        w_flat = self.W.reshape(k * h, d)
        z = (x @ w_flat.T).view(-1, k, h) + self.bias                  # (n, K, h)
        t = torch.tanh(z)
        # log cosh z = |z| + log(1 + exp(-2|z|)) - log 2, stable for large |z|
        s = (z.abs() + F.softplus(-2.0 * z.abs()) - math.log(2.0)).sum(-1)   # (n, K)
        v = torch.einsum("nkh,khd->nkd", t, self.W)                    # W_k^T tanh(z_k)
        out = torch.einsum("nk,nkd->nd", s, v) + self.out_bias
        packed = None
        if jacobian:
            diag_weights = (s[..., None] * (1.0 - t * t)).reshape(-1, k * h)
            packed = diag_weights @ self._square_products(w_flat) + self._square_products(v).sum(1)
        return out, packed

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "modules": self.n_modules}


class ICNNMap(TransportMap):
    """T = grad u for an input-convex network u (Amos et al. 2017), ``depth`` hidden layers of ``width``.

    z_1 = sp(A_0 x + b_0);  z_{l+1} = sp(W_l^+ z_l + A_l x + b_l);  u(x) = w^+ . z_L + a . x
    (+ (1/2) x^T (V^T V + eps I) x when ``strict``), with W^+ = softplus(raw) >= 0, so u is convex
    (softplus is convex and nondecreasing). T(x) is the autograd gradient of u (create_graph, so it
    trains), J_T the Hessian of u by double backward. The strict quadratic keeps J positive definite,
    so log det stays finite for the Monge–Ampère and KL losses.
    """

    monotone = True

    def __init__(self, dim: int, width: int = 64, depth: int = 3, strict: bool = True, eps: float = 1e-3):
        super().__init__(dim)
        check_positive_int(width, "width")
        check_positive_int(depth, "depth")
        self.width, self.depth, self.strict = width, depth, bool(strict)
        self.eps = _check_eps(eps)
        self.input_layers = nn.ModuleList([nn.Linear(dim, width) for _ in range(depth)])
        # softplus(raw) starts at 1/width, so each hidden layer averages the one before it.
        start = math.log(math.expm1(1.0 / width))
        self.hidden_raw = nn.Parameter(start + 0.1 * torch.randn(depth - 1, width, width))
        self.out_raw = nn.Parameter(start + 0.1 * torch.randn(width))
        self.out_linear = nn.Parameter(torch.zeros(dim))
        if self.strict:
            self.V = nn.Parameter(torch.eye(dim) / math.sqrt(2.0))

    def potential(self, x: Tensor) -> Tensor:
        """u(x): (n,) for x: (n, d); convex in x for every parameter value."""
        z = F.softplus(self.input_layers[0](x))
        for layer in range(1, self.depth):
            z = F.softplus(z @ F.softplus(self.hidden_raw[layer - 1]).T + self.input_layers[layer](x))
        u = z @ F.softplus(self.out_raw) + x @ self.out_linear
        if self.strict:
            vx = x @ self.V.T
            u = u + 0.5 * (vx.square().sum(-1) + self.eps * x.square().sum(-1))
        return u

    def _gradient(self, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        """(x as a leaf that requires grad, grad u(x)); call with grad enabled."""
        xi = x if x.requires_grad else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.potential(xi).sum(), xi, create_graph=create_graph)
        return xi, grad

    def forward(self, x: Tensor) -> Tensor:
        # Works under torch.no_grad() too (the gradient in x is still needed); the result is then detached.
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            return self._gradient(x, create_graph=outer)[1]

    def _map_and_hessian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xi, grad = self._gradient(x, create_graph=True)
            # Rows of the Hessian: one backward per output coordinate (samples are independent, so
            # differentiating the batch sum gives every sample's row at once).
            rows = [torch.autograd.grad(grad[:, i].sum(), xi, create_graph=outer, retain_graph=True)[0]
                    for i in range(self.dim)]
        hessian = torch.stack(rows, dim=1)
        return (grad, hessian) if outer else (grad.detach(), hessian.detach())

    def jacobian(self, x: Tensor) -> Tensor:
        """J_T(x) = Hessian of u: (n, d, d), symmetric positive semi-definite."""
        return self._map_and_hessian(x)[1]

    def map_and_jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._map_and_hessian(x)

    def map_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """T(x): (n, d) and log det of the Hessian: (n,); -inf where it is not positive definite."""
        out, hessian = self._map_and_hessian(x)
        chol, info = torch.linalg.cholesky_ex(0.5 * (hessian + hessian.transpose(-1, -2)))
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return out, torch.where(info == 0, logdet, torch.full_like(logdet, -math.inf))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "width": self.width, "depth": self.depth, "strict": self.strict, "eps": self.eps}


#: Registry entries the package adds to ``gradnet_core.networks.NETWORKS``.
BASELINES: dict[str, type[TransportMap]] = {
    "C-MGN": CMGN,
    "M-MGN": MMGN,
    "ICNN": ICNNMap,
}
