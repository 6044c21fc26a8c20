"""POT (``ot``), imported on first use and without scikit-learn or networkx.

POT's package import pulls in scikit-learn and networkx, when installed, for a few features this library never calls
(k-means starts of low-rank and quantised Gromov solvers, PCA in ``ot.dr``; graph partitions of the quantised Gromov
solvers); that is about 1.1 and 0.2 of the 2.5 s POT takes to import on this project's CPU, paid by the first ground
truth, verdict or score of every process. With them held out of ``sys.modules`` while ``ot`` imports, POT records
those features as unavailable (it imports each in a ``try``) and imports without them; both stay importable
afterwards (``ot.da`` imports scikit-learn lazily where an option needs it). Where one is already imported, POT uses
it as usual.

POT's package also imports ``ot.datasets`` (toy data generators this library never calls), and with it
``scipy.stats``: 0.35-0.45 of the 1.2 s POT's import takes with torch loaded. It is registered first as a module
whose code runs when one of its attributes is first read (``_defer``): ``ot.datasets.make_1D_gauss`` works as before.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from types import ModuleType

__all__ = ["import_pot"]

_lock = threading.Lock()


#: Optional dependencies of POT's package import that this library never uses.
HELD_OUT = ("sklearn", "networkx")


def import_pot() -> ModuleType:
    """The ``ot`` module, importing it (without scikit-learn or networkx) the first time."""
    module = sys.modules.get("ot")
    if module is not None:
        return module
    with _lock:
        held = [name for name in HELD_OUT if name not in sys.modules]
        for name in held:
            sys.modules[name] = None               # `import name...` now raises ImportError, which POT catches
        try:
            for name in DEFERRED:
                _defer("ot", name)
            import ot
        finally:
            for name in held:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]
    return ot


#: POT's submodules its package imports that this library never uses, imported when first used (``_defer``).
DEFERRED = ("datasets",)


def _defer(package: str, name: str) -> None:
    """Register ``package.name`` as a module whose code runs when one of its attributes is first read, found without
    importing ``package`` (whose import then takes the registered module), unless it is imported already or cannot
    be found. (``importlib.util.LazyLoader`` runs the code at the import system's first look at the module's
    ``__spec__``, which ``from package import name`` takes: too soon.)"""
    full = f"{package}.{name}"
    if full in sys.modules or package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [importlib.util.spec_from_file_location(full, os.path.join(folder, f"{name}.py")) for folder in folders
             if os.path.isfile(os.path.join(folder, f"{name}.py"))]
    if not found or found[0].loader is None:
        return
    sub = found[0]
    module = importlib.util.module_from_spec(sub)
    lock = threading.Lock()

    def load(attribute: str) -> object:
        with lock:
            if module.__dict__.get("__getattr__") is load:
                del module.__getattr__
                sub.loader.exec_module(module)
        return object.__getattribute__(module, attribute)

    module.__getattr__ = load                        # PEP 562: called for the attributes the module lacks
    sys.modules[full] = module
