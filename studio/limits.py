"""What one training may cost on this server, from environment variables (defaults in the README's Limits
table), so that a class server can be set up without editing code.

- ``GRADNET_TIME_LIMIT``: wall seconds per training (900); training stops there and keeps its model.
- ``GRADNET_MAX_WORK``: optimiser steps x network weights per training (4e8, about 16 min of the paper's
  MNIST network on one core); a training asking for more is refused with a message, whatever its
  objective (the constrained flow's outer x inner steps included).
- ``GRADNET_SESSION_MB``: memory one session's inputs may take (1500 MB): an uploaded image's decoding
  (about 18 bytes a pixel) and the ground truth's exact plan (about 88 bytes per pair of samples), as
  measured on this app (issue 17: 710 MB for 39.9 megapixels, 1.4 GB for 4000 samples). The uploads'
  pixel limit and the samples slider's top follow from it.
- Sizes the inputs allow: ``SIZES`` (width, depth, modules, steps).
"""

from __future__ import annotations

import os

from gradnet_core.networks import TransportMap

__all__ = ["SIZES", "TIME_LIMIT", "MAX_WORK", "SESSION_BYTES", "upload_pixels", "truth_samples_cap", "check_work"]

SIZES = {"width": 512, "depth": 16, "modules": 64, "steps": 20000}


def _number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


TIME_LIMIT = _number("GRADNET_TIME_LIMIT", 900.0)
MAX_WORK = _number("GRADNET_MAX_WORK", 4e8)
SESSION_BYTES = _number("GRADNET_SESSION_MB", 1500.0) * 1e6
BYTES_PER_PIXEL = 18.0          # decoding an upload, per pixel
BYTES_PER_PAIR = 88.0           # the exact EMD plan of the ground truth, per (source, target) pair


def upload_pixels() -> int:
    """The most pixels an uploaded image may have within the session budget."""
    return int(SESSION_BYTES / BYTES_PER_PIXEL)


def truth_samples_cap(hi: int, step: int = 100) -> int:
    """The most ground-truth samples (a multiple of ``step``, at most ``hi``) within the session budget."""
    fits = int((SESSION_BYTES / BYTES_PER_PAIR) ** 0.5) // step * step
    return max(step, min(hi, fits))


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
