"""Figures: the displacement-interpolation animation, its GIF, loss curves, heatmaps and previews."""

import io

import numpy as np
import pytest
from PIL import Image

from gradnet_core import Gaussian, GaussianMixture
from gradnet_core.plotting import (
    Panel, animation_figure, animation_gif, density_comparison_figure, density_heatmap, density_morph_figure,
    density_morph_gif, grid_points, interpolate, loss_figure, losses_figure, position_colours, preview_figure, residual_figure,
    snapshot_png, square_bounds,
)
from gradnet_core.pushforward import DensityMorph, Grid


@pytest.fixture
def scene(rng):
    x = rng.normal(size=(1200, 2)) * [1.0, 0.5] + [1.0, -1.0]
    learned = 0.5 * x + [0.2, 0.1]
    truth = 0.5 * x + [0.2, 0.0]
    baseline = -0.5 * x
    grid = x[:20]
    panels = [Panel("learned", learned, (grid, learned[:20])), Panel("truth", truth, (grid, truth[:20])),
              Panel("baseline", baseline, (grid, baseline[:20]))]
    target = rng.normal(size=(500, 2)) * 0.5
    return x, panels, target


def _point_frames(fig, panels):
    return [[np.column_stack([d.x, d.y]) for d in frame.data] for frame in fig.frames]


def test_animation_has_one_frame_per_t_and_moves_from_x_to_T(scene):
    x, panels, target = scene
    fig = animation_figure(x, panels, target, frames=25)
    assert len(fig.frames) == 25
    frames = _point_frames(fig, panels)
    for k, panel in enumerate(panels):
        np.testing.assert_allclose(frames[0][k], x, atol=1e-4)               # t = 0: the source points
        np.testing.assert_allclose(frames[-1][k], panel.mapped, atol=1e-4)   # t = 1: T(x)
        np.testing.assert_allclose(frames[12][k], interpolate(x, panel.mapped, 0.5), atol=1e-4)


def test_every_frame_updates_every_panel_and_one_control_drives_them(scene):
    x, panels, target = scene
    fig = animation_figure(x, panels, target, frames=20)
    point_traces = [i for i, t in enumerate(fig.data) if t.mode == "markers"]
    assert all(list(frame.traces) == point_traces for frame in fig.frames)
    assert len(point_traces) == len(panels)
    assert len(fig.layout.updatemenus) == 1 and len(fig.layout.sliders) == 1
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert any("Play" in label for label in labels) and any("Pause" in label for label in labels)
    assert len(fig.layout.sliders[0].steps) == 20
    assert [list(s.args[0]) for s in fig.layout.sliders[0].steps] == [[f.name] for f in fig.frames]


def test_axes_are_fixed_and_equal_in_every_panel(scene):
    x, panels, target = scene
    fig = animation_figure(x, panels, target)
    xaxes = [fig.layout[f"xaxis{'' if i == 1 else i}"] for i in range(1, 4)]
    yaxes = [fig.layout[f"yaxis{'' if i == 1 else i}"] for i in range(1, 4)]
    assert all(ax.autorange is False for ax in xaxes + yaxes)
    assert len({tuple(ax.range) for ax in xaxes}) == 1 and len({tuple(ax.range) for ax in yaxes}) == 1
    (x0, x1), (y0, y1) = xaxes[0].range, yaxes[0].range
    assert x1 - x0 == pytest.approx(y1 - y0)                              # square box
    everything = np.concatenate([x, *[p.mapped for p in panels]])
    inside = (everything[:, 0] >= x0) & (everything[:, 0] <= x1) & (everything[:, 1] >= y0) & (everything[:, 1] <= y1)
    assert inside.mean() > 0.99


def test_points_are_capped_and_coloured_by_source_position(rng):
    x = rng.normal(size=(5000, 2))
    fig = animation_figure(x, [Panel("id", x)], frames=20, max_points=2000)
    points = fig.data[0]
    assert len(points.x) == 2000
    assert len(points.marker.color) == 2000 and len(points.marker.opacity) == 2000


