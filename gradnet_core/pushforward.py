"""What a monotone map does to a density, exactly, on a grid: T#p, the density morph, the Monge–Ampère residual.

For T = grad(u) with u strictly convex, T is invertible and the change of variables gives the
pushforward density exactly (docs/method.md §2.7):

    (T#p)(y) = p(x) / det J_T(x),  x = T^-1(y).

McCann's interpolant T_t(x) = (1 - t) x + t T(x) is the gradient of (1 - t)|x|^2/2 + t u(x), so it is a
monotone map too, with Jacobian (1 - t) I + t J_T: the density at every time t of the morph follows the
same way. The preimages are found by Newton (``TransportMap.solve_inverse``), each time t starting
from the solution at the time before (t = 0 is the identity), so each solve takes a few steps.
A grid point whose preimage does not converge (it lies outside the range of T, possible at t = 1 for
maps with a bounded range) gets density 0 and is counted.

Values at cell centres miss a density narrower than a cell: a Gaussian line 0.016 wide on cells of 0.18 showed
as a few bright dashes, its frames holding 35-365 % of the mass. ``sampled_density_morph`` draws the same frames as
each cell's share of many source points carried along x_t, which holds such a density whole but is noisy (two
histograms of 200 000 points of a round Gaussian 5 cells wide differ by a total variation of 0.1).
``unresolved_frames`` tells the frames whose cell-centre values lose or invent mass, and ``grid_resolves`` whether a
density's values at the centres match their averages over four points in each cell (a mass check alone passed a
slanted line on one grid in ten, its row-by-row errors cancelling in the sum). ``morph_picture`` keeps the exact frames
where the grid resolves the source, the target and every frame's mass, and draws every frame from carried points
otherwise (frame by frame, a thin line's pictures flickered between histograms and dashes); ``density_picture`` does
the same for one density.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from .densities import Density
from .networks import InverseSolution, TransportMap, check_positive_int, evaluation_rows, in_chunks

__all__ = ["Grid", "DensityMorph", "density_on_grid", "density_morph", "sampled_density_morph", "sampled_density",
           "unresolved_frames", "grid_resolves", "morph_picture", "density_picture", "pushforward_density", "monge_ampere_field",
           "total_variation"]

#: Newton steps per frame of a morph: the start (the previous frame's preimage) is close, so a
#: point still unsolved after this many lies outside the range rather than far away.
FRAME_ITERATIONS = 30
#: Source points behind a sampled morph: about 2 % sampling noise in a cell holding 1/400 of the mass.
MORPH_SAMPLES = 200_000
#: Source points carried along to check that the grid resolves a frame: its share in the box to about 0.4 %.
CHECK_SAMPLES = 20_000
#: How far a frame's mass on the grid (its Riemann sum) may stray from the share of sampled points in the box before
#: its cell-centre values are taken as unresolved: a Gaussian sampled at cells twice its width sums to 1.4 %.
MASS_TOLERANCE = 0.05
#: How far, in total variation, a density's values at the cell centres may stray from their averages over four points
#: in each cell before the grid is taken not to resolve it: 0.02 for a round Gaussian a cell wide, 0.05 at half a
#: cell, 0.13 at a third, 0.5-0.9 for the thin lines of the Gaussians page's slider ends.
CELL_TOLERANCE = 0.1
#: Points per chunk when a density is evaluated on the CPU: a 10 000 x 219-pixel image KDE in one pass
#: ran 2-4x slower than in chunks that stay in cache.
DENSITY_ROWS = 1024


@dataclass(frozen=True)
class Grid:
    """A regular ``resolution`` x ``resolution`` grid of cell centres over ``bounds`` (x0, x1, y0, y1).

    Values on it are ``(resolution, resolution)`` arrays indexed [row, column] = [y, x], y up: the layout
    of a heatmap's z.
    """

    bounds: tuple[float, float, float, float]
    resolution: int = 100

    def __post_init__(self) -> None:
        check_positive_int(self.resolution, "resolution")
        x0, x1, y0, y1 = (float(b) for b in self.bounds)
        if not (np.isfinite([x0, x1, y0, y1]).all() and x1 > x0 and y1 > y0):
            raise ValueError(f"grid bounds must be finite with x0 < x1 and y0 < y1; got {self.bounds}")

    @property
    def xs(self) -> np.ndarray:
        x0, x1, _, _ = self.bounds
        return x0 + (np.arange(self.resolution) + 0.5) * (x1 - x0) / self.resolution

    @property
    def ys(self) -> np.ndarray:
        _, _, y0, y1 = self.bounds
        return y0 + (np.arange(self.resolution) + 0.5) * (y1 - y0) / self.resolution

    @property
    def cell_area(self) -> float:
        x0, x1, y0, y1 = self.bounds
        return (x1 - x0) * (y1 - y0) / self.resolution ** 2

    def points(self) -> np.ndarray:
        """The cell centres ``(resolution**2, 2)``, row by row from the bottom."""
        gx, gy = np.meshgrid(self.xs, self.ys)
        return np.stack([gx.ravel(), gy.ravel()], axis=1)

    def reshape(self, values: Tensor | np.ndarray) -> np.ndarray:
        """Values at ``points()`` as a float64 ``(resolution, resolution)`` array."""
        if isinstance(values, Tensor):
            values = values.detach().cpu().double().numpy()
        return np.asarray(values, dtype=np.float64).reshape(self.resolution, self.resolution)


@dataclass(frozen=True)
class DensityMorph:
    """The density of x_t = (1 - t) x + t T(x), x ~ p, at each of ``times`` on a grid."""

    grid: Grid
    times: np.ndarray          # (f,) from 0 to 1
    densities: np.ndarray      # (f, r, r)
    unsolved: np.ndarray       # (f,) grid points whose preimage did not converge (density 0 there)
    seconds: float             # time to compute it
    samples: int = 0           # 0: exact values at the cell centres; else histograms of this many carried points

    @property
    def pushforward(self) -> np.ndarray:
        """T#p on the grid: the last frame ``(r, r)``."""
        return self.densities[-1]

    @property
    def masses(self) -> np.ndarray:
        """Each frame's mass in the grid's box, its Riemann sum: ``(f,)``."""
        return self.densities.sum(axis=(1, 2)) * self.grid.cell_area


