"""What one training may cost on this server, from environment variables (defaults in the README's Limits
table), so that a class server can be set up without editing code.

- ``GRADNET_TIME_LIMIT``: wall seconds per training (900); training stops there and keeps its model.
- ``GRADNET_MAX_WORK``: optimiser steps x network weights per training (4e8, about 16 min of the paper's
  MNIST network on one core); a training asking for more is refused with a message, whatever its
  objective (the constrained flow's outer x inner steps included).
- Sizes the inputs allow: ``SIZES`` (width, depth, modules, steps).
"""

from __future__ import annotations

import os

from gradnet_core.networks import TransportMap

__all__ = ["SIZES", "TIME_LIMIT", "MAX_WORK", "check_work"]

SIZES = {"width": 512, "depth": 16, "modules": 64, "steps": 20000}


def _number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


TIME_LIMIT = _number("GRADNET_TIME_LIMIT", 900.0)
MAX_WORK = _number("GRADNET_MAX_WORK", 4e8)


def check_work(steps: int, model: TransportMap, what: str = "This training") -> None:
    """Raise ValueError, saying what to change, when ``steps`` of ``model`` pass ``SIZES["steps"]`` or
    ``MAX_WORK``."""
    if steps > SIZES["steps"]:
        raise ValueError(f"{what} asks for {steps:,} steps; this server allows {SIZES['steps']:,} per training.")
    weights = sum(p.numel() for p in model.parameters())
    if steps * weights > MAX_WORK:
        raise ValueError(f"{what} asks for {steps:,} steps of a network with {weights:,} weights "
                         f"({steps * weights:.2g} weight-steps); this server allows {MAX_WORK:.2g} "
                         "(GRADNET_MAX_WORK): use fewer steps or a smaller network.")