def test_toggles_add_target_paths_and_arrows(scene):
    x, panels, target = scene
    plain = animation_figure(x, panels, target)
    full = animation_figure(x, panels, target, arrows=True, trajectories=True, show_target=True, max_paths=100)
    assert len(plain.data) == 3 and len(full.data) == 12
    names = [t.name for t in full.data]
    assert names.count("target samples") == names.count("paths") == names.count("arrows") == 3
    paths = next(t for t in full.data if t.name == "paths")
    assert len(paths.x) == 3 * 100                                        # start, end, gap per path
    arrows = next(t for t in full.data if t.name == "arrows")
    assert arrows.marker.symbol == "arrow" and len(arrows.x) == 3 * 20
    # Frames still move only the point traces.
    assert all(len(f.data) == 3 for f in full.frames)


def test_animation_refuses_bad_input(scene):
    x, panels, _ = scene
    with pytest.raises(ValueError, match="frames"):
        animation_figure(x, panels, frames=1)
    with pytest.raises(ValueError, match="at least one panel"):
        animation_figure(x, [])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        animation_figure(x[:, :1], panels)
    with pytest.raises(ValueError, match="same source points"):
        animation_figure(x, [Panel("short", x[:10])])


def test_gif_decodes_to_the_right_number_of_frames(scene):
    x, panels, target = scene
    data = animation_gif(x, panels, target, frames=24, size=160, show_target=True, title="A title")
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF" and image.n_frames == 24
    assert image.size[0] > 3 * 160 and image.size[1] > 160 + 40         # room for axes, ticks and titles
    durations = []
    for k in range(24):
        image.seek(k)
        durations.append(image.info["duration"])
    assert durations[0] == durations[-1] >= 1000 > durations[1]            # held at t = 0 and at t = 1
    image.seek(0)
    first = np.asarray(image.convert("RGB")).copy()
    image.seek(23)
    last = np.asarray(image.convert("RGB"))
    assert not np.array_equal(first, last)                                # the points moved


def test_gif_draws_arrows_and_trajectories(scene):
    x, panels, target = scene
    plain = Image.open(io.BytesIO(animation_gif(x, panels[:1], frames=2, size=160)))
    marked = Image.open(io.BytesIO(animation_gif(x, panels[:1], frames=2, size=160, arrows=True, trajectories=True)))
    dark = [int((np.asarray(im.convert("L")) < 100).sum()) for im in (plain, marked)]
    assert dark[1] > dark[0] + 200                                          # paths and arrow heads drawn


def _coloured_pixels(picture: np.ndarray, colour) -> np.ndarray:
    return np.argwhere((picture == np.asarray(colour, dtype=np.uint8)).all(axis=-1))


def test_snapshot_grid_puts_each_point_where_its_coordinates_say():
    bounds = (0.0, 2.0, -1.0, 1.0)
    red, blue = (220, 20, 20), (20, 20, 220)
    colours = np.array([red, blue], dtype=np.uint8)
    # Row 0: the centre and the top-left corner; row 1: a NaN and a point far outside (neither drawn).
    frames = [[np.array([[1.0, 0.0], [0.0, 1.0]])] * 2, [np.array([[np.nan, 0.0], [9.0, 9.0]])] * 2]
    picture = np.asarray(Image.open(io.BytesIO(
        snapshot_png(frames, colours, ["first row", "second\nrow"], ["a", "b"], bounds, cell=101))).convert("RGB"))
    reds, blues = _coloured_pixels(picture, red), _coloured_pixels(picture, blue)
    assert len(reds) == len(blues) == 2 * 4                       # a 2 x 2 dot per panel of the first row only
    # Within each row the panels sit one cell (plus the gap) apart; the centre dot lies 49 px right and down of
    # the top-left dot (101 px panels: pixel (size - 3) / 2 = 49 from the corner).
    top_left = blues.min(axis=0)
    centre = reds[reds[:, 1] < reds[:, 1].min() + 2].min(axis=0)
    np.testing.assert_array_equal(centre - top_left, [49, 49])
    assert reds[:, 0].max() < blues[:, 0].min() + 101             # all in the first row of panels
    assert np.unique(blues[:, 1]).size == 4                        # two panels side by side, two columns each
    with pytest.raises(ValueError, match="one per row and column title"):
        snapshot_png(frames, colours, ["only one row title"], ["a", "b"], bounds)