def _model_tensor(model: TransportMap, points: np.ndarray) -> Tensor:
    dtype, device = model.dtype_and_device()
    return torch.as_tensor(points, dtype=dtype, device=device)


def _log_prob(density: Density, x: Tensor) -> Tensor:
    """log p at ``x`` (on the density's device and dtype), in cache-sized chunks on the CPU; returns x's dtype."""
    points = x.to(density.device, density.dtype)
    rows = DENSITY_ROWS if points.device.type == "cpu" else None
    return in_chunks(density.log_prob, points, rows).to(x.device, x.dtype)


def _check_2d(model: TransportMap, *densities: Density) -> None:
    if model.dim != 2 or any(d.dim != 2 for d in densities):
        raise ValueError("density pictures are for 2-D maps and densities")


def density_on_grid(density: Density, grid: Grid) -> np.ndarray:
    """p on the grid's cell centres: ``(r, r)``."""
    points = torch.as_tensor(grid.points(), dtype=density.dtype, device=density.device)
    with torch.no_grad():
        return grid.reshape(_log_prob(density, points).exp())


def density_morph(model: TransportMap, source: Density, grid: Grid, frames: int = 30) -> DensityMorph:
    """The density of McCann's interpolant at ``frames`` equally spaced times in [0, 1]; the last frame
    is T#p. Needs a monotone ``model`` (its inverse); raises ValueError otherwise."""
    if not model.monotone:
        raise ValueError(f"{type(model).__name__} is not monotone: it has no inverse, so its pushforward "
                         "density cannot be computed exactly")
    _check_2d(model, source)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2; got {frames!r}")
    started = time.perf_counter()
    y = _model_tensor(model, grid.points())
    times = np.linspace(0.0, 1.0, frames)
    eye = torch.eye(2, dtype=y.dtype, device=y.device)
    dens, unsolved = [], []
    with torch.no_grad():
        # t = 0 is the identity: x = y, T and J_T there start the continuation.
        mapped, jac = in_chunks(model.map_and_jacobian, y, evaluation_rows(model, y.device))
        solution = InverseSolution(x=y, residual=torch.zeros(len(y), dtype=y.dtype, device=y.device),
                                   converged=torch.ones(len(y), dtype=torch.bool, device=y.device),
                                   mapped=mapped, jacobian=jac, iterations=0)
        for t in times:
            if t > 0:
                solution = model.solve_inverse(y, solution, t=float(t), max_iter=FRAME_ITERATIONS)
            det = torch.linalg.det(torch.lerp(eye, solution.jacobian, float(t)))
            log_p = _log_prob(source, solution.x)
            values = torch.where(solution.converged & (det > 0), log_p.exp() / det, torch.zeros_like(det))
            dens.append(grid.reshape(values))
            unsolved.append(int((~solution.converged).sum()))
    return DensityMorph(grid=grid, times=times, densities=np.stack(dens), unsolved=np.asarray(unsolved),
                        seconds=time.perf_counter() - started)


