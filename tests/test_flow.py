"""The constrained Wasserstein gradient flow (gradnet_core.flow, docs/method.md §3) and energy_distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from gradnet_core import (ConstrainedFlow, Gaussian, GaussianMixture, ImageDensity, MGradNetC, MGradNetM, MLPMap,
                          TrainConfig, train)
from gradnet_core.flow import entropic_score, log_concave_target, pushforward_score, sinkhorn_plan
from gradnet_core.ground_truth import gaussian_map
from gradnet_core.metrics import energy_distance, map_mse
from gradnet_core.networks import GradientNetwork

SOURCE = ([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]])       # the paper's Gaussian


def paper_pair() -> tuple[Gaussian, Gaussian]:
    return Gaussian(*SOURCE), Gaussian([0.0, 0.0], np.eye(2))


def flow_config(inner_steps: int = 40, report_seconds: float = 0.25, **flow) -> TrainConfig:
    """``ConstrainedFlow(**flow)`` with ``inner_steps`` Adam steps (lr 0.02) per outer step."""
    objective = ConstrainedFlow(**{"outer_steps": 10, "tau": 0.4, **flow})
    return TrainConfig(steps=objective.outer_steps * inner_steps, lr=0.02, batch_size=500, device="cpu",
                       report_seconds=report_seconds, objective=objective)


def seeded(cls, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return cls(**kwargs)


class AffineGradient(GradientNetwork):
    """T(x) = A x + b with A symmetric positive definite: the gradient of a convex quadratic."""

    def __init__(self, A: Tensor, b: Tensor):
        super().__init__(A.shape[0])
        self.A = torch.nn.Parameter(A, requires_grad=False)
        self.b = torch.nn.Parameter(b, requires_grad=False)

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        out = x @ self.A + self.b
        if not jacobian:
            return out, None
        return out, self.A[self._rows, self._cols].expand(x.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# the score of the pushforward
# ---------------------------------------------------------------------------------------------
def test_exact_score_of_affine_pushforward_is_the_gaussian_score():
    # T#N(m, S) = N(A m + b, A S A) for T(x) = A x + b: its score is -(A S A)^{-1} (y - A m - b).
    source = Gaussian(torch.tensor(SOURCE[0], dtype=torch.float64), torch.tensor(SOURCE[1], dtype=torch.float64))
    A = torch.tensor([[2.0, 0.5], [0.5, 0.8]], dtype=torch.float64)
    b = torch.tensor([0.3, -1.2], dtype=torch.float64)
    T = AffineGradient(A, b)
    x = source.sample(200, torch.Generator().manual_seed(1))
    y, score, log_rho = pushforward_score(T, source, x)
    pushed = Gaussian(A @ source.mean + b, A @ source.cov @ A)
    torch.testing.assert_close(y, x @ A + b)
    torch.testing.assert_close(score, pushed.score(y), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(log_rho, pushed.log_prob(y), rtol=1e-10, atol=1e-10)


def _inverse(model: GradientNetwork, y: Tensor, x0: Tensor) -> Tensor:
    """T^{-1}(y) by Newton's method (T is a monotone bijection here: strict convexity)."""
    x = x0.clone()
    for _ in range(50):
        out, jac = model(x), model.jacobian(x)
        x = x - torch.linalg.solve(jac, (out - y).unsqueeze(-1)).squeeze(-1)
    return x


