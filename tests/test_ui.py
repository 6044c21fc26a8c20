"""The app's computing half (studio.problems, no running app): problems, ground truth, metrics,
table and slider conversions."""

import json
import math
import re
import time

import numpy as np
import pytest
import torch

from gradnet_core import Gaussian, GaussianMixture, TrainConfig
from gradnet_core.ground_truth import gaussian_map
from gradnet_core.networks import seeded_map
from gradnet_core.training import train
from studio.problems import (
    CHECK_METRICS, METRIC_COLUMNS, TRUTH_METRICS, Problem, compute_reference, evaluate_run, gaussian_from_row,
    gaussian_row, metrics_table, mixture_from_table, picked_objective,
)

PAPER = (Gaussian([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]]), Gaussian([0.0, 0.0], np.eye(2)))


def _row(w, mx, my, sx=0.5, sy=0.5, r=0.0):
    return {"weight": w, "mean_x": mx, "mean_y": my, "std_x": sx, "std_y": sy, "corr": r}


def test_closed_form_reference_is_the_gaussian_map_on_the_samples_and_the_grid():
    problem = Problem("t", *PAPER, truth="gaussian", samples=500)
    ref = compute_reference(problem)
    truth = gaussian_map(*PAPER)
    assert ref.points.shape == ref.mapped.shape == ref.target_samples.shape == (500, 2)
    np.testing.assert_allclose(ref.mapped, truth(ref.points), atol=1e-10)
    assert 20 <= len(ref.grid) <= 144
    np.testing.assert_allclose(ref.grid_mapped, truth(ref.grid), atol=1e-10)
    # Whitening: the mapped samples are close to N(0, I).
    np.testing.assert_allclose(np.cov(ref.mapped.T), np.eye(2), atol=0.2)
    # Same problem, same samples.
    np.testing.assert_array_equal(compute_reference(problem).points, ref.points)


def test_barycentric_reference_arrows_start_at_samples():
    source = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2) * 0.25] * 2)
    target = GaussianMixture([1.0], [[0.0, 3.0]], [np.eye(2) * 0.25])
    ref = compute_reference(Problem("t", source, target, truth="barycentric", samples=300))
    assert ref.mapped.shape == (300, 2) and len(ref.grid) > 5
    rows = [np.flatnonzero((ref.points == g).all(axis=1)) for g in ref.grid]
    assert all(len(r) == 1 for r in rows)
    np.testing.assert_array_equal(ref.grid_mapped, ref.mapped[[r[0] for r in rows]])
    # A uniform plan between equal-size samples maps each point onto one target sample.
    dist = np.linalg.norm(ref.mapped[:, None] - ref.target_samples[None], axis=-1).min(axis=1)
    assert dist.max() < 1e-9


def test_the_mixture_ground_truth_does_not_move_points_between_far_blobs():
    # Two blobs 40 apart onto the same turned by 30 degrees: the exact map moves each blob whole. With random counts
    # per blob the exact plan between 1000 samples a side carried the surplus of one blob's points to the other, and
    # the exact map scored several per cent L2-UVP against the page's ground truth; its samples are stratified now.
    turn = np.radians(30.0)
    means = np.array([[-20.0, 0.0], [20.0, 0.0]])
    turned = means @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    source = GaussianMixture([0.5, 0.5], means, [np.eye(2)] * 2)
    target = GaussianMixture([0.5, 0.5], turned, [np.eye(2)] * 2)
    ref = compute_reference(Problem("t", source, target, truth="barycentric", samples=1000))
    exact = ref.points + np.where(ref.points[:, :1] < 0, turned[0] - means[0], turned[1] - means[1])
    error = 100 * np.mean(np.sum((ref.mapped - exact) ** 2, axis=1)) / float(np.trace(target.cov.double().numpy()))
    assert error < 0.5 and ref.noise_l2_uvp < 0.5


