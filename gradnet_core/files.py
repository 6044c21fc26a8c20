"""Saving and loading trained maps as safetensors: weights plus a JSON description, no pickle.

A file holds the map's tensors and, in the safetensors metadata, ``{"format": "gradnetot-map",
"version": 1, "class": ..., "config": {...}}`` (and ``"inverse": true`` for an ``InverseMap``, stored as its
network; ``"rescaled": {"scale": s, "center": [...], "center_out": [...]}`` for a ``RescaledMap``, files from before
the target's own centre without ``center_out``). Loading rebuilds the class from
the registry and loads the tensors; nothing in the file is ever executed.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from .networks import NETWORKS, InverseMap, RescaledMap, TransportMap, network_of

__all__ = ["save_map", "load_map", "load_map_file", "map_to_bytes", "map_from_bytes", "read_map", "MapFile",
           "FORMAT", "MAX_FILE_BYTES", "MAX_PARAMETERS", "SIZE_CAPS"]

FORMAT = "gradnetot-map"
_VERSION = 1


def _metadata(model: TransportMap, extra: dict[str, Any] | None) -> dict[str, str]:
    if not isinstance(model, TransportMap):
        raise ValueError(f"only gradnet_core maps can be saved; got {type(model).__name__}")
    network = network_of(model)
    info = {"format": FORMAT, "version": _VERSION, "class": type(network).__name__, "config": network.config()}
    if isinstance(model, RescaledMap):
        info["rescaled"] = {"scale": model.scale, "center": model.center.tolist(),
                            "center_out": model.center_out.tolist()}
        model = model.base
    if network is not model:
        info["inverse"] = True
    if extra:
        info["extra"] = extra
    return {"gradnetot": json.dumps(info)}


def _tensors(model: TransportMap) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in network_of(model).state_dict().items()}


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


@dataclass(frozen=True)
class MapFile:
    """A map read back from a file, and the ``extra`` description saved beside it (None if there was none)."""

    model: TransportMap
    extra: dict[str, Any] | None


#: What a map file may hold. Files come from anyone once the app accepts uploads, so every size is
#: checked against these caps and against the tensors in the file before anything is allocated.
MAX_FILE_BYTES = 64_000_000
MAX_HEADER_BYTES = 8_000_000
MAX_PARAMETERS = 16_000_000
SIZE_CAPS = {"dim": 1024, "width": 4096, "depth": 64, "modules": 1024}


def load_map(path: str | os.PathLike) -> TransportMap:
    """Rebuild a map saved by ``save_map``; raises ValueError for anything else."""
    return load_map_file(path).model


def load_map_file(path: str | os.PathLike) -> MapFile:
    """``load_map`` with the ``extra`` description the file carries."""
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ValueError(_too_big(size))
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ValueError(f"cannot read map file {os.fspath(path)!r}: {err.strerror}") from err
    return read_map(data)


def map_from_bytes(data: bytes) -> TransportMap:
    """Rebuild a map from the bytes of a ``save_map`` file."""
    return read_map(data).model


def _too_big(size: int) -> str:
    return (f"the map file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes "
            f"({MAX_FILE_BYTES / 1e6:g} MB)")


def read_map(data: bytes) -> MapFile:
    """Rebuild a map and its ``extra`` from the bytes of a ``save_map`` file; raises ValueError for anything
    else. The header is read and every size checked (against ``SIZE_CAPS``, ``MAX_PARAMETERS`` and the
    tensors actually in the file) before a single weight is loaded; non-finite weights are refused. The
    architecture's shapes come from building it: on the CPU when its settings bound its weights under
    ``MAX_PARAMETERS`` (``_weights_bound``), that network then being the map; else on torch's "meta" device,
    which allocates nothing (but imports torch._dynamo, 2.5 CPU s, on its first use)."""
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(_too_big(len(data)))
    header, info = _header(data)
    classes = {cls.__name__: cls for cls in NETWORKS.values()}
    cls = classes.get(info.get("class"))
    config = info.get("config")
    if cls is None or not isinstance(config, dict):
        raise ValueError(f"map file names an unknown architecture {str(info.get('class'))[:80]!r}")
    _check_config(cls, config)
    shapes = _tensor_shapes(header)
    small = _weights_bound(cls, config) <= MAX_PARAMETERS
    try:
        if small:
            skeleton = cls(**config)
        else:
            with torch.device("meta"):
                skeleton = cls(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"map file's settings do not build a {cls.__name__}: {err}") from err
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if expected != shapes:
        raise ValueError(f"map file does not match its architecture {cls.__name__}: "
                         f"{_shape_difference(expected, shapes)}")
    tensors = _load_tensors(data)
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"map file's weight {name!r} is not a floating-point tensor")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"map file's weight {name!r} holds NaN or infinite values: the map cannot be used")
    model = skeleton if small else cls(**config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"map file does not match its architecture {cls.__name__}: {err}") from err
    if info.get("inverse") is True:
        if not model.monotone:
            raise ValueError(f"map file asks for the inverse of {cls.__name__}, which is not monotone")
        model = InverseMap(model)
    rescaled = info.get("rescaled")
    if rescaled is not None:
        try:
            model = RescaledMap(model, rescaled["scale"], rescaled["center"], rescaled.get("center_out"))
        except (TypeError, KeyError, ValueError, AttributeError) as err:
            raise ValueError(f"map file's rescaling is not a positive scale and centres of {model.dim} numbers: "
                             f"{str(rescaled)[:80]}") from err
    extra = info.get("extra")
    return MapFile(model=model.eval(), extra=extra if isinstance(extra, dict) else None)


_NOT_OURS = ("this is not a GradNetOT Studio map file (expected a .safetensors file from a page's map download "
             "button or gradnet_core.save_map)")


def _header(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The safetensors header and our description in its metadata, checked for size and shape."""
    if not data:
        raise ValueError("the file is empty")
    if len(data) < 8:
        raise ValueError(_NOT_OURS)
    length = int.from_bytes(data[:8], "little")
    if 8 + length > len(data):
        raise ValueError(_NOT_OURS)
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"map file's header is {length:,} bytes; the limit is {MAX_HEADER_BYTES:,}")
    try:
        # RecursionError: JSON nested thousands deep.
        header = json.loads(data[8:8 + length])
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        text = metadata.get("gradnetot") if isinstance(metadata, dict) else None
        info = json.loads(text) if isinstance(text, str) else None
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(_NOT_OURS) from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(_NOT_OURS)
    offsets = [spec.get("data_offsets") for name, spec in header.items() if name != "__metadata__" and
               isinstance(spec, dict)]
    if any(isinstance(o, list) and len(o) == 2 and isinstance(o[1], int) and 8 + length + o[1] > len(data)
           for o in offsets):
        # ours, cut short: a download or a copy that did not finish (a review's half file got "not ours")
        raise ValueError("the map file is incomplete: it ends before its weights do; download or copy it again")
    if info.get("version") != _VERSION:
        raise ValueError(f"map file version {str(info.get('version'))[:20]} is not supported (expected {_VERSION})")
    return header, info


