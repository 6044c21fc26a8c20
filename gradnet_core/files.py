"""Saving and loading trained maps as safetensors: weights plus a JSON description, no pickle.

A file holds the map's tensors and, in the safetensors metadata, ``{"format": "gradnetot-map",
"version": 1, "class": ..., "config": {...}}``. Loading rebuilds the class from the registry and
loads the tensors; nothing in the file is ever executed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from .networks import NETWORKS, TransportMap

__all__ = ["save_map", "load_map", "map_to_bytes", "map_from_bytes", "FORMAT"]

FORMAT = "gradnetot-map"
_VERSION = 1


def _metadata(model: TransportMap, extra: dict[str, Any] | None) -> dict[str, str]:
    if not isinstance(model, TransportMap):
        raise ValueError(f"only gradnet_core maps can be saved; got {type(model).__name__}")
    info = {"format": FORMAT, "version": _VERSION, "class": type(model).__name__, "config": model.config()}
    if extra:
        info["extra"] = extra
    return {"gradnetot": json.dumps(info)}


def _tensors(model: TransportMap) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def map_to_bytes(model: TransportMap, extra: dict[str, Any] | None = None) -> bytes:
    """The file ``save_map`` would write, as bytes (for downloads)."""
    from safetensors.torch import save

    return save(_tensors(model), metadata=_metadata(model, extra))


def save_map(model: TransportMap, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the map's architecture (JSON) and weights (safetensors) to ``path``.

    ``extra`` is any JSON-serialisable description (densities, training settings) kept beside it.
    """
    with open(path, "wb") as fh:
        fh.write(map_to_bytes(model, extra))


def load_map(path: str | os.PathLike) -> TransportMap:
    """Rebuild a map saved by ``save_map``; raises ValueError for anything else."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise ValueError(f"cannot read map file {os.fspath(path)!r}: {err.strerror}") from err
    return map_from_bytes(data)


def map_from_bytes(data: bytes) -> TransportMap:
    """Rebuild a map from the bytes of a ``save_map`` file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    not_ours = "this is not a GradNetOT Studio map file (expected a safetensors file written by save_map)"
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        info = json.loads(header.get("__metadata__", {}).get("gradnetot", "null"))
    except (SafetensorError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as err:
        raise ValueError(not_ours) from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(not_ours)
    if info.get("version") != _VERSION:
        raise ValueError(f"map file version {info.get('version')} is not supported (expected {_VERSION})")
    classes = {cls.__name__: cls for cls in NETWORKS.values()}
    cls = classes.get(info.get("class"))
    config = info.get("config")
    if cls is None or not isinstance(config, dict):
        raise ValueError(f"map file names an unknown architecture {info.get('class')!r}")
    try:
        model = cls(**config)
        model.load_state_dict(tensors, strict=True)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"map file does not match its architecture {info['class']}: {err}") from err
    return model.eval()
