"""Where training runs, in words, and the training stack imported ahead of need.

Apart from ``studio.panels`` so that the Home page, which shows it, imports neither torch nor ``gradnet_core``
(about 2 CPU s of a fresh server's first render, most of it torch's import): where the installed torch is a CPU-only
build the answer is known from its version (``studio.jobs`` imports POT up front, too). ``prewarm`` then imports the
library in the background once the first page is out, so that the next page does not wait for it.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from importlib.metadata import PackageNotFoundError, version

__all__ = ["device_label", "backend", "prewarm", "after_prewarm"]


def device_label() -> str:
    """Where training runs: the GPU's name, "CPU", or the Ray cluster (``scheduler.backend``)."""
    if backend() == "ray":
        where = os.environ.get("RAY_ADDRESS")
        return f"Ray cluster at {where}" if where else "Ray instance on this server"
    if _cpu_only_torch():
        return "CPU"                                   # what resolve_device("auto") gives with such a build
    import torch

    from gradnet_core.training import resolve_device

    device = resolve_device("auto")
    if device.type != "cuda":
        return "CPU"
    # training.resolve_device leaves the small networks on the CPU, where their steps are faster.
    return f"GPU ({torch.cuda.get_device_name(device)}) for large networks and the CPU for small ones"


def _cpu_only_torch() -> bool:
    """True when the installed torch is a CPU-only build ("+cpu" in its version, as this project's CPU wheels have),
    which never finds a CUDA device: the device is then known without importing torch."""
    try:
        return "+cpu" in version("torch")
    except PackageNotFoundError:
        return False


_prewarm_lock = threading.Lock()
_prewarm_thread: threading.Thread | None = None


def prewarm() -> None:
    """Import the training stack (torch, ``gradnet_core``, the training panels) in a background thread, once per
    server process: after a fresh server's first page, which needs none of it, the next page finds it imported.
    ``GRADNET_PREWARM=0`` switches it off."""
    global _prewarm_thread
    if os.environ.get("GRADNET_PREWARM", "1") == "0":
        return
    with _prewarm_lock:
        if _prewarm_thread is not None:
            return
        _prewarm_thread = threading.Thread(target=_import_stack, name="gradnet-prewarm", daemon=True)
    _prewarm_thread.start()


def after_prewarm(timeout: float = 300.0) -> None:
    """Wait until the background import, if one runs, is done. Every page run calls this first: a page importing the
    same modules beside it could get one half initialised (where two threads each wait for a module the other is
    importing, importlib hands the second the module as it stands: "partially initialized module 'ot' has no
    attribute 'gaussian'", met in the app's tests when a page ran while the import was under way)."""
    thread = _prewarm_thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


prewarm_errors: list[str] = []      # what a failed background import raised, for the tests and a debugger


def _import_stack() -> None:
    """Import each module of the stack, trying a failed one twice more a second apart: an import that races one on
    another thread (the pages wait for this one, ``after_prewarm``; Streamlit's own threads do not) can fail once,
    and the page that needs a module imports it again anyway."""
    for name in ("torch", "gradnet_core", "studio.panels"):
        for _ in range(3):
            try:
                importlib.import_module(name)
                break
            except Exception as exc:
                prewarm_errors.append(f"{name}: {exc!r}")
                time.sleep(1.0)
        else:
            return


def backend() -> str:
    """Where the server's trainings run: "ray" when ``GRADNET_BACKEND=ray`` or ``RAY_ADDRESS`` names a cluster,
    else "local" (worker processes on this machine)."""
    chosen = os.environ.get("GRADNET_BACKEND") or ("ray" if os.environ.get("RAY_ADDRESS") else "local")
    if chosen not in ("local", "ray"):
        raise ValueError(f"GRADNET_BACKEND must be 'local' or 'ray'; got {chosen!r}")
    return chosen
