"""Ground truth: Gaussian OT map against POT and its defining properties; barycentric projection."""

import numpy as np
import ot
import pytest
import torch

from gradnet_core import Gaussian, GaussianMixture
from gradnet_core.ground_truth import barycentric_projection, gaussian_map


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.3 * np.eye(d)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_gaussian_map_agrees_with_pot(rng, d):
    ms, mt = rng.normal(size=d), rng.normal(size=d)
    cs, ct = random_spd(rng, d), random_spd(rng, d)
    T = gaussian_map(Gaussian(ms, cs), Gaussian(mt, ct))
    A, b = ot.gaussian.bures_wasserstein_mapping(ms, mt, cs, ct)
    x = rng.normal(size=(20, d))
    np.testing.assert_allclose(T(x), x @ A + b, rtol=1e-7, atol=1e-9)


def test_gaussian_map_pushes_source_onto_target(rng):
    cs, ct = random_spd(rng, 3), random_spd(rng, 3)
    T = gaussian_map(Gaussian(np.zeros(3), cs), Gaussian(np.ones(3), ct))
    A = T.A.numpy()
    np.testing.assert_allclose(A @ cs @ A.T, ct, rtol=1e-9, atol=1e-10)      # pushforward covariance
    np.testing.assert_allclose(A, A.T, atol=1e-12)                              # gradient of a convex function
    assert np.linalg.eigvalsh(A).min() > 0


def test_whitening_for_standard_normal_target():
    cov = np.array([[1.0, 0.7], [0.7, 1.0]])
    T = gaussian_map(Gaussian(np.array([1.0, -1.0]), cov), Gaussian(np.zeros(2), np.eye(2)))
    w, v = np.linalg.eigh(cov)
    inv_sqrt = v @ np.diag(w ** -0.5) @ v.T
    x = np.array([[0.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(T(x), (x - [1.0, -1.0]) @ inv_sqrt.T, atol=1e-12)


def test_gaussian_map_works_on_tensors():
    T = gaussian_map(Gaussian([0.0], [[1.0]]), Gaussian([1.0], [[4.0]]))
    x = torch.tensor([[0.0], [1.0], [-2.0]])
    torch.testing.assert_close(T(x), 2 * x + 1)


def test_gaussian_map_refuses_other_densities():
    mix = GaussianMixture([1.0], [[0.0, 0.0]], [np.eye(2)])
    with pytest.raises(ValueError, match="two Gaussian"):
        gaussian_map(mix, Gaussian(np.zeros(2), np.eye(2)))


def test_barycentric_projection_of_a_permuted_copy_is_the_permutation(rng):
    xs = rng.normal(size=(60, 2))
    perm = rng.permutation(60)
    # a small rigid shift keeps the identity pairing optimal
    xt = (xs + np.array([0.01, -0.02]))[perm]
    mapped = barycentric_projection(xs, xt).numpy()
    np.testing.assert_allclose(mapped, xs + np.array([0.01, -0.02]), atol=1e-12)


def test_barycentric_projection_one_dimensional_is_sorting(rng):
    xs, xt = rng.normal(size=(50, 1)), rng.normal(size=(50, 1)) * 3 + 1
    mapped = barycentric_projection(xs, xt).numpy()[:, 0]
    np.testing.assert_allclose(np.sort(mapped), np.sort(xt[:, 0]))
    np.testing.assert_array_equal(np.argsort(mapped), np.argsort(xs[:, 0]))


def test_barycentric_projection_averages_when_mass_splits():
    xs = np.array([[0.0, 0.0]])
    xt = np.array([[1.0, 0.0], [-1.0, 2.0]])
    np.testing.assert_allclose(barycentric_projection(xs, xt).numpy(), [[0.0, 1.0]])


def test_barycentric_projection_guards_empty_rows():
    xs = np.array([[0.0, 0.0], [5.0, 5.0]])
    xt = np.array([[0.1, 0.0], [4.0, 4.0]])
    mapped = barycentric_projection(xs, xt, weights=[1.0, 0.0]).numpy()
    assert np.isfinite(mapped).all()
    np.testing.assert_allclose(mapped[1], [4.0, 4.0])


@pytest.mark.parametrize("xs, xt, fragment", [
    (np.zeros((3, 2)), np.zeros((3, 3)), "same d"),
    (np.zeros((0, 2)), np.zeros((3, 2)), "at least one"),
    (np.full((3, 2), np.nan), np.zeros((3, 2)), "finite"),
])
def test_barycentric_projection_refuses_bad_points(xs, xt, fragment):
    with pytest.raises(ValueError, match=fragment):
        barycentric_projection(xs, xt)