def test_exact_score_matches_finite_differences_of_the_pushforward_log_density():
    # log rho(y) = log p(T^{-1} y) - log det J(T^{-1} y), evaluated by inverting T numerically, then
    # differentiated by central differences: an independent check of J^{-1} grad_x[log p - log det J].
    torch.manual_seed(3)
    model = MGradNetC(2, width=8, depth=3, strict=True).double()
    with torch.no_grad():
        model.V.copy_(torch.eye(2, dtype=torch.float64))
    source = Gaussian(torch.tensor(SOURCE[0], dtype=torch.float64), torch.tensor(SOURCE[1], dtype=torch.float64))
    x = source.sample(5, torch.Generator().manual_seed(4))
    with torch.no_grad():
        y, score, log_rho = pushforward_score(model, source, x)

        def log_density(points: Tensor) -> Tensor:
            xi = _inverse(model, points, x)
            return source.log_prob(xi) - model.map_and_logdet(xi)[1]

        torch.testing.assert_close(log_density(y), log_rho, rtol=0, atol=1e-10)
        h = 1e-5
        fd = torch.stack([(log_density(y + h * e) - log_density(y - h * e)) / (2 * h)
                          for e in torch.eye(2, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(score, fd, rtol=1e-5, atol=1e-6)


def test_entropic_score_estimates_a_gaussian_score():
    g = torch.Generator().manual_seed(0)
    target = Gaussian([0.0, 0.0], np.eye(2))
    y, reference = target.sample(1000, g).double(), target.sample(1000, g).double()
    est = entropic_score(y, reference)
    true = -y
    slope = ((est * true).sum() / (true * true).sum()).item()
    assert 0.8 < slope < 1.25                      # 1.00 ± 0.11 over seeds at m = 1000
    assert est.shape == y.shape and est.dtype == y.dtype


@pytest.mark.parametrize("outlier", [0.0, 20.0])  # kernel domain; a far point forces the log domain
def test_sinkhorn_plan_has_uniform_marginals(outlier):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(60, 2, generator=g, dtype=torch.float64), torch.randn(80, 2, generator=g, dtype=torch.float64)
    a[0] += outlier
    eps = 0.5
    plan = sinkhorn_plan(torch.cdist(a, b).square(), eps, max_iter=20000, tol=1e-9)
    torch.testing.assert_close(plan.sum(0), torch.full((80,), 1 / 80, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(plan.sum(1), torch.full((60,), 1 / 60, dtype=torch.float64), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant, overrides", [
    ("explicit", {}),
    ("implicit", {"tau": 1.0, "outer_steps": 6}),
])
def test_flow_converges_to_the_gaussian_map(variant, overrides):
    source, target = paper_pair()
    model = seeded(MGradNetM, dim=2, width=16, modules=4)
    result = train(model, source, target, flow_config(variant=variant, **overrides))
    assert result.stopped == "completed", result.message
    x = source.sample(2000, torch.Generator().manual_seed(7))
    with torch.no_grad():
        mse = map_mse(model(x), gaussian_map(source, target)(x))
    assert mse <= 1e-2
    kl = result.history["kl"]
    assert kl[-1] < 0.05 < kl[0]                   # KL(T_n#p || q) falls from the start


def test_a_non_log_concave_target_is_refused():
    source, _ = paper_pair()
    mixture = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2), np.eye(2)])
    image = ImageDensity(np.ones((4, 4)), bandwidth=1e-2)
    for target in (mixture, image):
        with pytest.raises(ValueError, match="log-concave"):
            train(MGradNetM(2), source, target, flow_config())


def test_a_one_component_mixture_target_is_a_gaussian():
    mixture = GaussianMixture([1.0], [[1.0, 2.0]], [[[2.0, 0.3], [0.3, 1.0]]])
    gaussian = log_concave_target(mixture)
    assert isinstance(gaussian, Gaussian)
    torch.testing.assert_close(gaussian.cov, mixture.covs[0])


def test_exact_score_needs_a_gradient_network():
    source, target = paper_pair()
    with pytest.raises(ValueError, match="mGradNet"):
        train(MLPMap(2, width=8, depth=1), source, target, flow_config())


def test_progress_reports_every_outer_step():
    source, target = paper_pair()
    reports = []
    cfg = flow_config(outer_steps=4, inner_steps=5, report_seconds=1e9)
    result = train(seeded(MGradNetM, dim=2, width=8, modules=2), source, target, cfg, callback=reports.append)
    assert [(p.info["outer_step"], p.info["inner_step"]) for p in reports] == [(n, 5) for n in range(1, 5)]
    assert all(p.objective == "constrained-flow" and p.info["outer_total"] == 4 and p.info["inner_total"] == 5
               and p.total == 20 for p in reports)
    assert [p.step for p in reports] == [5, 10, 15, 20]
    assert all(math.isfinite(p.info["kl"]) for p in reports)
    assert result.history["outer_step"] == [n for n in range(1, 5) for _ in range(5)]
    assert result.history["step"] == list(range(1, 21))
    assert len(result.history["kl"]) == 5


def test_direct_training_reports_no_outer_steps():
    source, target = paper_pair()
    reports = []
    train(seeded(MGradNetM, dim=2, width=8, modules=2), source, target, TrainConfig(steps=3, device="cpu"),
          callback=reports.append)
    assert reports and all(p.objective == "monge-ampere" and "outer_step" not in p.info for p in reports)


def test_callback_stops_the_flow():
    source, target = paper_pair()
    model = seeded(MGradNetM, dim=2, width=8, modules=2)
    cfg = flow_config(outer_steps=5, inner_steps=4, report_seconds=1e9)
    result = train(model, source, target, cfg, callback=lambda p: p.info["outer_step"] == 2)
    assert result.stopped == "stopped"
    assert result.steps == 8 and len(result.history["loss"]) == 8
    assert "outer step 2 of 5" in result.message


class NaNScoreGaussian(Gaussian):
    def _score(self, x: Tensor) -> Tensor:
        return torch.full_like(x, math.nan)


def test_divergence_restores_the_last_good_model():
    source, target = paper_pair()
    broken = NaNScoreGaussian(target.mean, target.cov)
    model = seeded(MGradNetM, dim=2, width=8, modules=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, source, broken, flow_config(outer_steps=2, inner_steps=3))
    assert result.stopped == "diverged" and result.steps == 0
    assert "outer step 1" in result.message
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


@pytest.mark.parametrize("field, value", [
    ("variant", "semi-implicit"), ("score", "kde"), ("outer_steps", 0), ("outer_steps", 2.5), ("tau", 0.0),
])
def test_bad_flow_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ConstrainedFlow(**{field: value})


def test_steps_must_split_into_outer_steps():
    source, target = paper_pair()
    config = TrainConfig(steps=25, device="cpu", objective=ConstrainedFlow(outer_steps=10))
    with pytest.raises(ValueError, match="multiple of 10"):
        train(MGradNetM(2, width=8, modules=2), source, target, config)


# ---------------------------------------------------------------------------------------------
# energy distance
# ---------------------------------------------------------------------------------------------
def test_energy_distance_matches_the_formula_and_is_chunk_independent():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(70, 3)), rng.normal(size=(50, 3)) + 0.4

    def mean_dist(u, v):
        return np.linalg.norm(u[:, None] - v[None], axis=-1).mean()

    expected = 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)
    assert energy_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert energy_distance(a, b, chunk_elements=7) == pytest.approx(expected, rel=1e-12)
    assert energy_distance([[0.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(10.0)   # 2 * distance
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_refuses_mismatched_samples():
    with pytest.raises(ValueError, match="same d"):
        energy_distance(np.zeros((3, 2)), np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
def test_flow_experiment_runs_from_the_command_line_parser(tmp_path):
    from gradnet_core.experiments.__main__ import build_parser
    from gradnet_core.experiments.flow import run

    args = build_parser().parse_args(["flow", "--out", str(tmp_path), "--seeds", "1", "--budget", "0.2",
                                      "--n-eval", "200", "--n-reference", "100",
                                      "--methods", "flow, implicit", "Adam, KL"])
    result = run(args)
    assert [r["method"] for r in result.rows] == ["flow, implicit", "Adam, KL"]
    assert all(r["energy_distance"] is not None and r["energy_distance"] >= 0 for r in result.rows)
    assert {p.name for p in result.files} >= {"flow_runs.csv", "flow_table.md", "flow_maps.png"}
