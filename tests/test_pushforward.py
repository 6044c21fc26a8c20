"""Exact pushforward densities: closed forms for affine maps, mass conservation, agreement with samples."""

import numpy as np
import pytest
import torch

from gradnet_core import Gaussian, GaussianMixture, ImageDensity, MGradNetC, MGradNetM, MLPMap, load_bundled
from gradnet_core.densities import covariance_2d
from gradnet_core.pushforward import (Grid, density_morph, density_on_grid, density_picture, grid_resolves,
                                      monge_ampere_field, morph_picture, pushforward_density, sampled_density_morph, total_variation,
                                      unresolved_frames)
from scipy.stats import norm

from helpers import random_parameters

def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


SOURCE = Gaussian(f64([0.3, -0.2]), f64([[0.5, 0.15], [0.15, 0.3]]))
C = torch.tensor([0.5, -1.0], dtype=torch.float64)


def affine_map() -> tuple[MGradNetC, torch.Tensor]:
    """An mGradNet-C with W = 0 and the strict term: T(x) = c + A x, A = eps I + V^T V; and A."""
    model = MGradNetC(2, width=4, depth=2, strict=True).double()
    with torch.no_grad():
        model.W.zero_()
        model.V.copy_(torch.tensor([[1.1, 0.3], [-0.4, 0.8]]))
        model.out_bias.copy_(C)
    return model, model._quadratic(torch.float64, torch.device("cpu")).detach()


def interpolant_gaussian(A: torch.Tensor, t: float, source: Gaussian = SOURCE) -> Gaussian:
    """The law of (1 - t) x + t (c + A x) for x ~ source: N(B m + t c, B S B), B = (1 - t) I + t A."""
    B = (1 - t) * torch.eye(2, dtype=torch.float64) + t * A
    return Gaussian(B @ source.mean + t * C, B @ source.cov @ B.T)


#: A Gaussian line 0.013 wide across the box (std 1 along it, correlation 0.9 with a std of 0.03): a reviewer's
#: slider settings drew it as a few dashes on cells 0.15 wide.
THIN = Gaussian(f64([0.3, -0.2]), torch.as_tensor(covariance_2d(1.0, 0.03, 0.9), dtype=torch.float64))


def _column_masses(values: np.ndarray, grid: Grid) -> np.ndarray:
    return values.sum(axis=0) * grid.cell_area


def test_a_density_narrower_than_a_cell_is_drawn_whole_from_carried_points():
    """At the cell centres the thin line's frames hold 0.3-1.7 of its mass; the picture's histogram frames hold it
    all, each column its share of the closed-form interpolant's x-marginal to 0.01. A round density keeps its exact
    values."""
    model, A = affine_map()
    grid = Grid((-4.5, 5.0, -6.0, 3.5), 64)
    exact = density_morph(model, THIN, grid, frames=5)
    assert np.abs(exact.masses - 1).max() > 0.3                     # the values at the centres miss it
    picture = morph_picture(model, THIN, grid, frames=5, generator=torch.Generator().manual_seed(0))
    assert picture.samples == 200_000                             # every frame a histogram
    np.testing.assert_allclose(picture.masses, 1.0, atol=0.01)
    edges = grid.bounds[0] + np.arange(grid.resolution + 1) * (grid.bounds[1] - grid.bounds[0]) / grid.resolution
    for t, frame, wrong in zip(picture.times, picture.densities, exact.densities):
        law = interpolant_gaussian(A, t, THIN)
        expected = np.diff(norm.cdf(edges, law.mean[0].item(), law.cov[0, 0].sqrt().item()))
        assert np.abs(_column_masses(frame, grid) - expected).max() < 0.01
        assert np.abs(_column_masses(wrong, grid) - expected).max() > 0.03
    values, sampled = density_picture(THIN, grid, generator=torch.Generator().manual_seed(1))
    assert sampled and abs(values.sum() * grid.cell_area - 1) < 0.01
    # a near-vertical line (the sliders' other end) whose cell-centre values sum to its mass on some grids by chance,
    # their errors cancelling row by row (a mass check passed it on 6 grids in 60): each grid still draws it sampled
    steep = Gaussian(f64([3.0, 0.0]), torch.as_tensor(covariance_2d(0.05, 3.0, -0.95), dtype=torch.float64))
    for shift in np.linspace(0.0, 0.18, 7):
        steep_grid = Grid((-6 + shift, 12 + shift, -9 + shift, 9 + shift), 100)
        assert not grid_resolves(steep, steep_grid)
        assert density_picture(steep, steep_grid, samples=20_000, generator=torch.Generator().manual_seed(2))[1]

    round_picture = morph_picture(model, SOURCE, grid, frames=5)
    assert round_picture.samples == 0
    np.testing.assert_array_equal(round_picture.densities, density_morph(model, SOURCE, grid, frames=5).densities)
    values, sampled = density_picture(SOURCE, grid)
    assert not sampled and np.array_equal(values, density_on_grid(SOURCE, grid))


def test_a_sampled_morph_holds_the_share_of_points_in_the_box_and_frames_must_match():
    model, _ = affine_map()
    grid = Grid((-1.0, 1.0, -1.0, 1.0), 20)                        # leaves out much of the mass
    sampled = sampled_density_morph(model, SOURCE, grid, frames=3, samples=50_000,
                                    generator=torch.Generator().manual_seed(0))
    exact = density_morph(model, SOURCE, grid, frames=3)
    np.testing.assert_allclose(sampled.masses, exact.masses, atol=0.01)
    assert (sampled.masses < 0.95).all() and not len(unresolved_frames(exact, sampled))
    with pytest.raises(ValueError, match="same grid and frames"):
        unresolved_frames(exact, sampled_density_morph(model, SOURCE, grid, frames=4, samples=1000))


