"""POT imported on first use without scikit-learn or networkx (gradnet_core._pot), in a fresh interpreter each."""

import subprocess
import sys

import pytest

pytest.importorskip("sklearn")


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pot_imports_without_scikit_learn_which_stays_importable():
    out = run("import sys\n"
              "from gradnet_core._pot import import_pot\n"
              "ot = import_pot()\n"
              "assert ot is sys.modules['ot'] and import_pot() is ot\n"
              "print('sklearn' in sys.modules, ot.lowrank.sklearn_import)\n"
              "import numpy as np\n"
              "a, b = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 1.0]])\n"
              "print(ot.emd2([], [], ot.dist(a, b)))\n"
              "import sklearn.cluster\n"
              "print(sklearn.cluster.KMeans.__name__)\n")
    assert out.split("\n") == ["False False", "1.0", "KMeans"]


def test_pot_imports_without_networkx_which_stays_importable():
    pytest.importorskip("networkx")
    out = run("import sys\n"
              "from gradnet_core._pot import import_pot\n"
              "ot = import_pot()\n"
              "print('networkx' in sys.modules, ot.gromov._utils.networkx_import)\n"
              "import networkx\n"
              "print(networkx.from_numpy_array.__name__)\n")
    assert out.split("\n") == ["False False", "from_numpy_array"]


def test_pot_uses_scikit_learn_when_it_is_already_imported():
    out = run("import sklearn.cluster\n"
              "from gradnet_core._pot import import_pot\n"
              "print(import_pot().lowrank.sklearn_import)\n")
    assert out == "True"


def test_pot_defers_its_toy_datasets_and_their_scipy_stats_import():
    # ot.datasets (and scipy.stats with it, 0.25-0.45 s) runs when first used, not at POT's import.
    out = run("import sys\n"
              "from gradnet_core._pot import import_pot\n"
              "ot = import_pot()\n"
              "print('scipy.stats' in sys.modules, type(ot.datasets).__name__)\n"
              "print(ot.datasets.make_1D_gauss(5, 2, 1).shape, 'scipy.stats' in sys.modules)\n"
              "try:\n"
              "    ot.datasets.no_such_thing\n"
              "except AttributeError:\n"
              "    print('AttributeError')\n")
    assert out.split("\n") == ["False module", "(5,) True", "AttributeError"]
