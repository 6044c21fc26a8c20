"""POT (``ot``), imported on first use and without scikit-learn or networkx.

POT's package import pulls in scikit-learn and networkx, when installed, for a few features this library never calls
(k-means starts of low-rank and quantised Gromov solvers, PCA in ``ot.dr``; graph partitions of the quantised Gromov
solvers); that is about 1.1 and 0.2 of the 2.5 s POT takes to import on this project's CPU, paid by the first ground
truth, verdict or score of every process. With them held out of ``sys.modules`` while ``ot`` imports, POT records
those features as unavailable (it imports each in a ``try``) and imports without them; both stay importable
afterwards (``ot.da`` imports scikit-learn lazily where an option needs it). Where one is already imported, POT uses
it as usual.
"""

from __future__ import annotations

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
            import ot
        finally:
            for name in held:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]
    return ot