def _histogram(points: np.ndarray, grid: Grid, total: int) -> np.ndarray:
    """Each cell's share of ``total`` points over its area ``(r, r)``, [row, column] = [y, x]; points outside the box
    count in ``total`` but in no cell."""
    x0, x1, y0, y1 = grid.bounds
    counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=grid.resolution, range=[[y0, y1], [x0, x1]])
    return counts / (total * grid.cell_area)


def sampled_density(density: Density, grid: Grid, samples: int = MORPH_SAMPLES,
                    generator: torch.Generator | None = None) -> np.ndarray:
    """``density`` on the grid as each cell's share of ``samples`` draws over its area ``(r, r)``: the cell averages,
    noisy, where ``density_on_grid``'s cell-centre values miss a density narrower than a cell."""
    check_positive_int(samples, "samples")
    points = density.sample(samples, generator).detach().cpu().double().numpy()
    return _histogram(points, grid, samples)


def sampled_density_morph(model: TransportMap, source: Density, grid: Grid, frames: int = 30,
                          samples: int = MORPH_SAMPLES, generator: torch.Generator | None = None) -> DensityMorph:
    """The density of x_t at ``frames`` times in [0, 1] as each cell's share of ``samples`` source points carried
    along x_t = (1 - t) x + t T(x), over its area: the cell averages of the density, with sampling noise. One pass of
    the map, no inverse, so any ``model`` will do. Unlike ``density_morph``'s values at the cell centres it holds a
    density narrower than a cell whole."""
    _check_2d(model, source)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2; got {frames!r}")
    check_positive_int(samples, "samples")
    started = time.perf_counter()
    dtype, device = model.dtype_and_device()
    with torch.no_grad():
        points = source.sample(samples, generator).to(device=device, dtype=dtype)
        mapped = in_chunks(model, points, evaluation_rows(model, points.device))
    x, mapped = points.cpu().double().numpy(), mapped.cpu().double().numpy()
    times = np.linspace(0.0, 1.0, frames)
    dens = np.stack([_histogram((1.0 - t) * x + t * mapped, grid, samples) for t in times])
    return DensityMorph(grid=grid, times=times, densities=dens, unsolved=np.zeros(frames, dtype=int),
                        seconds=time.perf_counter() - started, samples=samples)


def unresolved_frames(exact: DensityMorph, sampled: DensityMorph, tolerance: float = MASS_TOLERANCE) -> np.ndarray:
    """Indices of the frames whose cell-centre values (``exact``) hold a mass in the box that strays more than
    ``tolerance`` from the share of ``sampled``'s points in it: a density narrower than the cells (the values miss
    it or, where a centre falls on it, count it a whole cell wide). Empty when the grid resolves every frame."""
    if exact.densities.shape != sampled.densities.shape or exact.grid != sampled.grid:
        raise ValueError("the two morphs must have the same grid and frames")
    return np.flatnonzero(np.abs(exact.masses - sampled.masses) > tolerance)


