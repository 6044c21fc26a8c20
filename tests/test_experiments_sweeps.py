"""An experiment's sweep of trainings (``common.run_tasks``) on its backends: locally, and on Ray (a Ray
instance started here; on a cluster the same code connects to RAY_ADDRESS). Seeded trainings give the
same numbers wherever they run.

Ray is an optional extra: ``pip install -r requirements-ray.txt`` (CI installs it). Without it the Ray
tests are skipped, and the backend says how to install it.
"""

import sys

import pytest

from gradnet_core.experiments import EXPERIMENTS
from gradnet_core.experiments.__main__ import build_parser, main
from gradnet_core.experiments.common import ProgressTracker, run_tasks
from gradnet_core.experiments.digits_table import run_digits_table
from gradnet_core.experiments.highdim import _highdim_run

NO_RAY = "Ray is an optional extra (pip install -r requirements-ray.txt); CI installs it"
TIMES = ("train_s", "s_per_step")      # wall clock: the only columns that may differ between backends


def _digits_sweep(**where) -> tuple[list[dict], list]:
    """Four short trainings (pairs 0 -> 1 and 1 -> 0, two seeds each; one run per map, where the preset would train
    a flagged map back and again): the table's rows and the progress reports."""
    reports = []
    result = run_digits_table(digits=[0, 1], pairs=[(0, 1), (1, 0)], steps=30, n_test=60, seeds=2, draws=2,
                              write_files=False, on_progress=reports.append,
                              settings=["digits.attempts=1", "digits.direction=forward"], **where)
    return [{k: v for k, v in row.items() if k not in TIMES} for row in result.rows], reports


@pytest.mark.slow
def test_a_sweep_gives_the_same_numbers_locally_and_on_ray():
    ray = pytest.importorskip("ray", reason=NO_RAY)
    here, _ = _digits_sweep(jobs=1)
    on_ray, reports = _digits_sweep(backend="ray", jobs=None)
    assert on_ray == here                          # float equality, every metric of every pair
    assert all(0 < row["mse"] < 1 for row in on_ray)
    # Progress came back from the Ray tasks as they trained (a loss is only known there), and all of it.
    assert {r.run for r in reports if r.loss is not None} == {0, 1, 2, 3}
    assert reports[-1].done == reports[-1].total == 4 * 30
    assert not ray.is_initialized()                # the instance started for the sweep is shut down


def test_a_failing_training_on_ray_raises_its_own_error_and_starts_nothing_more():
    ray = pytest.importorskip("ray", reason=NO_RAY)
    ray.init(include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        good = (2, "ours", "mGradNet-M", 2, 1234, 0, 20)
        bad = (2, "ours", "no such network", 2, 1234, 0, 20)
        finished = []
        with pytest.raises(ValueError, match="unknown model 'no such network'"):
            # The costliest task, the bad one, starts first; one at a time, so nothing else runs.
            run_tasks(_highdim_run, [good, bad, good], ["good", "bad", "good again"], ProgressTracker([2, 2, 2], None),
                      jobs=1, cost=[1, 2, 1], on_result=lambda k, row: finished.append(k), backend="ray")
        assert finished == []
        assert ray.is_initialized()                # a Ray session this process already held is left running
        rows = run_tasks(_highdim_run, [good], ["good"], ProgressTracker([2], None), jobs=None, backend="ray")
        assert rows[0]["model"] == "mGradNet-M" and rows[0]["steps"] == 2
    finally:
        ray.shutdown()


def test_without_ray_the_ray_backend_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)   # as on a machine without the extra
    with pytest.raises(ValueError, match="pip install -r requirements-ray.txt"):
        run_tasks(_highdim_run, [(2, "ours", "mGradNet-M", 2, 1234, 0, 20)], ["one"], ProgressTracker([2], None),
                  backend="ray")
    # With RAY_ADDRESS set and no --backend, the command line chooses Ray; --backend local overrides it.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    tiny = ["digits-table", "--digits", "0", "1", "--pairs", "0-1", "--steps", "2", "--seeds", "1", "--draws", "1",
            "--n-test", "40", "--no-progress", "--out", str(tmp_path)]
    assert main(tiny) == 2
    assert "requirements-ray.txt" in capsys.readouterr().err
    assert main([*tiny, "--backend", "local"]) == 0


def test_every_sweep_takes_jobs_and_backend_and_nothing_else_does(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    parser = build_parser()
    sweeps = {name for name, experiment in EXPERIMENTS.items() if experiment.sweep}
    assert sweeps == {"highdim", "digits-table", "robustness"}
    for name in sweeps:
        args = parser.parse_args([name, "--backend", "ray", "--jobs", "3"])
        assert (args.backend, args.jobs) == ("ray", 3)
        assert parser.parse_args([name]).backend == "local"
    for name in set(EXPERIMENTS) - sweeps:
        args = parser.parse_args([name])
        assert not hasattr(args, "backend") and not hasattr(args, "jobs")
    with pytest.raises(ValueError, match="backend must be one of local, ray"):
        run_tasks(_highdim_run, [], [], ProgressTracker([], None), backend="dask")


def test_the_progress_of_a_run_with_a_second_phase_counts_its_steps():
    # The CLI's bar reached 100 % at a digit map's 1000 Monge-Ampere steps and stayed there through its 600 Sinkhorn
    # steps (a review): a run grows to the total its progress reports.
    from types import SimpleNamespace

    seen = []
    tracker = ProgressTracker([10, 5], lambda p: seen.append((p.done, p.total)))
    report = tracker.callback(0, "pair")
    report(SimpleNamespace(step=10, total=10, loss=1.0))
    report(SimpleNamespace(step=12, total=16, loss=0.1))
    tracker.finish(0, "pair")
    assert seen == [(0, 15), (10, 15), (12, 21), (16, 21)]