def test_figure_titles_are_spelled_in_the_characters_pillow_draws():
    from gradnet_core.plotting import _pillow_text

    assert _pillow_text("Monge–Ampère W₂ → x²") == "Monge-Ampere W2 -> x2"
    assert _pillow_text("ψ") == "?"                                  # not an empty box
    picture = snapshot_png([[np.zeros((1, 2))]], np.zeros((1, 3), np.uint8), ["Monge–Ampère"], ["t = 0"],
                           (-1.0, 1.0, -1.0, 1.0), cell=40)
    assert Image.open(io.BytesIO(picture)).format == "PNG"


def test_colours_follow_the_position_relative_to_the_mean(rng):
    x = rng.normal(size=(300, 2))
    colours = position_colours(x)
    assert colours.shape == (300, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(colours, position_colours(3 * x + 10))   # shift and scale invariant
    ring = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
    assert len({tuple(c) for c in position_colours(ring)[:4]}) == 4         # every direction its own colour
    assert position_colours(ring)[4].min() > 170                           # the centre is pale


def test_square_bounds_and_grid():
    pts = np.array([[0.0, 0.0], [4.0, 1.0]])
    x0, x1, y0, y1 = square_bounds(pts, margin=0.0, quantile=0.0)
    assert (x0, x1) == pytest.approx((0.0, 4.0)) and (y0 + y1) / 2 == pytest.approx(0.5)
    assert y1 - y0 == pytest.approx(4.0)
    # Gaussian samples: every point in the box (their tails once fell off the panels' edges); a few points ten times
    # as far out as the rest are left out rather than shrink the picture.
    gaussian = np.random.default_rng(0).standard_normal((1000, 2))
    x0, x1, y0, y1 = square_bounds(gaussian)
    assert x0 < gaussian[:, 0].min() and gaussian[:, 0].max() < x1
    assert y0 < gaussian[:, 1].min() and gaussian[:, 1].max() < y1
    flung = np.vstack([gaussian, [[40.0, 0.0], [0.0, -40.0]]])
    x0, x1, y0, y1 = square_bounds(flung)
    assert x1 - x0 < 10 and x1 < 40 and y0 > -40
    grid = grid_points((0.0, 1.0, 0.0, 1.0), 4)
    assert grid.shape == (16, 2) and grid.min() == pytest.approx(0.125) and grid.max() == pytest.approx(0.875)


def test_loss_figure_is_logarithmic_for_positive_losses_and_updates_in_place():
    fig = loss_figure([1, 2, 3], [1.0, 0.1, 0.01])
    assert fig.layout.yaxis.type == "log"
    same = loss_figure([1, 2, 3, 4], [1.0, -0.5, 0.1, float("nan")], figure=fig)
    assert same is fig and fig.layout.yaxis.type == "linear"
    assert list(fig.data[0].x) == [1, 2, 3]                                # the NaN loss is left out


def test_losses_figure_marks_where_a_run_went_on_with_another_objective():
    curves = {"#1": ([1, 2, 3, 4], [1.0, 0.5, 0.02, 0.01]), "#2": ([1, 2], [0.3, 0.2])}
    fig = losses_figure(curves, switches=[(2, "Sinkhorn divergence"), (2, "Sinkhorn divergence")])
    assert [trace.name for trace in fig.data] == ["#1", "#2"]
    assert [(shape.x0, shape.x1) for shape in fig.layout.shapes] == [(2, 2)]          # one line per distinct switch
    assert [note.text.strip() for note in fig.layout.annotations] == ["→ Sinkhorn divergence"]
    assert losses_figure(curves).layout.shapes == ()
    # two switches close together: their labels one above the other, right of their lines, on the steps run only
    # (printed over each other left of their lines, with the axis run out to -1000 in a narrow window: a review)
    two = losses_figure(curves, switches=[(2, "from the target"), (3, "Sinkhorn divergence")]).layout
    assert [(n.x, n.xanchor) for n in two.annotations] == [(2, "left"), (3, "left")]
    assert two.annotations[0].y > two.annotations[1].y and two.annotations[0].yref == "paper"
    assert tuple(two.xaxis.range) == (1.0, 4.0)
    # spanning two decades: logarithmic, labelled at decades only; a negative loss anywhere makes it linear
    assert (fig.layout.yaxis.type, fig.layout.yaxis.dtick) == ("log", 1)
    assert losses_figure({"#1": ([1, 2], [0.3, 0.2])}).layout.yaxis.dtick is None
    assert losses_figure({**curves, "#3": ([1], [-0.1])}).layout.yaxis.type == "linear"


def test_density_heatmap_integrates_to_one():
    mixture = GaussianMixture([0.3, 0.7], [[-1.0, 0.0], [1.5, 0.5]], [np.eye(2) * 0.3, np.eye(2) * 0.5])
    bounds = (-6.0, 6.0, -6.0, 6.0)
    fig = density_heatmap(mixture, bounds, resolution=121)
    z = np.asarray(fig.data[0].z)
    cell = (12.0 / 120) ** 2
    assert z.shape == (121, 121)
    assert z.sum() * cell == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="2-D"):
        density_heatmap(Gaussian([0.0], [[1.0]]), bounds)