def test_small_blobs_far_apart_still_get_arrows():
    # Blobs 100 apart of standard deviation 1 fell between the 12 x 12 arrow grid's nodes: no arrow (a review).
    source = GaussianMixture([0.5, 0.5], [[-50.0, 0.0], [50.0, 0.0]], [np.eye(2)] * 2)
    target = GaussianMixture([1.0], [[0.0, 0.0]], [np.eye(2)])
    ref = compute_reference(Problem("t", source, target, truth="barycentric", samples=300))
    assert len(ref.grid) >= 12 and np.isfinite(ref.grid_mapped).all()
    assert ref.grid[:, 0].min() < -40 and ref.grid[:, 0].max() > 40              # arrows on both blobs
    rows = [np.flatnonzero((ref.points == g).all(axis=1)) for g in ref.grid]     # starting at samples
    np.testing.assert_array_equal(ref.grid_mapped, ref.mapped[[r[0] for r in rows]])


def test_the_barycentric_ground_truth_says_its_own_error():
    # Right maps showed above the thresholds in the metrics table: the identity at 1.8 % L2-UVP against a 1000-sample
    # ground truth (a review). The reference estimates what an exact map scores against it; on a problem whose exact
    # map is the identity, the identity's score is about that.
    target = GaussianMixture([0.4, 0.6], [[-2.0, 1.0], [1.0, -1.0]], [np.eye(2) * 0.3, np.diag([0.8, 0.2])])
    ref = compute_reference(Problem("t", target, target, truth="barycentric", samples=1000))
    identity_mse = float(np.mean((ref.mapped - ref.points) ** 2))
    assert 0.5 < identity_mse / ref.noise_mse < 2.0
    var = float(torch.trace(target.cov.double()))
    assert ref.noise_l2_uvp == pytest.approx(100 * ref.noise_mse * 2 / var)
    exact = compute_reference(Problem("t", *PAPER, truth="gaussian", samples=300))
    assert exact.noise_mse is None and exact.noise_l2_uvp is None


def test_problem_signature_and_validation():
    a = Problem("t", *PAPER, truth="gaussian", samples=100)
    assert a.signature == Problem("t", *PAPER, truth="gaussian", samples=100).signature
    assert a.signature != Problem("t", *PAPER, truth="gaussian", samples=200).signature
    assert a.signature != Problem("t", PAPER[1], PAPER[0], truth="gaussian", samples=100).signature
    with pytest.raises(ValueError, match="closed-form"):
        Problem("t", GaussianMixture([1.0], [[0.0, 0.0]], [np.eye(2)]), PAPER[1], truth="gaussian", samples=10)
    with pytest.raises(ValueError, match="ground truth"):
        Problem("t", *PAPER, truth="guess", samples=10)
    assert a.describe()["source"]["mean"] == pytest.approx([1.0, -1.0])


def test_a_problem_described_and_set_up_again_keeps_its_strokes_and_typed_cells():
    # After a reload a drawing set aside came back as an uploaded picture: the problem set up from its description had
    # lost the strokes (a review). The strokes and the typed cells travel; neither is part of the problem.
    from studio.problems import problem_from_description, without_strokes

    extras = {"drawings": {"source": {"objects": [{"type": "path"}]}},
              "tables": {"source": [{"weight": "1", "mean_x": "0,5"}]}}
    a = Problem("t", *PAPER, truth="gaussian", samples=100, **extras)
    again = problem_from_description("t", json.loads(json.dumps(a.describe())))
    assert again.describe() == a.describe() and {k: again.describe()[k] for k in extras} == extras
    assert again.signature == a.signature == Problem("t", *PAPER, truth="gaussian", samples=100).signature
    assert without_strokes(a.describe()) == Problem("t", *PAPER, truth="gaussian", samples=100).describe()


