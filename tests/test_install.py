"""The package as a user installs it: `pip install .` (not editable) into a fresh virtual environment,
then, from a directory that is not the repository, the experiments CLI and the app find the bundled
digits inside the installed package (gradnet_core/data/, package data) and write their results under
the current directory.

The environment sees this interpreter's packages (``--system-site-packages``: torch and the rest are
not installed again) and the project is installed with ``--no-deps --no-build-isolation``, so nothing
is downloaded. Every check first asserts that the copy imported is the one in the environment, not the
repository's or an editable install's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from servers import streamlit_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the environment's python, an empty working directory outside the repository)."""
    base = tmp_path_factory.mktemp("install")
    # pip builds in the source tree (build/, *.egg-info): build from a copy, never touch the checkout.
    source = base / "source"
    source.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
    shutil.copytree(ROOT / "gradnet_core", source / "gradnet_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # This interpreter's pip installs into the environment (--python): the environment has no pip of
    # its own, and the build uses this interpreter's setuptools.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--disable-pip-version-check", str(source)],
                   check=True, env=_env())
    work = base / "work"
    work.mkdir()
    return python, work


def _python(python: Path, work: Path, code: str, timeout: float = 120) -> str:
    done = subprocess.run([str(python), "-c", code], cwd=work, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_installed_package_holds_the_bundled_images(installed):
    python, work = installed
    venv = python.parents[1]
    out = _python(python, work, "import json, gradnet_core, gradnet_core.images as im, gradnet_core.color as co; "
                  "print(json.dumps([gradnet_core.__file__, str(im.DIGITS_DIR), "
                  "sum(len(p) for p in im.bundled_digits().values()), sorted(co.bundled_color_images()), "
                  "float(im.load_bundled(4, 1).max())]))")
    module, digits_dir, count, colours, peak = json.loads(out.strip().splitlines()[-1])
    assert Path(module).resolve().is_relative_to(venv.resolve())
    assert Path(digits_dir).resolve().is_relative_to(venv.resolve())
    assert count == 30 and colours == ["daytime", "sunset"] and peak == 1.0


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler: the fused kernel "
                    "cannot be built here (.ci/run installs one)")
def test_the_installed_package_builds_its_fused_kernel(installed, tmp_path):
    python, work = installed
    venv = python.parents[1]
    out = _python(python, work, f"""
import json, os, torch
os.environ["GRADNET_CACHE"] = {str(tmp_path)!r}
from gradnet_core import MGradNetM, _fused
MGradNetM(2).map_and_logdet(torch.rand(10, 2))
print(json.dumps([_fused.__file__, _fused.status(), sorted(os.listdir({str(tmp_path)!r}))]))
""")
    module, status, built = json.loads(out.strip().splitlines()[-1])
    assert Path(module).resolve().is_relative_to(venv.resolve())
    assert status.startswith("in use") and len(built) == 1 and built[0].endswith(".so"), (status, built)


def test_the_cli_morphs_bundled_digits_into_results_under_the_working_directory(installed):
    python, work = installed
    done = subprocess.run([str(python), "-m", "gradnet_core.experiments", "morph", "--source", "0", "--target", "4",
                           "--steps", "5", "--n-test", "100", "--threads", "1", "--no-progress", "--json"],
                          cwd=work, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["source"] == "0" and summary["target"] == "4" and summary["steps"] == 5
    folder = work / "results" / "morph"
    for name in ("morph.csv", "morph.gif", "snapshots.png", "animation.html", "plotly.min.js", "summary.json"):
        assert (folder / name).stat().st_size > 0, name
    assert all(Path(p).parent == Path("results/morph") for p in summary["files"])


def test_the_app_runs_on_the_installed_package(installed):
    python, work = installed
    venv = python.parents[1]
    # AppTest in the environment: the repository goes last on sys.path, so the app's own modules
    # (studio/) come from it while gradnet_core stays the installed copy.
    out = _python(python, work, f"""
import sys
import gradnet_core
sys.path.append({str(ROOT)!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout=120).run()
at.switch_page("pages/digits.py").run()
assert not at.exception, at.exception
assert not at.error, [e.value for e in at.error]
assert sys.modules["gradnet_core"] is gradnet_core
print(gradnet_core.__file__)
""", timeout=180)
    assert Path(out.strip().splitlines()[-1]).resolve().is_relative_to(venv.resolve())


def test_streamlit_serves_the_app_started_from_another_directory(installed):
    python, work = installed
    with streamlit_server(python, ROOT / "app.py", work, work / "streamlit.log", env=_env()) as url:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and "<title>" in response.read().decode()
