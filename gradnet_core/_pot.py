"""POT (``ot``), imported on first use and without scikit-learn.

POT's package import pulls in scikit-learn, when installed, for a few features this library never calls (k-means
starts of low-rank and quantised Gromov solvers, PCA in ``ot.dr``); that is about 1.1 of the 2.5 s POT takes to
import on this project's CPU, paid by the first ground truth, verdict or score of every process. With scikit-learn
held out of ``sys.modules`` while ``ot`` imports, POT records those features as unavailable and imports without it;
scikit-learn itself stays importable afterwards (``ot.da`` imports it lazily where an option needs it). Where
scikit-learn is already imported, POT uses it as usual.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

__all__ = ["import_pot"]

_lock = threading.Lock()


def import_pot() -> ModuleType:
    """The ``ot`` module, importing it (without scikit-learn) the first time."""
    module = sys.modules.get("ot")
    if module is not None:
        return module
    with _lock:
        hold = "sklearn" not in sys.modules
        if hold:
            sys.modules["sklearn"] = None          # `import sklearn...` now raises ImportError, which POT catches
        try:
            import ot
        finally:
            if hold and sys.modules.get("sklearn", 0) is None:
                del sys.modules["sklearn"]
    return ot