def test_evaluate_run_and_metrics_table():
    problem = Problem("t", *PAPER, truth="gaussian", samples=300)
    ref = compute_reference(problem)
    model = seeded_map("mGradNet-M", 0, dim=2, width=16, modules=4)
    result = train(model, *PAPER, TrainConfig(steps=150, batch_size=500))
    run = evaluate_run(problem, ref, model, result, "mGradNet-M", {"width": 16})
    assert run.result is result and run.signature == problem.signature and run.origin == ""
    with torch.no_grad():
        np.testing.assert_allclose(run.mapped, model(torch.as_tensor(ref.points, dtype=torch.float32)).double(),
                                   rtol=1e-5, atol=1e-6)
    assert run.metrics["mse"] == pytest.approx(((run.mapped - ref.mapped) ** 2).mean(), rel=1e-4)
    assert run.metrics["min_eigenvalue"] > 0 and run.metrics["steps"] == 150
    baseline = seeded_map("MLP baseline", 0, dim=2, width=16, depth=2)
    result_b = train(baseline, *PAPER, TrainConfig(steps=5, batch_size=100))
    run_b = evaluate_run(problem, ref, baseline, result_b, "MLP baseline", {})
    run.number, run_b.number = 1, 2
    table = metrics_table([run, run_b])
    assert list(table.columns) == ["map", *METRIC_COLUMNS.values()]
    assert sorted(TRUTH_METRICS + CHECK_METRICS) == sorted(METRIC_COLUMNS)     # the page's two tables show every metric
    checks = metrics_table([run], metrics=CHECK_METRICS)
    assert list(checks.columns) == ["map", *(METRIC_COLUMNS[k] for k in CHECK_METRICS)]
    assert table["map"].tolist() == ["#1 mGradNet-M (150 steps)", "#2 MLP baseline (5 steps)"]
    assert table["steps"].tolist() == [150, 5]
    # The CSV's table carries each run's settings and the problem it was trained on.
    detailed = metrics_table([run], details=True)
    assert json.loads(detailed["settings"][0]) == {"width": 16}
    loaded = evaluate_run(problem, ref, model, None, "mGradNet-M", {"problem": problem.describe()}, origin="m.safetensors")
    loaded.number = 3
    assert loaded.label == "#3 mGradNet-M (from m.safetensors)" and "training_time" not in loaded.metrics
    assert json.loads(metrics_table([loaded], details=True)["trained on"][0])["ground_truth"] == "gaussian"


def test_a_run_whose_later_phase_was_not_kept_says_which_map_is_shown():
    # A continuation that lands further from the target is dropped; the steps it trained count (the progress bar's),
    # and the label says which map is shown (a review read "1,100 steps" for a map of 500).
    from gradnet_core.objectives import SinkhornLoss
    problem = Problem("t", *PAPER, truth="gaussian", samples=300)
    ref = compute_reference(problem)
    model = seeded_map("mGradNet-M", 0, dim=2, width=16, modules=4)
    wild = TrainConfig(steps=5, batch_size=200, lr=50.0, objective=SinkhornLoss())     # a step far off the target
    result = train(model, *PAPER, TrainConfig(steps=150, batch_size=500, fallback=wild, fallback_from=0.0,
                                              fallback_start="trained"))
    assert result.fallback == "" and result.steps == 150 and result.history["step"][-1] == 155
    run = evaluate_run(problem, ref, result.map, result, "mGradNet-M", {"objective_label": "Monge–Ampère loss"})
    run.number = 1
    assert run.metrics["steps"] == 155
    assert run.label == "#1 mGradNet-M (Monge–Ampère loss, 155 steps, the 150-step map kept)"