def test_preview_has_fixed_axes(rng):
    x = rng.normal(size=(100, 2))
    fig = preview_figure(x, 2 * x, (-5.0, 5.0, -4.0, 6.0), target_samples=x)
    assert tuple(fig.layout.xaxis.range) == (-5.0, 5.0) and tuple(fig.layout.yaxis.range) == (-4.0, 6.0)
    assert fig.layout.xaxis.autorange is False
    np.testing.assert_allclose(np.column_stack([fig.data[-1].x, fig.data[-1].y]), 2 * x)


def _morph(frames: int = 6) -> DensityMorph:
    """A blob moving from the bottom left to the top right of [0, 1]^2, on a 40 x 40 grid."""
    grid = Grid((0.0, 1.0, 0.0, 1.0), 40)
    times = np.linspace(0.0, 1.0, frames)
    gx, gy = np.meshgrid(grid.xs, grid.ys)
    centres = 0.2 + 0.6 * times
    densities = np.stack([np.exp(-((gx - c) ** 2 + (gy - c) ** 2) / 0.005) for c in centres])
    return DensityMorph(grid=grid, times=times, densities=densities, unsolved=np.zeros(frames, int), seconds=0.0)


def test_density_morph_figure_animates_the_heatmap_and_the_particles_on_one_clock(rng):
    morph = _morph()
    x = rng.normal(size=(150, 2))                # under the figure's 200 particles: all of them drawn
    fig = density_morph_figure(morph, (x, x + 1.0))
    assert len(fig.frames) == 6 and len(fig.layout.sliders[0].steps) == 6
    assert [type(d).__name__ for d in fig.data] == ["Heatmap", "Scatter"]
    first, last = (np.asarray(fig.frames[k].data[0].z) for k in (0, -1))
    assert first.max() == last.max() == 255                    # one colour scale for every frame
    assert np.unravel_index(first.argmax(), first.shape) < np.unravel_index(last.argmax(), last.shape)
    np.testing.assert_allclose(np.column_stack([fig.frames[-1].data[1].x, fig.frames[-1].data[1].y]), x + 1.0,
                               atol=1e-4)
    assert fig.layout.updatemenus[0].buttons[0].args[1]["frame"]["redraw"]   # heatmaps need a redraw
    assert len(density_morph_figure(morph).data) == 1
    # More particles are subsampled: each frame's redraw must fit in a frame (its docstring gives the timings).
    many = density_morph_figure(morph, (rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))))
    assert len(many.frames[-1].data[1].x) == 200
    assert many.layout.updatemenus[0].buttons[0].args[1]["frame"]["duration"] == 250


