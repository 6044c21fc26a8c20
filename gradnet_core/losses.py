"""Training objectives for a map T pushing a source density p onto a target density q (docs/method.md §3).

Each loss takes the map, a batch ``x: (n, d)`` drawn from p, ``log_p: (n,)`` = log p(x), the
target density and how to get log det J_T (``map_and_logdet``), and returns a scalar tensor.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from .densities import Density

__all__ = ["monge_ampere_residual_values", "monge_ampere_loss", "kl_loss", "LOSSES", "RESIDUALS"]

MapAndLogdet = Callable[[Tensor], tuple[Tensor, Tensor]]

#: How a Monge–Ampère residual r is turned into a loss: mean |r| (the authors' choice) or mean r^2.
RESIDUALS: dict[str, Callable[[Tensor], Tensor]] = {
    "l1": lambda r: r.abs().mean(),
    "l2": lambda r: r.square().mean(),
}


def monge_ampere_residual_values(map_and_logdet: MapAndLogdet, x: Tensor, log_p: Tensor,
                                 target: Density) -> Tensor:
    """r(x) = log det J_T(x) - log p(x) + log q(T(x)), zero for the OT map; returns ``(n,)``."""
    y, logdet = map_and_logdet(x)
    return logdet - log_p + target.log_prob(y)


def monge_ampere_loss(map_and_logdet: MapAndLogdet, x: Tensor, log_p: Tensor, target: Density,
                      residual: str = "l1") -> Tensor:
    """Mean residual of the Monge–Ampère equation (GradNetOT Algorithm 1)."""
    return RESIDUALS[residual](monge_ampere_residual_values(map_and_logdet, x, log_p, target))


def kl_loss(map_and_logdet: MapAndLogdet, x: Tensor, log_p: Tensor, target: Density,
            residual: str = "l1") -> Tensor:
    """KL(T#p || q) = E_p[log p(x) - log det J_T(x) - log q(T(x))] (reverse KL / likelihood)."""
    return -monge_ampere_residual_values(map_and_logdet, x, log_p, target).mean()


#: Loss names a user can pick -> the function computing it.
LOSSES: dict[str, Callable[..., Tensor]] = {
    "monge-ampere": monge_ampere_loss,
    "kl": kl_loss,
}
