"""Sample-only losses: Gaussian-moment KL == closed form, Sinkhorn divergence against POT and known values,
and training from target samples (each loss falls; train() dispatch and validation)."""

import math

import numpy as np
import ot
import pytest
import torch

from gradnet_core import (AdversarialW1, Gaussian, GaussianMomentKL, MGradNetM, MongeAmpere, SinkhornLoss,
                          TrainConfig, build_map, train)
from gradnet_core.objectives import SAMPLE_OBJECTIVES
from gradnet_core.metrics import energy_distance
from gradnet_core.sample_losses import (Critic, _epsilon_schedule, _sinkhorn_loop, _softmin, _squared_distances,
                                        entropic_ot, gaussian_kl, gaussian_moment_kl, gradient_penalty,
                                        sinkhorn_divergence)


def exact_moment_samples(mean, cov, n, seed=0):
    """n points whose sample mean and (unbiased) covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(n, len(mean), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / (n - 1))).T
    return torch.as_tensor(mean, dtype=torch.float64) + z @ torch.linalg.cholesky(
        torch.as_tensor(cov, dtype=torch.float64)).T


def test_gaussian_kl_equals_the_analytic_value():
    one = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # KL(N(0, 1) || N(1, 4)) = log 2 + (1 + 1) / 8 - 1/2
    value = gaussian_kl(one([0.0]), one([[1.0]]), one([1.0]), one([[4.0]]))
    assert value.item() == pytest.approx(math.log(2.0) + 0.25 - 0.5, rel=1e-12)
    g = torch.Generator().manual_seed(1)
    for d in (2, 5):
        a, b = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
        cov_p, cov_q = a @ a.T + 0.5 * torch.eye(d), b @ b.T + 0.5 * torch.eye(d)
        m_p, m_q = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
        ref = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m_p, cov_p),
                                                torch.distributions.MultivariateNormal(m_q, cov_q))
        assert gaussian_kl(m_p, cov_p, m_q, cov_q).item() == pytest.approx(ref.item(), rel=1e-10)


def test_gaussian_kl_of_a_covariance_that_is_not_positive_definite_is_nan():
    eye = torch.eye(2, dtype=torch.float64)
    bad = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    assert torch.isnan(gaussian_kl(torch.zeros(2, dtype=torch.float64), bad, torch.zeros(2, dtype=torch.float64), eye))


def test_divergence_restores_the_last_good_model():
    source, target = _problem(500)
    model = MGradNetM(2, width=4, modules=2)
    result = train(model, source, target, TrainConfig(objective=GaussianMomentKL(), steps=20, lr=1e9, device="cpu",
                                                      report_seconds=0.0))
    assert result.stopped == "diverged" and "diverged" in result.message
    assert result.steps == len(result.history["loss"]) < 20
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_moment_kl_of_gaussian_samples_is_the_closed_form():
    mean_p, cov_p = [1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]]
    mean_q, cov_q = [0.5, 2.0], [[2.0, -0.3], [-0.3, 0.5]]
    y = exact_moment_samples(mean_p, cov_p, 500)
    value = gaussian_moment_kl(y, torch.tensor(mean_q, dtype=torch.float64), torch.tensor(cov_q, dtype=torch.float64),
                               ridge=0.0)
    p = Gaussian(np.array(mean_p), np.array(cov_p))
    q = Gaussian(np.array(mean_q), np.array(cov_q))
    sq = np.linalg.inv(np.array(cov_q))
    diff = np.array(mean_q) - np.array(mean_p)
    closed = 0.5 * (np.trace(sq @ np.array(cov_p)) + diff @ sq @ diff - 2
                    + np.linalg.slogdet(np.array(cov_q))[1] - np.linalg.slogdet(np.array(cov_p))[1])
    assert value.item() == pytest.approx(closed, rel=1e-10)
    # ... and it is zero when the moments agree, whatever the shape of the distribution
    assert gaussian_moment_kl(y, p.mean, p.cov, ridge=0.0).item() == pytest.approx(0.0, abs=1e-10)
    assert q.dim == 2


def test_entropic_ot_matches_pot_and_sinkhorn_divergence_is_a_divergence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 2, generator=g, dtype=torch.float64)
    y = 0.5 * torch.randn(90, 2, generator=g, dtype=torch.float64) + 1.0
    eps = 0.1
    a, b = np.full(120, 1 / 120), np.full(90, 1 / 90)
    cost = ot.dist(x.numpy(), y.numpy())
    plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-12)
    primal = (plan * cost).sum() + eps * (plan * np.log(plan / np.outer(a, b))).sum()
    assert entropic_ot(x, y, eps, scaling=0.9, iterations=300).item() == pytest.approx(primal, rel=1e-6)
    assert entropic_ot(x, y, eps).item() == pytest.approx(primal, rel=0.03)      # the cheap defaults
    # zero up to the loop's convergence (the self terms run fewer updates than the cross terms)
    assert sinkhorn_divergence(x, x, eps).item() == pytest.approx(0.0, abs=1e-5)
    assert sinkhorn_divergence(x, y, eps).item() > 0
    # a translation by v costs exactly |v|^2 (the entropic terms cancel after debiasing)
    v = torch.tensor([0.6, -0.8], dtype=torch.float64)
    assert sinkhorn_divergence(x, x + v, 0.05).item() == pytest.approx(1.0, rel=1e-3)
    # for small epsilon it approaches the exact W2^2
    w2sq = ot.emd2(a, b, cost)
    assert sinkhorn_divergence(x, y, 1e-3, scaling=0.9).item() == pytest.approx(w2sq, rel=0.03)


def test_self_terms_at_the_last_eps_only_match_the_full_schedule():
    # sinkhorn_divergence runs OT_eps(x, x) and OT_eps(y, y) at the final eps only (their plans keep each point near
    # itself): the potentials, and so the divergence and its gradient, as with the whole epsilon-scaling schedule.
    g = torch.Generator().manual_seed(5)
    centres = torch.rand(6, 2, generator=g, dtype=torch.float64)                 # clustered, like digit strokes
    x = centres[torch.randint(6, (400,), generator=g)] + 0.03 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    y = centres[torch.randint(6, (300,), generator=g)] + 0.05 * torch.randn(300, 2, generator=g, dtype=torch.float64)
    a_log, b_log = torch.full((400,), -math.log(400.0), dtype=torch.float64), torch.full((300,), -math.log(300.0),
                                                                                           dtype=torch.float64)
    costs = [_squared_distances(p, q) for p, q in ((x, y), (y, x), (x, x), (y, y))]
    schedule = _epsilon_schedule(2.0, 1e-3, 0.7, 3)
    full = _sinkhorn_loop(*costs, a_log, b_log, schedule)
    short = _sinkhorn_loop(*costs, a_log, b_log, schedule, len(schedule) - 3)
    converged = _sinkhorn_loop(*costs, a_log, b_log, schedule + [1e-3] * 300)
    torch.testing.assert_close(short[:2], full[:2], rtol=0, atol=0)              # the cross terms as they were
    for name, s, f, c in zip(("f_aa", "g_bb"), short[2:], full[2:], converged[2:]):
        # potentials of size ~3e-3: the short run's within 1e-5 of the converged ones, as near as the full schedule's
        assert (s - c).abs().max() < min(1e-5, (f - c).abs().max()), name
    # with no update at all the self terms would be the first softmin's, further off
    assert (_softmin(1e-3, costs[2], a_log) - converged[2]).abs().max() > 1e-4


def test_sinkhorn_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = torch.randn(40, 2, generator=g, dtype=torch.float64) + 0.5
    direction = torch.randn(30, 2, generator=g, dtype=torch.float64)
    # epsilon large enough for the potentials to converge: the gradient is exact only at convergence
    f = lambda pts: sinkhorn_divergence(pts, y, 0.5, scaling=0.9, iterations=300)  # noqa: E731
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(xg), xg)
    h = 1e-5
    numeric = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-3)


def test_critic_and_gradient_penalty():
    critic = Critic(3, generator=torch.Generator().manual_seed(0))
    assert [m.out_features for m in critic.net if isinstance(m, torch.nn.Linear)] == [64, 64, 1]
    same = Critic(3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(16, 3)
    torch.testing.assert_close(critic(x), same(x))           # the generator fixes the initialisation
    penalty = gradient_penalty(critic, x, torch.randn(16, 3))
    assert penalty.item() >= 0 and penalty.requires_grad


def _problem(n=4000):
    source = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    target = torch.randn(n, 2, generator=torch.Generator().manual_seed(2)) @ torch.tensor([[0.6, 0.0], [0.3, 0.4]]) \
        + torch.tensor([2.0, 1.0])
    return source, target


@pytest.mark.parametrize("objective, steps, extra", [
    (GaussianMomentKL(), 120, {}),
    (SinkhornLoss(), 60, {"batch_size": 200}),
    (AdversarialW1(critic_lr=2e-3, critic_steps=2), 120, {"batch_size": 200, "lr": 3e-2}),
])
def test_each_sample_loss_falls_and_the_map_moves_towards_the_target(objective, steps, extra):
    source, target = _problem()
    model = MGradNetM(2, width=8, modules=2)
    with torch.no_grad():
        before = energy_distance(model(source[:500]), target[:500])
    config = TrainConfig(objective=objective, steps=steps, device="cpu", report_seconds=0.0, **{"lr": 2e-2, **extra})
    result = train(model, source, target.numpy(), config)          # samples as an array and a tensor
    assert result.stopped == "completed" and result.steps == steps
    assert len(result.history["loss"]) == steps
    with torch.no_grad():
        after = energy_distance(model(source[:500]), target[:500])
    assert after < 0.3 * before
    if objective.name != "wasserstein":       # the critic's W1 estimate first rises as the critic learns
        head, tail = np.mean(result.history["loss"][:5]), np.mean(result.history["loss"][-5:])
        assert tail < 0.3 * head


def test_sample_losses_accept_densities_and_report_progress():
    source = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    target = Gaussian([1.0, -1.0], [[0.5, 0.1], [0.1, 0.3]])
    reports = []
    model = build_map("ICNN", dim=2, width=16, depth=2)
    result = train(model, source, target, TrainConfig(objective=GaussianMomentKL(), steps=40, batch_size=256, lr=2e-2,
                                                      device="cpu", report_seconds=0.0),
                   callback=lambda p: reports.append(p) or p.step >= 10)
    assert result.stopped == "stopped" and result.steps == 10
    assert [p.step for p in reports] == list(range(1, 11)) and reports[-1].info == {}
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_train_validates_sample_inputs():
    model = MGradNetM(2, width=4, modules=2)
    good = np.random.default_rng(0).normal(size=(50, 2))
    source = Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="need only samples.*gaussian-kl"):
        train(model, source, good, TrainConfig(objective=MongeAmpere(), steps=1))
    with pytest.raises(ValueError, match="3-dimensional"):
        train(model, source, np.zeros((50, 3)), TrainConfig(objective=SinkhornLoss(), steps=1))
    with pytest.raises(ValueError, match="NaN"):
        train(model, source, np.full((50, 2), np.nan), TrainConfig(objective=SinkhornLoss(), steps=1))
    with pytest.raises(ValueError, match="at least 2"):
        train(model, good[:1], good, TrainConfig(objective=SinkhornLoss(), steps=1))
    for cls, field, value in ((AdversarialW1, "critic_steps", 0), (SinkhornLoss, "epsilon", -1.0),
                              (AdversarialW1, "critic_lr", 0.0)):
        with pytest.raises(ValueError, match=field):
            cls(**{field: value})
    assert set(SAMPLE_OBJECTIVES) == {"gaussian-kl", "wasserstein", "sinkhorn"}
