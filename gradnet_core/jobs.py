"""Seeded, thread-safe construction of a registry network: ``seeded_map``.

The background training job that lived here is app code and moved to ``studio.jobs``; this module
keeps its name because the colour transfer and the experiments import ``seeded_map`` from it.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
# Callers build an optimizer next, and torch.optim imports torch._dynamo (thousands of modules) on
# the first one. Imported here, by the thread that imports this module: inside a training thread,
# while other threads hold the GIL (a Streamlit server, a loop reading progress), that import took
# minutes instead of seconds.
import torch._dynamo  # noqa: F401

from .networks import TransportMap, build_map

__all__ = ["seeded_map"]

# torch's global generator is shared by every thread; seeding and building under a lock keeps one
# session's initialisation from being interleaved with another's.
_SEED_LOCK = threading.Lock()


def seeded_map(name: str, seed: int, **kwargs: Any) -> TransportMap:
    """``build_map(name, **kwargs)`` with parameters initialised from ``seed``, thread-safely."""
    with _SEED_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_map(name, **kwargs)