def _check_config(cls: type, config: dict[str, Any]) -> None:
    """Every setting is a constructor argument of ``cls`` with a plain value, sizes within ``SIZE_CAPS``."""
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for name, value in config.items():
        if name not in allowed:
            raise ValueError(f"map file's settings name {str(name)[:40]!r}, which {cls.__name__} does not take")
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            cap = SIZE_CAPS.get(name)
            if cap is not None and not 1 <= value <= cap:
                raise ValueError(f"map file asks for {name} = {value}; this app accepts 1 to {cap}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"map file's setting {name} is not finite")
        elif not (isinstance(value, str) and len(value) <= 40):
            raise ValueError(f"map file's setting {str(name)[:40]!r} is not a number, a flag or a short name")


def _weights_bound(cls: type, config: dict[str, Any]) -> float:
    """An upper bound on the numbers (weights and buffers) ``cls(**config)`` allocates, for every network of the
    registry: (dim + width + 4)^2 per module or layer, and twice more, covers a module's or layer's width x dim
    and width x width matrices, the d x d strict term, the packed Jacobian's index buffers and the scalars
    (tests/test_files.py checks it on each class). Infinite when a size is not a plain integer (building it then
    fails on the meta device, with the reason)."""
    parameters = inspect.signature(cls.__init__).parameters
    sizes = {}
    for name in ("dim", "width", "modules", "depth"):
        value = config.get(name, parameters[name].default if name in parameters else 1)
        if isinstance(value, bool) or not isinstance(value, int):
            return math.inf
        sizes[name] = value
    return (sizes["modules"] * sizes["depth"] + 2) * (sizes["dim"] + sizes["width"] + 4) ** 2


def _tensor_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    total = 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not (isinstance(shape, list) and len(shape) <= 8
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape)):
            raise ValueError(_NOT_OURS)
        shapes[name] = tuple(shape)
        total += math.prod(shape)
    if total > MAX_PARAMETERS:
        raise ValueError(f"map file holds {total:,} weights; the limit is {MAX_PARAMETERS:,}")
    return shapes


def _shape_difference(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        return f"missing weights {missing[:5]}, unexpected weights {unexpected[:5]}"
    name = next(k for k in expected if expected[k] != found[k])
    return f"weight {name!r} has shape {list(found[name])}, the settings need {list(expected[name])}"


def _load_tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as err:
        raise ValueError(_NOT_OURS) from err
