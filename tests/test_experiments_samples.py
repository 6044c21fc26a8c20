"""The sample-loss experiments' commands on tiny budgets: gmm (2 -> 3 mixture) and generate (digits from
N(0, I_64)); plus the exact W2 and the digit grid they are built on."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradnet_core.experiments.__main__ import main
from gradnet_core.experiments.generate import digit_grid_png, load_digit_vectors
from gradnet_core.experiments.gmm import gmm_pair
from gradnet_core.metrics import exact_w2


def _run(capsys, *argv: str) -> dict:
    assert main([*argv, "--json", "--no-progress", "--threads", "1"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_exact_w2_of_a_translation_and_of_a_permutation():
    x = np.random.default_rng(0).normal(size=(50, 2))
    assert exact_w2(x, x + np.array([3.0, 4.0])) == pytest.approx(5.0, rel=1e-9)
    assert exact_w2(x, x[::-1]) == pytest.approx(0.0, abs=1e-6)


def test_problem_is_the_icassp_example_mixtures():
    source, target = gmm_pair()
    np.testing.assert_allclose(source.means.numpy(), [[-2, 0], [2, 0]])
    np.testing.assert_allclose(target.means.numpy(), [[-3, 1], [0, -1], [3, 1]])


def test_gmm_command_on_a_tiny_budget(tmp_path, capsys):
    summary = _run(capsys, "gmm", "--out", str(tmp_path), "--steps", "3", "--n-test", "60",
                   "--networks", "M-MGN", "ICNN")
    assert {Path(p).name for p in summary["files"]} == {"gmm.csv", "loss.csv", "gmm.png", "summary.json"}
    rows = _rows(tmp_path / "gmm.csv")
    trained = [r for r in rows if r["loss"] != "-"]
    assert [(r["loss"], r["network"]) for r in trained] == [
        (loss, net) for loss in ("gaussian-kl", "wasserstein", "sinkhorn") for net in ("M-MGN", "ICNN")]
    for r in trained:
        assert r["stopped"] == "completed" and float(r["w2_to_target"]) > 0
        assert float(r["min_eigenvalue"]) >= 0                       # monotone
    ot_row = next(r for r in rows if r["network"].startswith("discrete OT"))
    assert float(ot_row["w2_to_target"]) == pytest.approx(0.0, abs=1e-6)   # a permutation of the target
    with Image.open(tmp_path / "gmm.png") as image:
        assert image.size[0] > 300 and image.size[1] > 300


def test_generate_command_on_a_tiny_budget(tmp_path, capsys):
    summary = _run(capsys, "generate", "--out", str(tmp_path), "--steps", "2", "--n-test", "40",
                   "--networks", "C-MGN")
    assert {Path(p).name for p in summary["files"]} == {"generate.csv", "loss.csv", "digits.png", "summary.json"}
    rows = {r["network"]: r for r in _rows(tmp_path / "generate.csv")}
    assert set(rows) == {"C-MGN", "real digits (floor)", "Gaussian fit (moments only)"}
    assert rows["C-MGN"]["steps"] == "2"
    assert all(np.isfinite(float(r["w2_to_test"])) for r in rows.values())
    # real held-out digits are nearer the training digits than anything a 2-step map generates
    assert float(rows["real digits (floor)"]["nn_to_train"]) < float(rows["C-MGN"]["nn_to_train"])


def test_bad_arguments_are_reported(capsys):
    assert main(["gmm", "--n-test", "1", "--no-progress"]) == 2
    assert "n_test" in capsys.readouterr().err


def test_digits_and_their_grid(tmp_path):
    digits = load_digit_vectors()
    assert digits.shape == (1797, 64) and digits.min() == 0.0 and digits.max() == 1.0
    path = digit_grid_png(tmp_path / "grid.png", [("a", digits[:13]), ("b", digits[13:20] * 2 - 0.5)], columns=5)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (22 + 3 * 34 - 2 + 14, 14 + 2 * (5 * 34 - 2 + 14))