def test_a_fallback_on_the_same_loss_is_labelled_as_training_on_and_another_loss_by_its_name():
    """A review read "Monge–Ampère loss (Adam) → Monge–Ampère loss" as a switch to the loss the run had; the form's
    objective is read back from either label."""
    from dataclasses import replace as replaced
    problem = Problem("t", *PAPER, truth="gaussian", samples=300)
    ref = compute_reference(problem)
    model = seeded_map("mGradNet-M", 0, dim=2, width=16, modules=4)
    result = train(model, *PAPER, TrainConfig(steps=20, batch_size=200))
    labels = {}
    for longer, fallback in ((True, "Monge–Ampère loss"), (False, "Sinkhorn divergence")):
        run = evaluate_run(problem, ref, result.map, replaced(result, fallback=fallback, longer=longer),
                           "mGradNet-M", {"objective_label": "Monge–Ampère loss (Adam)"})
        run.number = 1
        labels[longer] = run.label
        assert picked_objective(run.settings["objective_label"]) == "Monge–Ampère loss (Adam)"
    assert labels[True] == "#1 mGradNet-M (Monge–Ampère loss (Adam), trained on, 20 steps)"
    assert labels[False] == "#1 mGradNet-M (Monge–Ampère loss (Adam) → Sinkhorn divergence, 20 steps)"


def test_gaussian_rows_round_trip():
    row = {"mean_x": 1.0, "mean_y": -1.0, "std_x": 2.0, "std_y": 0.5, "corr": -0.3}
    g = gaussian_from_row(row)
    np.testing.assert_allclose(g.cov.numpy(), [[4.0, -0.3], [-0.3, 0.25]], rtol=1e-6)
    assert gaussian_row(g) == pytest.approx(row, rel=1e-5)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_from_row({**row, "corr": 1.0})
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_from_row({**row, "std_x": 0.0})


