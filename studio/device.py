"""Where training runs, in words. Apart from ``studio.panels`` so that the Home page, which shows it,
imports nothing heavier than gradnet_core (``studio.jobs`` imports POT and torch._dynamo up front)."""

from __future__ import annotations

import torch

from gradnet_core.training import resolve_device

__all__ = ["device_label"]


def device_label() -> str:
    """Where training runs: the GPU's name, or "CPU"."""
    device = resolve_device("auto")
    return f"GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "CPU"