def test_density_morph_titles_take_two_lines_where_long():
    # "mGradNet-M: density of x_t" ran into "Ground truth (closed form): particles" at 900 px (a review)
    morph, x = _morph(), np.zeros((5, 2))
    short = density_morph_figure(morph, (x, x), title="M: density", particles_title="truth")
    long = density_morph_figure(morph, (x, x), title="mGradNet-M: density of x_t",
                                particles_title="Ground truth (closed form): particles")
    assert [a.text for a in short.layout.annotations] == ["M: density", "truth"]
    assert [a.text for a in long.layout.annotations] == ["mGradNet-M:<br>density of x_t",
                                                         "Ground truth<br>(closed form): particles"]
    assert long.layout.margin.t - short.layout.margin.t == long.layout.height - short.layout.height > 0


def test_density_morph_gif_has_every_frame_with_y_up_axes_and_holds_the_ends():
    morph = _morph()
    gif = Image.open(io.BytesIO(density_morph_gif(morph, size=120)))
    assert gif.n_frames == 6
    durations = []
    blob_rows = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
        rgb = np.asarray(gif.convert("RGB")).astype(float)
        yellow = rgb[..., 0] + rgb[..., 1] - 2 * rgb[..., 2]           # viridis' top; 0 on the white and grey axes
        blob_rows.append(np.unravel_index(yellow.argmax(), yellow.shape)[0])
    assert durations[0] == durations[-1] > durations[1]
    assert blob_rows[0] > blob_rows[-1]                          # the blob rises: row 0 is the top
    # The axes of the grid (a slide without them did not say where the mass goes): a frame around the picture and
    # tick labels in dark text left of it and under it, in margins that hold no density colour.
    from gradnet_core.plotting import _gif_margins, _nice_ticks
    left, bottom, _ = _gif_margins(120)
    rgb = np.asarray(gif.convert("RGB")).astype(int)
    dark = (rgb.max(axis=-1) - rgb.min(axis=-1) < 30) & (rgb.mean(axis=-1) < 120)   # grey text, not viridis' purple
    yellow_rows = np.nonzero((yellow > 100).any(axis=1))[0]
    assert dark[:, : left - 2].any() and dark[-bottom + 4:, left:].any()
    assert dark[-bottom + 4:, left:].any(axis=0).sum() >= 3       # several x labels
    assert len(_nice_ticks(*morph.grid.bounds[:2])) >= 3 and yellow_rows.max() < gif.size[1] - bottom


def test_gif_frames_share_one_palette_that_holds_the_colours_between_the_ends():
    # A blob that concentrates half way and spreads again: its peak colour (the top of viridis) is in neither
    # end frame, and the frame between must still show it.
    grid = Grid((0.0, 1.0, 0.0, 1.0), 60)
    times = np.linspace(0.0, 1.0, 9)
    gx, gy = np.meshgrid(grid.xs, grid.ys)
    widths = 0.02 - 0.018 * np.sin(np.pi * times)
    densities = np.stack([np.exp(-((gx - 0.5) ** 2 + (gy - 0.5) ** 2) / w) / w for w in widths])
    morph = DensityMorph(grid=grid, times=times, densities=densities, unsolved=np.zeros(9, int), seconds=0.0)
    gif = Image.open(io.BytesIO(density_morph_gif(morph, size=150)))
    colours = set()
    for k in range(gif.n_frames):
        gif.seek(k)
        colours.update(map(tuple, np.asarray(gif.convert("RGB")).reshape(-1, 3)))
    assert len(colours) <= 256                                   # one palette for all the frames
    gif.seek(4)
    middle = np.asarray(gif.convert("RGB")).reshape(-1, 3).astype(int)
    top_of_viridis = np.array([253, 231, 37])
    assert np.abs(middle - top_of_viridis).max(axis=1).min() <= 12