def grid_resolves(density: Density, grid: Grid, tolerance: float = CELL_TOLERANCE) -> bool:
    """Whether ``density``'s values at the grid's cell centres picture it: their total variation from the averages of
    its values at four points in each cell (a quarter cell from the centre each way) is at most ``tolerance``."""
    x0, x1, y0, y1 = grid.bounds
    qx, qy = (x1 - x0) / grid.resolution / 4, (y1 - y0) / grid.resolution / 4
    centres = density_on_grid(density, grid)
    average = np.mean([density_on_grid(density, Grid((x0 + dx, x1 + dx, y0 + dy, y1 + dy), grid.resolution))
                       for dx in (-qx, qx) for dy in (-qy, qy)], axis=0)
    return total_variation(centres, average, grid) <= tolerance


def morph_picture(model: TransportMap, source: Density, grid: Grid, frames: int = 30, samples: int = MORPH_SAMPLES,
                  generator: torch.Generator | None = None, target: Density | None = None) -> DensityMorph:
    """``density_morph``'s exact frames when the grid resolves the source, the ``target`` (which the last frame
    should match) and every frame's mass (``unresolved_frames``, against ``CHECK_SAMPLES`` carried points), else every
    frame as a histogram of ``samples`` carried points: a density near a cell's width in one frame is near it in
    others, whose masses can agree with the points' by chance."""
    exact = density_morph(model, source, grid, frames)
    started = time.perf_counter()
    resolved = grid_resolves(source, grid) and (target is None or grid_resolves(target, grid))
    if resolved:
        check = sampled_density_morph(model, source, grid, frames, min(CHECK_SAMPLES, samples), generator)
        resolved = not len(unresolved_frames(exact, check))
    if resolved:
        return exact
    sampled = sampled_density_morph(model, source, grid, frames, samples, generator)
    return replace(sampled, seconds=exact.seconds + time.perf_counter() - started)


def density_picture(density: Density, grid: Grid, samples: int = MORPH_SAMPLES,
                    generator: torch.Generator | None = None) -> tuple[np.ndarray, bool]:
    """``density`` on the grid ``(r, r)``: its exact values at the cell centres where the grid resolves it
    (``grid_resolves``), else each cell's share of ``samples`` draws; and whether it is the latter."""
    if grid_resolves(density, grid):
        return density_on_grid(density, grid), False
    return sampled_density(density, grid, samples, generator), True


def pushforward_density(model: TransportMap, source: Density, grid: Grid, steps: int = 8) -> np.ndarray:
    """(T#p)(y) = p(T^-1(y)) / det J_T(T^-1(y)) on the grid ``(r, r)``; the preimages are continued from
    the identity over ``steps`` times of the interpolant, which keeps every Newton solve short."""
    return density_morph(model, source, grid, frames=steps + 1).pushforward


def monge_ampere_field(model: TransportMap, source: Density, target: Density, grid: Grid,
                       support: float = 1e-2) -> np.ndarray:
    """log p(x) - log det J_T(x) - log q(T(x)) on the grid ``(r, r)``: zero everywhere for the OT map.
    NaN outside the source's support (where p is below ``support`` times its largest value on the grid)."""
    _check_2d(model, source, target)
    x = _model_tensor(model, grid.points())
    with torch.no_grad():
        mapped, logdet = in_chunks(model.map_and_logdet, x, evaluation_rows(model, x.device))
        log_p = _log_prob(source, x).double().cpu()
        log_q = _log_prob(target, mapped).double().cpu()
        field = log_p - logdet.double().cpu() - log_q
    inside = log_p >= log_p.max() + np.log(support)
    return grid.reshape(torch.where(inside, field, torch.full_like(field, np.nan)))


def total_variation(p: np.ndarray, q: np.ndarray, grid: Grid) -> float:
    """(1/2) integral |p - q| over the grid (midpoint rule), for densities ``p, q: (r, r)`` on it; in [0, 1]."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum()) * grid.cell_area
