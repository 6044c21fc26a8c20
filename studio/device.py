"""Where training runs, in words. Apart from ``studio.panels`` so that the Home page, which shows it,
imports nothing heavier than gradnet_core (``studio.jobs`` imports POT up front)."""

from __future__ import annotations

import os

import torch

from gradnet_core.training import resolve_device

__all__ = ["device_label", "backend"]


def device_label() -> str:
    """Where training runs: the GPU's name, "CPU", or the Ray cluster (``scheduler.backend``)."""
    if backend() == "ray":
        where = os.environ.get("RAY_ADDRESS")
        return f"Ray cluster at {where}" if where else "Ray instance on this server"
    device = resolve_device("auto")
    return f"GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "CPU"


def backend() -> str:
    """Where the server's trainings run: "ray" when ``GRADNET_BACKEND=ray`` or ``RAY_ADDRESS`` names a cluster,
    else "local" (worker processes on this machine)."""
    chosen = os.environ.get("GRADNET_BACKEND") or ("ray" if os.environ.get("RAY_ADDRESS") else "local")
    if chosen not in ("local", "ray"):
        raise ValueError(f"GRADNET_BACKEND must be 'local' or 'ray'; got {chosen!r}")
    return chosen
