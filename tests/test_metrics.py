"""Metrics: exact values on hand-made maps; monotonicity and Monge–Ampère residual of known maps."""

import numpy as np
import pytest
import torch

from gradnet_core import Gaussian, MGradNetM, MLPMap, TransportMap
from gradnet_core.metrics import (cosine_similarity, evaluate_map, l2_uvp, map_mse, monge_ampere_residual,
                                  monotonicity)


class Affine(TransportMap):
    """T(x) = x A^T + b, with the Jacobian A (symmetric when A is)."""

    monotone = True

    def __init__(self, A, b):
        super().__init__(len(b))
        self.A = torch.nn.Parameter(torch.as_tensor(A, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.as_tensor(b, dtype=torch.float64))

    def forward(self, x):
        return x @ self.A.T + self.b


def test_map_mse_and_l2_uvp_values():
    pred = np.array([[0.0, 0.0], [1.0, 1.0]])
    true = np.array([[0.0, 1.0], [1.0, 3.0]])
    assert map_mse(pred, true) == pytest.approx((1 + 4) / 4)
    assert l2_uvp(pred, true, target_variance=2.0) == pytest.approx(100 * (1 + 4) / 2 / 2)


def test_cosine_similarity():
    x = np.zeros((3, 2))
    assert cosine_similarity(x, x + [1.0, 0.0], x + [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine_similarity(x, x + [1.0, 0.0], x + [0.0, 1.0]) == pytest.approx(0.0)
    assert cosine_similarity(x, x - [1.0, 0.0], x + [3.0, 0.0]) == pytest.approx(-1.0)


def test_monotonicity_of_known_maps():
    sym = Affine([[2.0, 0.5], [0.5, 1.0]], [0.0, 0.0])
    result = monotonicity(sym, torch.randn(5, 2, dtype=torch.float64))
    assert result["min_eigenvalue"] == pytest.approx(np.linalg.eigvalsh([[2.0, 0.5], [0.5, 1.0]]).min())
    assert result["max_asymmetry"] == pytest.approx(0.0, abs=1e-12)
    rot = Affine([[0.0, -1.0], [1.0, 0.0]], [0.0, 0.0])
    result = monotonicity(rot, torch.randn(5, 2, dtype=torch.float64))
    assert result["max_asymmetry"] == pytest.approx(np.sqrt(8.0))


def test_monge_ampere_residual_vanishes_for_the_exact_map():
    source, target = Gaussian(np.zeros(1), np.eye(1)), Gaussian(np.ones(1), 4 * np.eye(1))
    x = torch.randn(100, 1, dtype=torch.float64)
    assert monge_ampere_residual(Affine([[2.0]], [1.0]), source, target, x) == pytest.approx(0.0, abs=1e-12)
    assert monge_ampere_residual(Affine([[1.0]], [1.0]), source, target, x) > 0.1


def test_evaluate_map_reports_every_metric():
    source, target = Gaussian(np.zeros(2), np.eye(2)), Gaussian(np.zeros(2), np.eye(2))
    x = torch.randn(50, 2)
    for model in (MGradNetM(2), MLPMap(2, width=16, depth=1)):
        metrics = evaluate_map(model, source, target, x, x + 1.0)
        assert set(metrics) == {"mse", "l2_uvp", "cosine", "ma_residual", "min_eigenvalue", "max_asymmetry"}
        assert all(np.isfinite(v) for v in metrics.values())
    assert evaluate_map(MGradNetM(2), source, target, x, x)["max_asymmetry"] < 1e-5
