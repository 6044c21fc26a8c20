"""The experiments' command line on tiny budgets, and the geometry they measure.

Each subcommand must run, write its CSV, PNG and HTML, and print a JSON summary as the last line of
stdout. The pair counts of Fig. 1 are checked exactly on hand-made segments and maps.
"""

import csv
import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradnet_core.experiments.__main__ import main
from gradnet_core.experiments.digits_table import _pair_summary, digit_pair_images, reference_noise
from gradnet_core.experiments.gaussian2d import crossing_share, order_reversal_share, segment_crossings
from gradnet_core.experiments.highdim import highdim_problem
from gradnet_core.experiments.paper import PAPER_TABLE_I, paper_table_median, paper_table_value
from gradnet_core.files import load_map


def _run(capsys, *argv: str) -> dict:
    assert main([*argv, "--json", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_files(summary: dict, folder: Path, names: list[str]) -> None:
    written = {Path(p).name for p in summary["files"]}
    for name in names:
        assert name in written
        assert (folder / name).stat().st_size > 0
    for png in folder.glob("*.png"):
        with Image.open(png) as image:
            assert image.size[0] > 100 and image.size[1] > 100
    for html in folder.glob("*.html"):
        # Offline: the page loads the plotly.js written beside it.
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in html.read_text(encoding="utf-8")
    if any(folder.glob("*.html")):
        assert (folder / "plotly.min.js").read_text(encoding="utf-8").lstrip().startswith("/**")


# --- geometry of Fig. 1 -------------------------------------------------------------------------

def test_segment_crossings_on_hand_made_segments():
    # An X crosses; parallel, touching-at-an-endpoint and far-apart segments do not.
    starts = np.array([[0.0, 0.0], [0.0, 2.0], [3.0, 0.0], [3.0, 1.0], [2.0, 2.0], [10.0, 10.0]])
    ends = np.array([[2.0, 2.0], [2.0, 0.0], [4.0, 0.0], [4.0, 1.0], [5.0, 5.0], [11.0, 11.0]])
    crossing, pairs = segment_crossings(starts, ends)
    assert pairs == 15
    # only the X: segment 4 starts where segment 0 ends (touching), 2 and 3 are parallel
    assert crossing == 1
    assert crossing_share(starts, ends) == pytest.approx(1 / 15)


def test_segment_crossings_counts_every_crossing_pair():
    # Three segments through a common interior region, pairwise crossing: a star of 3 lines.
    angles = np.array([0.0, np.pi / 3, 2 * np.pi / 3])
    starts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    crossing, pairs = segment_crossings(starts, -starts + 0.01)
    assert (crossing, pairs) == (3, 3)
    # a monotone pair whose segments still cross (the exact OT map can have these)
    crossing, _ = segment_crossings(np.array([[0.0, 0.0], [1.0, -1.0]]), np.array([[4.0, 0.0], [6.0, 1.0]]))
    assert crossing == 1
    assert order_reversal_share(np.array([[0.0, 0.0], [1.0, -1.0]]), np.array([[4.0, 0.0], [6.0, 1.0]])) == 0.0


def test_segment_crossings_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        segment_crossings(np.zeros((3, 3)), np.zeros((3, 3)))


def test_order_reversal_share_is_zero_for_monotone_and_one_for_point_reflection(rng):
    x = rng.normal(size=(60, 2))
    spd = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert order_reversal_share(x, x @ spd + 3.0) == 0.0
    assert order_reversal_share(x, -x) == 1.0
    # a 90-degree rotation is orthogonal: <dx, R dx> = 0 for every pair, not a reversal
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    assert order_reversal_share(x, x @ rot.T) == 0.0


def test_highdim_problem_is_seeded_and_valid():
    a, _ = highdim_problem(5, seed=1234)
    b, target = highdim_problem(5, seed=1234)
    c, _ = highdim_problem(5, seed=1)
    assert np.allclose(a.cov.numpy(), b.cov.numpy()) and not np.allclose(a.cov.numpy(), c.cov.numpy())
    assert np.allclose(target.cov.numpy(), np.eye(5)) and np.allclose(target.mean.numpy(), 0.0)
    assert np.linalg.eigvalsh(a.cov.numpy()).min() > 0


def test_paper_table_values():
    assert paper_table_value(0, 4) == 0.00145
    assert math.isnan(paper_table_value(7, 1))
    assert paper_table_median() == pytest.approx(np.median(PAPER_TABLE_I))


# --- the command line ---------------------------------------------------------------------------

def test_the_cli_trains_on_one_torch_thread_unless_told(tmp_path, capsys):
    # One thread per training job (torch's default is every core: 2x slower here, 10x on a busy machine).
    torch.set_num_threads(2)
    summary = _run(capsys, "gaussian2d", "--steps", "2", "--n-test", "40", "--n-paths", "5", "--out", str(tmp_path))
    assert summary["machine"]["torch_threads"] == 1
    torch.set_num_threads(1)
    assert main(["gaussian2d", "--threads", "2", "--steps", "2", "--n-test", "40", "--n-paths", "5", "--no-progress",
                 "--json", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["machine"]["torch_threads"] == 2


def test_gaussian2d_cli(tmp_path, capsys):
    out = tmp_path / "g"
    summary = _run(capsys, "gaussian2d", "--steps", "5", "--n-test", "80", "--n-paths", "25", "--out", str(out))
    assert summary["experiment"] == "gaussian2d"
    _check_files(summary, out, ["gaussian2d.csv", "loss.csv", "snapshots.png", "animation.html", "summary.json"])
    rows = {r["model"]: r for r in _rows(out / "gaussian2d.csv")}
    assert set(rows) == {"MLP baseline", "mGradNet-C", "mGradNet-M", "whitening (exact)"}
    # Monotone maps never reverse the order of a pair, whatever their training.
    for name in ("mGradNet-C", "mGradNet-M", "whitening (exact)"):
        assert float(rows[name]["order_reversal_share"]) == 0.0
    assert float(rows["whitening (exact)"]["mse"]) == 0.0
    assert summary["pairs"] == 25 * 24 // 2
    with Image.open(out / "snapshots.png") as image:
        assert image.size[0] > image.size[1]          # 5 columns of t, 4 rows of models



def test_gaussian2d_seeds_give_one_row_each_and_a_median(tmp_path, capsys):
    summary = _run(capsys, "gaussian2d", "--steps", "4", "--seeds", "3", "--n-test", "60", "--n-paths", "10",
                   "--out", str(tmp_path))
    rows = _rows(tmp_path / "gaussian2d.csv")
    m = [r for r in rows if r["model"] == "mGradNet-M"]
    assert [r["seed"] for r in m] == ["0", "1", "2"]
    mses = sorted(float(r["mse"]) for r in m)
    assert len(set(mses)) == 3                                     # the seeds differ
    assert summary["mse"]["mGradNet-M"] == pytest.approx(mses[1])
    assert summary["mse_range"]["mGradNet-M"] == pytest.approx([mses[0], mses[2]])
    assert summary["seeds"] == 3 and summary["stopped"]["mGradNet-M"] == ["completed"] * 3

def test_highdim_cli_runs_rank_deficient_networks_the_authors_way(tmp_path, capsys):
    out = tmp_path / "h"
    # d = 33 > width 32: the authors' mGradNet-C has a singular Jacobian; ours adds eps I + V^T V. As with their
    # slogdet, its log |det| is rounding noise: finite on one CPU (AMD EPYC, training goes on), -inf on another (an
    # Intel Xeon's LU meets an exact zero pivot: training stops at step 1 and says why). The row gives the rank.
    summary = _run(capsys, "highdim", "--dims", "2", "33", "--steps", "3", "--n-test", "50", "--out", str(out))
    _check_files(summary, out, ["highdim.csv", "mse.png", "mse.html", "summary.json"])
    rows = _rows(out / "highdim.csv")
    assert len(rows) == 2 * 2 * 2
    by_key = {(r["dim"], r["setting"], r["model"]): r for r in rows}
    singular = by_key[("33", "authors", "mGradNet-C")]
    assert int(singular["max_rank"]) == 32
    if singular["stopped"] == "completed":
        assert float(singular["final_loss"]) > 100      # the residual of a log |det| at rounding level (about -190)
    else:
        assert singular["stopped"] == "diverged" and "The Jacobian became singular (log det = -inf)" in singular["message"]
    for model in ("mGradNet-C", "mGradNet-M"):
        assert by_key[("33", "ours", model)]["stopped"] == "completed"
        assert summary["mse"][f"{model} ours"]["33"] > 0
        assert by_key[("2", "authors", model)]["stopped"] == "completed"


def test_highdim_seeds_give_one_row_each_and_a_median(tmp_path, capsys):
    summary = _run(capsys, "highdim", "--dims", "2", "3", "--steps", "3", "--seeds", "3", "1", "--settings", "ours",
                   "--models", "mGradNet-M", "--n-test", "20", "--out", str(tmp_path))
    rows = _rows(tmp_path / "highdim.csv")
    assert [(r["dim"], r["seed"]) for r in rows] == [("2", "0"), ("2", "1"), ("2", "2"), ("3", "0")]
    mses = sorted(float(r["mse"]) for r in rows if r["dim"] == "2")
    assert len(set(mses)) == 3                      # the seeds differ
    assert summary["mse"]["mGradNet-M ours"]["2"] == pytest.approx(mses[1])
    assert summary["completed"]["mGradNet-M ours"] == {"2": "3/3", "3": "1/1"}
    assert summary["seeds"] == {"2": 3, "3": 1}
    medians = _rows(tmp_path / "medians.csv")
    assert float(medians[0]["min_mse"]) == pytest.approx(mses[0])


def test_highdim_ours_decays_the_learning_rate_and_adds_the_strict_term(tmp_path, capsys):
    _run(capsys, "highdim", "--dims", "2", "--steps", "2", "--n-test", "20", "--out", str(tmp_path))
    for r in _rows(tmp_path / "highdim.csv"):
        ours = r["setting"] == "ours"
        assert (r["strict"], r["lr_schedule"]) == (("True", "cosine") if ours else ("False", "constant"))


def test_highdim_steps_per_dimension(tmp_path, capsys):
    summary = _run(capsys, "highdim", "--dims", "2", "3", "--steps", "2", "4", "--settings", "ours",
                   "--n-test", "20", "--out", str(tmp_path))
    assert summary["steps"] == {"2": 2, "3": 4}
    assert main(["highdim", "--dims", "2", "3", "--steps", "1", "2", "3", "--no-progress",
                 "--out", str(tmp_path)]) == 2
    assert "one per dimension" in capsys.readouterr().err


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format), gzip-compressed: magic 0x0000 08 ndim, big-endian sizes, uint8 data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _tiny_mnist(folder: Path) -> None:
    """Five 28 x 28 images: a ring labelled 0, bars labelled 1 (two of each needed as targets)."""
    yy, xx = np.mgrid[0:28, 0:28]
    ring = (np.abs(np.hypot(yy - 14, xx - 14) - 7) < 2) * 255
    bar = ((np.abs(xx - 14) < 2) & (yy > 4) & (yy < 24)) * 255
    slanted = ((np.abs(xx - 14 - (yy - 14) // 3) < 2) & (yy > 4) & (yy < 24)) * 255
    images = np.stack([bar, ring, slanted, ring[::-1], bar])
    labels = np.array([1, 0, 1, 0, 1])
    _write_idx(folder / "train-images-idx3-ubyte.gz", images)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels)


def test_digits_table_cli_with_tiny_mnist(tmp_path, capsys):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    _tiny_mnist(mnist)
    out = tmp_path / "t"
    # one run per map (a 3-step map is flagged, and the preset would train it back and again: four runs)
    summary = _run(capsys, "digits-table", "--digits", "0", "1", "--steps", "3", "--n-test", "60",
                   "--mnist", str(mnist), "--out", str(out), "--seeds", "2", "--draws", "2",
                   "--set", "digits.attempts=1", "--set", "digits.direction=forward", "--set", "digits.model.modules=2")
    assert summary["settings"] == ["digits.attempts=1", "digits.direction=forward", "digits.model.modules=2"]
    assert summary["train_config"]["attempts"] == 1 and summary["train_config"]["direction"] == "forward"
    assert summary["model"]["modules"] == 2
    _check_files(summary, out, ["digits_table.csv", "digits_runs.csv", "heatmap.png", "heatmap.html", "summary.json"])
    rows = _rows(out / "digits_table.csv")
    runs = _rows(out / "digits_runs.csv")
    assert len(runs) == 4 * 2 * 2 and {(r["seed"], r["draw"]) for r in runs} == {("0", "0"), ("0", "1"), ("1", "0"),
                                                                                  ("1", "1")}
    for r in rows:       # a pair's MSE is the median of its runs, with their range beside it
        mine = sorted(float(x["mse"]) for x in runs if (x["source"], x["target"]) == (r["source"], r["target"]))
        assert float(r["mse"]) == pytest.approx(np.median(mine))
        assert (float(r["mse_min"]), float(r["mse_max"])) == pytest.approx((mine[0], mine[-1]))
    assert [(r["source"], r["target"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert all(float(r["mse"]) > 0 and float(r["min_eigenvalue"]) >= 0 for r in rows)
    assert float(rows[1]["paper_mse"]) == paper_table_value(0, 1)
    assert summary["pairs"] == 4 and "MNIST" in summary["images"]
    assert all(float(r["reference_noise"]) > 0 for r in rows)
    assert summary["median_reference_noise"] == pytest.approx(np.median([float(r["reference_noise"]) for r in rows]))


def test_reference_noise_of_the_barycentric_projection_shrinks_with_the_samples():
    # The projection averages target samples, so its noise falls roughly like 1/n.
    source, target = digit_pair_images(0, 4)
    coarse = reference_noise(source, target, 1e-4, n=100)
    fine = reference_noise(source, target, 1e-4, n=800)
    assert 0 < fine < coarse / 3


def test_digits_table_cli_bundled_pairs_subset(tmp_path, capsys):
    summary = _run(capsys, "digits-table", "--digits", "0", "1", "--pairs", "1-0", "--steps", "2", "--n-test", "40",
                   "--out", str(tmp_path), "--seeds", "1", "--draws", "1")
    assert list(summary["mse"]) == ["1->0"] and "bundled" in summary["images"]
    assert main(["digits-table", "--digits", "0", "1", "--pairs", "0-7", "--no-progress",
                 "--out", str(tmp_path)]) == 2
    assert "outside --digits" in capsys.readouterr().err
    assert main(["digits-table", "--pairs", "0-1", "--set", "digits.nope=1", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "'nope' is not a training setting" in capsys.readouterr().err


def test_morph_cli_saves_map_and_gif(tmp_path, capsys):
    out = tmp_path / "m"
    saved = tmp_path / "maps" / "zero_to_one.safetensors"
    summary = _run(capsys, "morph", "--source", "0", "--target", "1", "--steps", "3", "--n-test", "50",
                   "--out", str(out), "--save", str(saved))
    _check_files(summary, out, ["morph.csv", "morph.gif", "snapshots.png", "animation.html", "summary.json"])
    with Image.open(out / "morph.gif") as gif:
        assert gif.n_frames > 2
    model = load_map(saved)
    assert model.dim == 2 and summary["saved_map"] == str(saved)
    assert summary["mse"] > 0 and summary["min_eigenvalue"] >= 0


def test_morph_cli_reads_an_image_path(tmp_path, capsys):
    yy, xx = np.mgrid[0:40, 0:40]
    Image.fromarray(((np.abs(np.hypot(yy - 20, xx - 20) - 10) < 3) * 255).astype(np.uint8)).save(tmp_path / "o.png")
    summary = _run(capsys, "morph", "--source", str(tmp_path / "o.png"), "--target", "7", "--steps", "2",
                   "--n-test", "30", "--out", str(tmp_path / "m"))
    assert summary["target"] == "7" and summary["stopped"] == "completed"


def test_morph_cli_refuses_a_missing_file(tmp_path, capsys):
    assert main(["morph", "--source", str(tmp_path / "missing.png"), "--no-progress", "--out", str(tmp_path)]) == 2
    assert "neither a digit" in capsys.readouterr().err


def test_morph_cli_refuses_an_unwritable_save_path_before_training(tmp_path, capsys, monkeypatch):
    import gradnet_core.experiments.morph as morph

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the map could not be saved")

    monkeypatch.setattr(morph, "train_digit_pair", no_training)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["morph", "--steps", "2", "--no-progress", "--out", str(tmp_path),
                 "--save", str(blocker / "map.safetensors")]) == 2
    assert "cannot write the map to" in capsys.readouterr().err


def test_a_pair_summary_takes_medians_over_the_runs_that_have_a_number():
    # A map the fallback trained on samples has no KL in its verdict (None): the first run here, so the key must
    # come from the other runs, and its median is over them.
    runs = [{"source": 2, "target": 4, "seed": s, "draw": 0, "mse": m, "paper_mse": 1e-3, "verdict": "ok",
             "verdict_kl": kl, "train_s": t} for s, m, kl, t in ((0, 3e-3, None, 20.0), (1, 1e-3, 0.2, 3.0),
                                                               (2, 2e-3, 0.4, 4.0))]
    row = _pair_summary(runs)
    assert row["mse"] == 2e-3 and (row["mse_min"], row["mse_max"]) == (1e-3, 3e-3)
    assert row["verdict_kl"] == pytest.approx(0.3) and row["train_s"] == 4.0 and row["flagged"] == 0
    assert math.isnan(_pair_summary([{**r, "verdict_kl": None} for r in runs])["verdict_kl"])