def test_pushforward_of_an_affine_map_is_the_closed_form_gaussian():
    model, A = affine_map()
    grid = Grid((-2.5, 3.0, -3.5, 1.0), 60)
    exact = density_on_grid(interpolant_gaussian(A, 1.0), grid)
    np.testing.assert_allclose(pushforward_density(model, SOURCE, grid), exact, rtol=1e-8, atol=1e-12)


def test_every_frame_of_the_morph_is_the_interpolant_density():
    model, A = affine_map()
    grid = Grid((-2.5, 3.0, -3.5, 1.5), 50)
    morph = density_morph(model, SOURCE, grid, frames=7)
    np.testing.assert_allclose(morph.times, np.linspace(0, 1, 7))
    for t, frame in zip(morph.times, morph.densities):
        np.testing.assert_allclose(frame, density_on_grid(interpolant_gaussian(A, t), grid), rtol=1e-8, atol=1e-12)
    assert (morph.unsolved == 0).all()


def test_nonlinear_pushforward_keeps_the_mass_and_matches_mapped_samples():
    """For a random nonlinear mGradNet, T#p integrates to 1 and agrees with a histogram of T(x), x ~ p."""
    model = random_parameters(MGradNetM(2, width=6, modules=3, strict=True), 0.4, seed=2)
    with torch.no_grad():
        mapped = model(SOURCE.sample(400_000, torch.Generator().manual_seed(0))).numpy()
    lo, hi = np.quantile(mapped, 0.0005, axis=0), np.quantile(mapped, 0.9995, axis=0)
    grid = Grid((lo[0] - 0.5, hi[0] + 0.5, lo[1] - 0.5, hi[1] + 0.5), 120)
    pushed = pushforward_density(model, SOURCE, grid)
    assert pushed.sum() * grid.cell_area == pytest.approx(1.0, abs=2e-3)
    # Coarse cells of 10 x 10 grid cells: the exact density's average against the sample frequency.
    coarse = pushed.reshape(12, 10, 12, 10).mean(axis=(1, 3)) * grid.cell_area * 100
    counts, _, _ = np.histogram2d(mapped[:, 1], mapped[:, 0], bins=12,
                                  range=[grid.bounds[2:], grid.bounds[:2]])
    frequency = counts / len(mapped)
    assert np.abs(coarse - frequency).max() < 2e-3
    assert total_variation(coarse / (grid.cell_area * 100), frequency / (grid.cell_area * 100),
                           Grid(grid.bounds, 12)) < 0.01


def test_mixture_pushforward_by_an_mgradnet_c_keeps_the_mass():
    source = GaussianMixture([0.3, 0.7], [[-1.0, 0.0], [1.0, 0.5]], [np.eye(2) * 0.2, np.eye(2) * 0.3])
    model = random_parameters(MGradNetC(2, width=8, depth=3, strict=True), 0.2, seed=1)
    with torch.no_grad():
        mapped = model(source.sample(100_000, torch.Generator().manual_seed(0)).double()).numpy()
    lo, hi = mapped.min(axis=0) - 1.0, mapped.max(axis=0) + 1.0
    grid = Grid((lo[0], hi[0], lo[1], hi[1]), 200)
    assert pushforward_density(model, source, grid).sum() * grid.cell_area == pytest.approx(1.0, abs=1e-2)


def test_monge_ampere_residual_vanishes_for_the_exact_map_only():
    model, A = affine_map()
    grid = Grid((-1.5, 2.0, -2.0, 1.5), 40)
    exact = monge_ampere_field(model, SOURCE, interpolant_gaussian(A, 1.0), grid)
    inside = np.isfinite(exact)
    assert 0.2 < inside.mean() < 1.0                       # NaN off the source's support, values on it
    np.testing.assert_allclose(exact[inside], 0.0, atol=1e-9)
    wrong = monge_ampere_field(model, SOURCE, Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]), grid)
    assert np.abs(wrong[inside]).max() > 0.5


def test_total_variation_is_zero_for_equal_and_one_for_disjoint_densities():
    grid = Grid((-8.0, 8.0, -8.0, 8.0), 160)
    p = density_on_grid(Gaussian([-4.0, 0.0], np.eye(2) * 0.2), grid)
    q = density_on_grid(Gaussian([4.0, 0.0], np.eye(2) * 0.2), grid)
    assert total_variation(p, p, grid) == 0.0
    assert total_variation(p, q, grid) == pytest.approx(1.0, abs=1e-3)


def test_digit_morph_keeps_the_mass_in_every_frame():
    source = ImageDensity(load_bundled(0), bandwidth=1e-3)
    model = random_parameters(MGradNetM(2, width=8, modules=2), 0.2, seed=4).float()
    grid = Grid((-0.6, 1.6, -0.6, 1.6), 80)
    morph = density_morph(model, source, grid, frames=5)
    masses = morph.densities.sum(axis=(1, 2)) * grid.cell_area
    np.testing.assert_allclose(masses, 1.0, atol=5e-3)
    assert (morph.densities >= 0).all()


def test_maps_without_an_inverse_and_bad_grids_are_refused():
    with pytest.raises(ValueError, match="not monotone"):
        density_morph(MLPMap(2), SOURCE, Grid((0, 1, 0, 1), 10))
    with pytest.raises(ValueError, match="frames"):
        density_morph(MGradNetM(2), SOURCE, Grid((0, 1, 0, 1), 10), frames=1)
    with pytest.raises(ValueError, match="bounds"):
        Grid((1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="resolution"):
        Grid((0.0, 1.0, 0.0, 1.0), 0)
    with pytest.raises(ValueError, match="2-D"):
        density_morph(MGradNetM(3), Gaussian([0.0] * 3, np.eye(3)), Grid((0, 1, 0, 1), 10))