def test_mixture_table_validation_and_normalisation():
    mixture, note = mixture_from_table([_row(0.5, -2, 0), _row(0.5, 2, 0)], "source")
    assert note is None and mixture.weights.tolist() == pytest.approx([0.5, 0.5])
    mixture, note = mixture_from_table([_row(1.0, -2, 0), _row(3.0, 2, 0)], "target")
    assert mixture.weights.tolist() == pytest.approx([0.25, 0.75]) and "summed to 4" in note
    # Weights at the float limit sum to infinity: still split evenly, and said so without "they sum to 0".
    mixture, note = mixture_from_table([_row(1e308, -2, 0), _row(1e308, 2, 0)], "target")
    assert mixture.weights.tolist() == pytest.approx([0.5, 0.5]) and "more than the largest float" in note
    with pytest.raises(ValueError, match="no rows"):
        mixture_from_table([], "source")
    # The page's tables hold text (its number cells lost keystrokes): read as typed, "1e3" and ".9" included.
    typed = [{"weight": ".9", "mean_x": "-2", "mean_y": " 0 ", "std_x": "5e-1", "std_y": "0.5", "corr": "0"},
             {"weight": "1e3", "mean_x": "2", "mean_y": "0", "std_x": "0.5", "std_y": "0.5", "corr": "-0.25"},
             {"weight": None, "mean_x": "", "mean_y": None, "std_x": None, "std_y": None, "corr": None}]
    mixture, note = mixture_from_table(typed, "source")
    assert mixture.weights.tolist() == pytest.approx([0.9 / 1000.9, 1000 / 1000.9])
    np.testing.assert_allclose(mixture.means.numpy(), [[-2.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(mixture.covs[0].numpy(), [[0.25, 0.0], [0.0, 0.25]], atol=1e-7)
    # the row just added and still empty is left out, and said so
    assert note == ("Source row 3 is empty and left out until filled in. The source weights summed to 1001; they "
                    "were divided by that so they sum to 1.")
    # a decimal comma reads as a point (much of Europe types "-2,5"); a cell with more than one separator does not
    mixture, _ = mixture_from_table([{**typed[0], "mean_x": "-2,5", "std_x": "0,25"}], "target")
    assert mixture.means[0].tolist() == pytest.approx([-2.5, 0.0]) and float(mixture.covs[0, 0, 0]) == pytest.approx(
        0.0625)
    # "1,000" reads two ways (a review meant a thousand and got 1): refused, saying both; "0,125" reads one way
    with pytest.raises(ValueError, match=r'Source row 1: mean x "1,000" could be 1 with a decimal comma or 1000 with a '
                                         r'thousands separator; type it with a point, or without the comma\.'):
        mixture_from_table([{**typed[0], "mean_x": " 1,000"}], "source")
    with pytest.raises(ValueError, match=r'"-12,500" could be -12.5 with a decimal comma or -12500'):
        mixture_from_table([{**typed[0], "mean_y": "-12,500"}], "source")
    mixture, _ = mixture_from_table([{**typed[0], "std_x": "0,125", "mean_x": "1,5"}], "target")
    assert float(mixture.covs[0, 0, 0]) == pytest.approx(0.125 ** 2) and float(mixture.means[0, 0]) == 1.5
    with pytest.raises(ValueError, match=r'Target row 1: weight is empty or not a finite number \("1,5,0"\)\.'):
        mixture_from_table([{**typed[0], "weight": "1,5,0"}], "target")
    with pytest.raises(ValueError, match=r'Target row 1: weight is empty or not a finite number \("1.000,5"\)\.'):
        mixture_from_table([{**typed[0], "weight": "1.000,5"}], "target")
    with pytest.raises(ValueError, match="no rows"):
        mixture_from_table([typed[2]], "source")
    with pytest.raises(ValueError, match="row 2: the weight must not be negative"):
        mixture_from_table([_row(1.0, 0, 0), _row(-0.5, 1, 1)], "Source")
    with pytest.raises(ValueError, match="row 1: mean y is empty"):
        mixture_from_table([{**_row(1.0, 0, 0), "mean_y": None}], "source")
    with pytest.raises(ValueError, match="row 1: std x is empty"):
        mixture_from_table([{**_row(1.0, 0, 0), "std_x": math.nan}], "source")
    with pytest.raises(ValueError, match="row 1: std y is a standard deviation, so it must be positive"):
        mixture_from_table([{**_row(1.0, 0, 0), "std_y": -0.5}], "source")
    with pytest.raises(ValueError, match="Source row 2: std x is 1e-09, almost a point mass"):
        mixture_from_table([_row(1.0, -2, 0), {**_row(1.0, 2, 0), "std_x": 1e-9}], "source")
    # an ordinary std beside means far apart: the message names the means, and moving them in as a remedy
    far = [_row(0.5, 1e6, 0), _row(0.5, 0, 0)]
    with pytest.raises(ValueError, match=r"Target row 1: std x is 0.5, almost a point mass beside means up to 1e\+06 "
                                         r"apart; no network can match its density. Use at least 1e\+03 in each of "
                                         r"the 4 cells that narrow, or bring the means within 500 of each other\."):
        mixture_from_table(far, "target")
    # a wide std typed beside ordinary ones (a review typed 1e6): the message names the wide cell, whose fix is one
    # edit, not only the narrow ones, which the review fixed one by one as the message said, each moving it on; and
    # each way it offers clears the error whole
    wide = [{**_row(0.5, 0, 0), "std_x": 1e6}, _row(0.5, 2, 0)]
    with pytest.raises(ValueError, match=r"Target row 1: std y is 0.5, almost a point mass beside its std x of 1e\+06; "
                                         r"no network can match its density. Use at least 1e\+03 in each of the 3 "
                                         r"cells that narrow, or make its std x at most 500\."):
        mixture_from_table(wide, "target")
    with pytest.raises(ValueError, match=r"Target row 2: std x is 0.5, almost a point mass beside row 1's std x of "
                                         r"1e\+06; .* or make row 1's std x and row 1's std y at most 500\."):
        mixture_from_table([{**wide[0], "std_y": 1e3}, wide[1]], "target")
    cases = {"one wide": wide, "two rows wide": [wide[0], {**_row(0.5, 2, 0), "std_y": 1e6}],
             "wide and far": [{**_row(0.5, 0, 0), "std_x": 1e6}, _row(0.5, 2e6, 0)],
             "far": [_row(0.5, 1e6, 0), _row(0.5, 0, 0)]}
    for name, rows in cases.items():
        with pytest.raises(ValueError) as err:
            mixture_from_table(rows, "target")
        said = str(err.value)
        limit = float(re.search(r"at most ([\d.e+]+)", said).group(1)) if "at most" in said else math.inf
        fixed = [{**r, "std_x": min(r["std_x"], limit), "std_y": min(r["std_y"], limit)} for r in rows]
        if "bring the means within" in said:
            within = float(re.search(r"means within ([\d.e+]+)", said).group(1))
            fixed = [{**r, "mean_x": min(r["mean_x"], within), "mean_y": min(r["mean_y"], within)} for r in fixed]
        mixture_from_table(fixed, "target")                            # the other way offered clears it, whole
    with pytest.raises(ValueError, match="row 1: std y is 1e-06, almost a point mass"):
        mixture_from_table([{**_row(1.0, 0, 0), "std_x": 1e-5, "std_y": 1e-6}], "target")
    # a component over 1e6 standard deviations from the origin: float32 rounds its shape away (a review's means of 1e7
    # beside standard deviations of 0.5 gave maps 38-40 % off); 1e6 itself is taken
    mixture_from_table([_row(1.0, 1e6, 0, sx=1.0, sy=1.0)], "source")
    with pytest.raises(ValueError, match=r"Source row 2: the mean \(0, -3e\+06\) lies 1e\+07 standard deviations "
                                         r"\(0.3\) from the origin.*Subtract the same offset"):
        mixture_from_table([_row(0.5, 0, -3e6, sx=100.0, sy=100.0), _row(0.5, 0, -3e6, sx=3.0, sy=0.3)], "source")
    with pytest.raises(ValueError, match="all zero"):
        mixture_from_table([_row(0.0, 0, 0)], "source")
    with pytest.raises(ValueError, match="^Target: covariance of component 1"):
        mixture_from_table([_row(1.0, 0, 0, r=1.0)], "target")


def test_the_store_setting_takes_a_folder_and_explains_a_path_it_cannot_use(tmp_path, monkeypatch):
    # GRADNET_STORE set to a folder ended every transport page in "sqlite3.OperationalError: unable to open
    # database file" (seen while testing the app).
    import studio.store

    monkeypatch.setattr(studio.store, "_STORE", None)
    monkeypatch.setenv("GRADNET_STORE", str(tmp_path))
    assert studio.store.store().path == tmp_path / "runs.sqlite" and (tmp_path / "runs.sqlite").is_file()
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("GRADNET_STORE", str(blocked / "runs.sqlite"))        # its folder is a file
    with pytest.raises(RuntimeError, match="cannot keep runs in .*set GRADNET_STORE to a file in a folder"):
        studio.store.store()


def test_run_store_expires_caps_each_token_and_keeps_tokens_apart(tmp_path, monkeypatch):
    from studio.store import RunStore

    problem = Problem("t", *PAPER, truth="gaussian", samples=200)
    ref = compute_reference(problem)
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    result = train(model, *PAPER, TrainConfig(steps=20, batch_size=200))
    runs = []
    for number in (1, 2, 3):
        run = evaluate_run(problem, ref, model, result, "mGradNet-M", {"problem": problem.describe()})
        run.number = number
        runs.append(run)
    from studio.store import _run_bytes

    one_run = len(_run_bytes(runs[0], problem.describe()))
    kept = RunStore(tmp_path / "runs.sqlite", hours=1.0, max_bytes=int(2.5 * one_run))
    for run in runs:
        kept.save("token-a" * 4, "gaussians", run, problem.describe())
    loaded = kept.load("token-a" * 4, "gaussians")
    assert all(on == json.loads(json.dumps(problem.describe())) for _, on in loaded)
    back = [run for run, _ in loaded]
    assert [r.number for r in back] == [2, 3]                          # the cap dropped the oldest
    assert back[0].result.history["loss"] == pytest.approx(result.history["loss"])
    assert back[0].result.verdict.ok == result.verdict.ok and back[0].metrics["mse"] == pytest.approx(runs[1].metrics["mse"])
    assert kept.load("token-b" * 4, "gaussians") == [] and kept.load("token-a" * 4, "mixtures") == []
    kept.remove("token-a" * 4, "gaussians", 2)
    assert [r.number for r, _ in kept.load("token-a" * 4, "gaussians")] == [3]
    later = time.time() + 2 * 3600
    monkeypatch.setattr("studio.store.time.time", lambda: later)
    assert kept.load("token-a" * 4, "gaussians") == [] and kept.size("token-a" * 4) == 0   # expired, purged


def test_run_store_lists_runs_as_last_saved_and_touched(tmp_path, monkeypatch):
    # A page's runs on earlier inputs are kept beside its current ones; runs brought back are touched, and a reload
    # takes the problem of the run saved (or touched) last as the page's.
    from studio.store import RunStore

    problem = Problem("t", *PAPER, truth="gaussian", samples=200)
    ref = compute_reference(problem)
    model = seeded_map("mGradNet-M", 0, dim=2, width=8, modules=2)
    kept = RunStore(tmp_path / "runs.sqlite")
    clock = iter(range(1000, 2000))
    monkeypatch.setattr("studio.store.time.time", lambda: float(next(clock)))
    for number in (1, 2, 3):
        run = evaluate_run(problem, ref, model, None, "mGradNet-M", {})
        run.number = number
        kept.save("token-a" * 4, "gaussians", run, problem.describe())
    assert [r.number for r, _ in kept.load("token-a" * 4, "gaussians")] == [1, 2, 3]
    kept.touch("token-a" * 4, "gaussians", [1, 2])
    kept.touch("token-b" * 4, "gaussians", [3])                           # another token's touch changes nothing
    assert [r.number for r, _ in kept.load("token-a" * 4, "gaussians")] == [3, 1, 2]


def test_a_closed_sessions_page_states_are_released_after_the_reconnect_time(monkeypatch):
    import weakref

    from studio import state as page_states

    class Job:
        abandoned = False

        def abandon(self):
            self.abandoned = True

    kept, gone = page_states.PageState(runs=["run"]), page_states.PageState(runs=["run"], cache={"figure": 1})
    gone.job = job = Job()
    monkeypatch.setattr(page_states, "_SESSIONS", {"open": [weakref.ref(kept)], "closed": [weakref.ref(gone)]})
    monkeypatch.setattr(page_states, "_GONE_SINCE", {})
    active = {"open"}.__contains__
    assert page_states.release_closed(active, after=120.0, now=1000.0) == 0        # gone from now on
    assert page_states.release_closed(active, after=120.0, now=1119.0) == 0 and gone.runs == ["run"]
    assert page_states.release_closed(active, after=120.0, now=1121.0) == 1
    assert gone.runs == [] and gone.cache == {} and gone.job is None and job.abandoned
    assert kept.runs == ["run"] and list(page_states._SESSIONS) == ["open"]

    # A session back within the time is kept.
    monkeypatch.setattr(page_states, "_SESSIONS", {"blip": [weakref.ref(gone)]})
    gone.runs = ["run"]
    assert page_states.release_closed(active, after=120.0, now=0.0) == 0
    assert page_states.release_closed(lambda session: True, after=120.0, now=60.0) == 0
    assert page_states.release_closed(active, after=120.0, now=150.0) == 0 and gone.runs == ["run"]


def test_a_runs_objective_is_named_as_the_menus_name_it():
    # A digits run was labelled "monge-ampere loss (l1)" beside menus saying "Monge–Ampère loss (Adam)".
    from gradnet_core.objectives import MongeAmpere, ReverseKL, SinkhornLoss
    from studio.panels import _describe

    assert _describe(MongeAmpere()) == "Monge–Ampère loss"
    assert _describe(MongeAmpere(residual="l2")) == "Monge–Ampère loss, l2 residual"
    assert _describe(ReverseKL()) == "KL divergence" and _describe(SinkhornLoss()) == "Sinkhorn divergence"
