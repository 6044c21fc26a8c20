"""gradnet_core is a pure library: importing it loads no app or plotting code (Streamlit, pandas, plotly),
and its experiments load Ray only to run on it.

Checked in a fresh interpreter, because this test process has long imported all three."""

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_ONLY = ("streamlit", "pandas", "plotly")


def _loaded_after(statement: str, cwd: Path = ROOT, modules: tuple[str, ...] = APP_ONLY) -> list[str]:
    """The ``modules`` in sys.modules after running ``statement`` in a new interpreter."""
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_the_library_loads_no_app_code():
    assert _loaded_after("import gradnet_core") == []


def test_the_experiments_and_their_command_line_load_no_ray():
    # Ray is an optional extra for sweeps on a cluster: only run_tasks(backend="ray") imports it.
    statement = ("from gradnet_core.experiments import EXPERIMENTS\n"
                 "from gradnet_core.experiments.__main__ import build_parser\n"
                 "build_parser()\n"
                 "for e in EXPERIMENTS.values(): e.load()")
    assert _loaded_after(statement, modules=("ray",)) == []


def test_training_loads_no_compiler():
    # torch.optim's first step imports torch._dynamo (about 1.4 CPU s); gradnet_core.optim does not.
    # One process trains with each optimiser (a process each would cost 5 s more apiece for the same check).
    statement = ("import torch\nfrom gradnet_core import Gaussian, TrainConfig, seeded_map, train\n"
                 "g = Gaussian(torch.zeros(2), torch.eye(2))\n"
                 "for optimizer in ('adam', 'adamw', 'sgd'):\n"
                 "    train(seeded_map('mGradNet-M', 0, dim=2), g, g, TrainConfig(steps=3, optimizer=optimizer, "
                 "lr_schedule='cosine'))")
    assert _loaded_after(statement, modules=("torch._dynamo",)) == []


def test_the_check_sees_an_app_import_in_the_library(tmp_path):
    # A copy of the package whose __init__ imports Streamlit must be caught: the test above can fail.
    pytest.importorskip("streamlit")
    package = tmp_path / "gradnet_core"
    shutil.copytree(ROOT / "gradnet_core", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text("import streamlit\n" + (package / "__init__.py").read_text())
    loaded = _loaded_after(f"import gradnet_core; assert gradnet_core.__file__ == {str(package / '__init__.py')!r}",
                           cwd=tmp_path)
    assert "streamlit" in loaded


HOME_PROBE = ("import sys, threading\nfrom streamlit.testing.v1 import AppTest\n"
              "at = AppTest.from_file('app.py', default_timeout=120).run()\n"
              "assert not at.exception and 'This machine' in [s.value for s in at.subheader], at.exception\n"
              "loaded = [m for m in MODULES if m in sys.modules]\n"
              "for thread in threading.enumerate():\n"
              "    if thread.name == 'gradnet-prewarm':\n"
              "        thread.join(120)\n"
              "from studio.device import prewarm_errors\n"
              "print(' '.join(loaded), '|', ' '.join(m for m in MODULES if m in sys.modules), '|', prewarm_errors)")


def _home(prewarm: bool, modules: tuple[str, ...]) -> tuple[list[str], list[str], str]:
    """The ``modules`` loaded once a fresh server process has rendered Home, and once the prewarm thread is done;
    what the prewarm's failed imports raised."""
    env = {**os.environ, "GRADNET_PREWARM": "1" if prewarm else "0"}
    done = subprocess.run([sys.executable, "-c", f"MODULES = {modules!r}\n" + HOME_PROBE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, after, errors = done.stdout.split("|")
    return before.split(), after.split(), errors.strip()


def _cpu_only_torch() -> bool:
    return "+cpu" in version("torch")


def test_the_home_page_renders_without_the_training_imports():
    # The first page a visitor sees pays neither for POT (about 1 CPU s of imports that studio.jobs makes up front
    # for the training pages) nor, with a CPU-only torch, for torch and gradnet_core (about 2 CPU s): the device it
    # names is known from torch's version (studio.device), gradnet_core's version read from its source.
    heavy = ("ot", "torch._dynamo", "studio.jobs") + (("torch", "gradnet_core") if _cpu_only_torch() else ())
    before, after, _ = _home(prewarm=False, modules=heavy)
    assert before == after == []


def test_after_the_first_page_the_training_stack_is_imported_in_the_background():
    before, after, errors = _home(prewarm=True, modules=("torch", "gradnet_core", "studio.panels", "studio.jobs"))
    assert after == ["torch", "gradnet_core", "studio.panels", "studio.jobs"], errors


def test_a_page_run_waits_until_the_background_import_is_done(monkeypatch):
    # A page importing beside the background import could get a module half initialised ("partially initialized
    # module 'ot' has no attribute 'gaussian'", met in the app's tests): app.py waits for it before any page runs.
    import time

    from studio import device
    done = []
    monkeypatch.setattr(device, "_import_stack", lambda: (time.sleep(0.5), done.append("imported")))
    monkeypatch.setattr(device, "_prewarm_thread", None)
    monkeypatch.setenv("GRADNET_PREWARM", "1")
    device.prewarm()
    assert done == []
    device.after_prewarm()
    assert done == ["imported"]
    app = (ROOT / "app.py").read_text()
    assert app.index("after_prewarm()") < app.index("st.navigation(") < app.rindex("prewarm()")