def test_density_comparison_shares_a_scale_and_centres_the_difference():
    morph = _morph(2)
    fig = density_comparison_figure(morph.densities[0], morph.densities[1], morph.grid)
    assert len(fig.data) == 3
    assert fig.data[0].zmax == fig.data[1].zmax
    assert fig.data[2].zmin == -fig.data[2].zmax


def test_residual_figure_leaves_outside_the_support_blank():
    grid = Grid((0.0, 1.0, 0.0, 1.0), 10)
    field = np.linspace(-1.0, 1.0, 100).reshape(10, 10)
    field[0] = np.nan
    z = np.asarray(residual_figure(field, grid).data[0].z, dtype=float)
    assert np.isnan(z[0]).all() and np.isfinite(z[1:]).all()


def test_residual_figure_frames_the_support_not_the_whole_grid():
    # two blobs side by side took a third of the picture's width under blank space (a review): the axes fit the
    # support, a cell's margin around it, at one scale
    grid = Grid((-3.0, 3.0, -3.0, 3.0), 60)
    gx, gy = np.meshgrid(grid.xs, grid.ys)
    field = np.where(np.abs(gy) < 1.0, gx, np.nan)          # rows are y, columns x
    layout = residual_figure(field, grid).layout
    cell = grid.xs[1] - grid.xs[0]
    assert layout.xaxis.range == pytest.approx((grid.xs[0] - cell, grid.xs[-1] + cell))
    y_inside = grid.ys[np.abs(grid.ys) < 1.0]
    assert layout.yaxis.range == pytest.approx((y_inside[0] - cell, y_inside[-1] + cell))
    assert layout.yaxis.scaleanchor == "x" and layout.yaxis.scaleratio == 1


def test_long_panel_titles_take_two_lines_and_the_figure_room_for_them(scene):
    # "Ground truth (barycentric, n=1000)" overlapped its neighbours' titles in a window 900 px wide (a review).
    x, panels, target = scene
    short = animation_figure(x, [Panel("#1 mGradNet-M", panels[0].mapped)], target, frames=3)
    long = animation_figure(x, [Panel("#1 mGradNet-M", panels[0].mapped),
                                Panel("Ground truth (barycentric, n=1000)", panels[0].mapped),
                                Panel("#12 ICNN baseline, not monotone", panels[0].mapped)], target, frames=3)
    assert [a.text for a in short.layout.annotations] == ["#1 mGradNet-M"]
    assert [a.text for a in long.layout.annotations] == [
        "#1 mGradNet-M", "Ground truth<br>(barycentric, n=1000)", "#12 ICNN baseline,<br>not monotone"]
    # the second line goes into a taller top margin, the panels keep their height
    assert long.layout.margin.t - short.layout.margin.t == long.layout.height - short.layout.height > 0


@pytest.mark.parametrize("lo, hi", [(-4.9, 4.9), (-5.7, 5.0), (0.0, 1.0), (-0.04, 1.04), (-12.0, 12.0), (3.1, 3.4)])
def test_gif_axes_get_at_least_three_round_ticks_inside_the_range(lo, hi):
    # A mixture GIF's axes over about [-4.9, 4.9] had one tick, "0", and no scale (a review).
    from gradnet_core.plotting import _nice_ticks

    ticks = _nice_ticks(lo, hi)
    steps = np.diff(ticks)
    assert 3 <= len(ticks) <= 11 and lo - 1e-9 <= ticks[0] and ticks[-1] <= hi + 1e-9
    np.testing.assert_allclose(steps, steps[0])
    mantissa = steps[0] / 10.0 ** np.floor(np.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-9
