"""The ground-truth-free verdict (gradnet_core.verdict): passes exact maps, flags wrong ones in words."""

import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import Tensor

from gradnet_core import Gaussian, GaussianMixture, MGradNetM, MLPMap, TrainConfig, train
from gradnet_core.densities import ImageDensity
from gradnet_core.ground_truth import barycentric_projection, gaussian_map
from gradnet_core.images import load_bundled
from gradnet_core.metrics import evaluate_map, exact_w2
from gradnet_core.networks import GradientNetwork, seeded_map
from gradnet_core.objectives import MongeAmpere
from gradnet_core.presets import MODEL_PRESETS, mixture_presets, objective_overrides, train_preset
from gradnet_core.verdict import (KL_TOLERANCE, SAMPLE_UNCOVERED_TOLERANCE, TRANSPORT_MAX_DIM, TRY_AGAIN, after_retries,
                                   after_short_run, assess_map)


class Affine(GradientNetwork):
    """T(x) = A x + b with A symmetric positive definite: the gradient of a convex quadratic."""

    def __init__(self, A, b):
        A, b = torch.as_tensor(A, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
        super().__init__(A.shape[0])
        self.A = torch.nn.Parameter(A, requires_grad=False)
        self.b = torch.nn.Parameter(b, requires_grad=False)

    def _evaluate(self, x: Tensor, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        out = x @ self.A + self.b
        return out, (self.A[self._rows, self._cols].expand(x.shape[0], -1) if jacobian else None)


def _exact_gaussian_map():
    source, target = Gaussian([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]]), Gaussian([0.0, 0.5], [[2.0, 0.3], [0.3, 0.5]])
    truth = gaussian_map(source, target)
    b = truth(torch.zeros(1, 2, dtype=torch.float64))[0]
    A = truth(torch.eye(2, dtype=torch.float64)) - b
    return Affine(A.T, b), source, target


def test_the_exact_gaussian_map_passes():
    model, source, target = _exact_gaussian_map()
    verdict = assess_map(model, source, target)
    assert verdict.ok, verdict.message
    assert abs(verdict.kl) < 3 * verdict.kl_error + 1e-3          # KL(T#p || q) = 0 for the exact map
    assert verdict.distance_ratio < 2.0 and "optimal map" in verdict.message
    assert abs(verdict.transport_excess) < 0.02 * verdict.transport_scale and "W2" in verdict.message
    assert verdict.uncovered < 0.02                               # T#p = q: no target mass left bare


def test_the_transport_check_is_not_fooled_by_how_many_points_each_mode_gets():
    # The identity from the 2 -> 3 preset's target to itself is the exact map. Two plain samples of 1000 points
    # differ in how many points each of its three far-apart components gets, and W2 moves that surplus between
    # them: the excess of such a pair ran from -2.9 % to +0.6 % of the target's variance over six seeds, within
    # sight of the 4 % tolerance. The check's stratified samples (fixed counts per component) keep it near 0.
    target = list(mixture_presets().values())[0][1]
    model = Affine(torch.eye(2), torch.zeros(2))
    for seed in range(6):
        verdict = assess_map(model, target, target, seed=seed)
        assert verdict.ok, verdict.message
        assert abs(verdict.transport_excess) < 2e-3 * verdict.transport_scale, (seed, verdict.transport_excess)
    # A pass on a target of several components says what the check can miss there; one Gaussian's does not.
    assert "a few per cent of the mass to the wrong one" in verdict.message
    model, source, gaussian = _exact_gaussian_map()
    assert "wrong one" not in assess_map(model, source, gaussian).message


def test_on_a_target_of_several_components_the_transport_check_is_stricter_and_drawn_larger(monkeypatch):
    # A split a few per cent off shows in the pushforward at half to four fifths of its error, so on a mixture the
    # check allows an excess of 2.25 % of the variance (4 % elsewhere), from two draws of 2000 points, since one
    # 1000-point W2 of a map with bridges between components is too noisy for that (verdict.MIXTURE_TRANSPORT_...).
    # A shift by 0.41 moves each point by 0.41 and the pushforward by W2^2 = 0.168, 3.4 % of the variance 5: passed
    # by the 4 % tolerance, flagged by the mixture's, on every seed.
    import gradnet_core.verdict as verdict

    mixture = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5 * np.eye(2)] * 2)
    shifted, exact = Affine(torch.eye(2), torch.tensor([0.41, 0.0])), Affine(torch.eye(2), torch.zeros(2))
    sizes = []
    monkeypatch.setattr(verdict, "exact_w2", lambda a, b: sizes.append(len(a)) or exact_w2(a, b))
    for seed in range(3):
        sizes.clear()
        judged = assess_map(shifted, mixture, mixture, seed=seed)
        assert sizes[:verdict.MIXTURE_TRANSPORT_DRAWS] == [2000] * verdict.MIXTURE_TRANSPORT_DRAWS, sizes
        assert not judged.ok and "transport" in judged.failed, (seed, judged.message)
        assert judged.transport_excess / judged.transport_scale == pytest.approx(0.168 / 5, abs=0.004)
        assert judged.transport_tolerance == pytest.approx(0.0225 * judged.transport_scale)
        assert assess_map(exact, mixture, mixture, seed=seed).ok
    # One Gaussian of the same variance keeps the 4 %: the same shift passes there.
    wide = Gaussian([0.0, 0.0], np.diag([4.5, 0.5]))
    assert assess_map(shifted, wide, wide).ok


@pytest.mark.parametrize("weight, words", [(0.14, r"1[1-7] %"), (0.1, r"(8|9|10|11|12) %")])
def test_a_small_component_left_empty_is_measured_and_named(weight, words):
    # The identity on N(0, I/4) -> (1 - w) N(0, I/4) + w N((5, 0), I/4) leaves the small component empty:
    # its KL estimate, -log(1 - w) = 0.15 or 0.11, is at or under the KL check's tolerance; the uncovered
    # share names it.
    eye = 0.25 * np.eye(2)
    source = Gaussian([0.0, 0.0], eye)
    target = GaussianMixture([1 - weight, weight], [[0.0, 0.0], [5.0, 0.0]], [eye, eye])
    verdict = assess_map(Affine(np.eye(2), [0.0, 0.0]), source, target, samples=2000)
    assert not verdict.ok
    assert verdict.uncovered == pytest.approx(weight, abs=0.03)
    assert verdict.kl == pytest.approx(-math.log(1 - weight), abs=0.03)
    assert re.search(f"leaves about {words} of the target's mass uncovered", verdict.message), verdict.message
    assert verdict.as_row()["uncovered_share"] == verdict.uncovered
    assert "rarely help" in verdict.message                      # no false hope: every seed fails alike
    assert re.fullmatch(f"it left about {words} of the target's mass uncovered", verdict.fault), verdict.fault
    assert after_retries(verdict) == verdict                     # still true after training was tried again
    short = after_short_run(verdict, 50)                         # not after 50 steps: the advice was measured on more
    assert short.message == (verdict.message.removesuffix(verdict.advice)
                             + " It was trained for only 50 steps: train it longer.")


def test_a_verdict_without_the_jacobian_checks_keeps_the_stratified_transport_check():
    # A map trained on samples is not judged by its Jacobian (the KL, misplaced and uncovered checks), but where the
    # target is a density its transport check still draws stratified samples: two plain samples of this target,
    # 14 % of it 5 units away, differ by far more than the small component left empty here.
    eye = 0.25 * np.eye(2)
    source = Gaussian([0.0, 0.0], eye)
    target = GaussianMixture([0.86, 0.14], [[0.0, 0.0], [5.0, 0.0]], [eye, eye])
    identity = Affine(np.eye(2), [0.0, 0.0])
    full = assess_map(identity, source, target, seed=3)
    bare = assess_map(identity, source, target, seed=3, jacobian=False)
    assert bare.kl is None and bare.misplaced is None and full.kl is not None
    # the uncovered share is still measured, and checked at SAMPLE_UNCOVERED_TOLERANCE (the 14 % left empty, with
    # the tails, comes to 15.1 %)
    assert bare.uncovered == full.uncovered and bare.uncovered > SAMPLE_UNCOVERED_TOLERANCE
    assert (bare.transport, bare.transport_noise) == (full.transport, full.transport_noise)
    assert not bare.ok and bare.failed == ("transport", "distance", "uncovered") and "uncovered" in bare.message
    points = target.sample(20_000, torch.Generator().manual_seed(0))
    from_points = assess_map(identity, source, points, seed=3)
    assert bare.transport_noise < 0.2 * from_points.transport_noise


def test_a_map_trained_on_samples_that_squeezes_far_apart_components_is_flagged():
    # Blobs 20 apart: the transport check's tolerance, a share of the target's variance (about 100, nearly all of it
    # the spread between the blobs), passes a map that squeezes each blob to a sliver. A review's Sinkhorn maps did
    # that and passed, 9-80 % L2-UVP off; the uncovered share (here about 0.6) now decides beside it.
    blob = 0.25 * np.eye(2)
    target = GaussianMixture([0.5, 0.5], [[0.0, -10.0], [0.0, 10.0]], [blob, blob])
    squeeze = Affine(np.diag([0.2, 1.0]), [0.0, 0.0])
    verdict = assess_map(squeeze, target, target, seed=0, jacobian=False)
    assert verdict.transport_excess < verdict.transport_tolerance                   # the transport check passes
    assert not verdict.ok and verdict.failed == ("uncovered",) and verdict.uncovered > 0.4
    assert verdict.message.startswith(f"The map is not the optimal map: it leaves about {round(100 * verdict.uncovered)}")
    assert assess_map(Affine(np.eye(2), [0.0, 0.0]), target, target, seed=0, jacobian=False).ok


@pytest.mark.parametrize("jacobian", [True, False])
def test_a_gross_kl_fails_a_map_the_transport_check_passes_on_components_far_apart(jacobian):
    # Narrow blobs 16 apart: the transport check allows an excess of 2.25 % of the variance (64, nearly all of it the
    # spread between the blobs), W2^2 = 1.44. A map that lands each blob 3 of its widths off (0.3, sd 0.1) or puts 2 %
    # of the mass midway shows 0.09 or 1.0 and passed; a trained map that sent each of two such blobs whole to a blob
    # turned by 90 degrees (L2-UVP 190 %) passed so. Their KL estimates, 4-9 nats, now fail them, for maps trained on
    # samples too (whose KL is otherwise left out), and name what went wrong.
    target = GaussianMixture([0.5, 0.5], [[-8.0, 0.0], [8.0, 0.0]], [0.01 * np.eye(2)] * 2)
    shifted = GaussianMixture([0.5, 0.5], [[-7.7, 0.0], [8.3, 0.0]], [0.01 * np.eye(2)] * 2)
    blobs = [[-8.0, 0.0], [0.0, 0.0], [8.0, 0.0]]
    midway = GaussianMixture([0.49, 0.02, 0.49], blobs, [0.09 * np.eye(2)] * 3)
    wide = GaussianMixture([0.5, 0.5], [[-8.0, 0.0], [8.0, 0.0]], [0.09 * np.eye(2)] * 2)
    identity = Affine(np.eye(2), [0.0, 0.0])
    for source, target, named, words in ((shifted, target, "uncovered", "of the target's mass uncovered"),
                                         (midway, wide, "misplaced", r"sends about [23] % of the source's mass")):
        for seed in range(2):
            verdict = assess_map(identity, source, target, seed=seed, jacobian=jacobian)
            assert verdict.transport_excess < verdict.transport_tolerance                # the transport check passes
            assert not verdict.ok and "kl" in verdict.failed and named in verdict.failed, verdict.message
            assert verdict.kl > 4.0 and re.search(words, verdict.message), verdict.message
        # The exact map passes, and a map trained on samples reports no KL where it does not decide.
        exact = assess_map(identity, target, target, seed=0, jacobian=jacobian)
        assert exact.ok and (exact.kl is None) == (not jacobian), exact.message


def test_a_map_covering_two_thirds_of_the_target_is_flagged_in_words():
    eye = 0.25 * np.eye(2)
    source = GaussianMixture([0.5, 0.5], [[-3.0, 1.0], [3.0, 1.0]], [eye, eye])
    target = GaussianMixture([1 / 3] * 3, [[-3.0, 1.0], [0.0, -1.0], [3.0, 1.0]], [eye] * 3)
    verdict = assess_map(Affine(np.eye(2), [0.0, 0.0]), source, target, samples=2000)
    assert not verdict.ok
    assert verdict.kl == pytest.approx(math.log(1.5), abs=0.05)  # the identity puts 1/2 where q has 1/3
    assert verdict.covered == pytest.approx(2 / 3, abs=0.04)
    assert "a third of the target's mass uncovered" in verdict.message


def test_a_shifted_map_is_flagged_with_samples_only():
    model, source, target = _exact_gaussian_map()
    shifted = Affine(model.A.detach(), model.b.detach() + torch.tensor([1.0, 0.0]))
    points = target.sample(3000, torch.Generator().manual_seed(1))
    verdict = assess_map(shifted, source, points)
    assert not verdict.ok and verdict.kl is None and verdict.failed == ("transport", "distance")
    # W2^2(T#p, q) <= E|T(x) - T*(x)|^2 = 1 for a shift by 1, with equality here (the shift is all the error
    # there is): the excess over two target samples' W2^2 estimates it
    assert 0.8 < math.sqrt(verdict.transport_excess) <= 1.05
    assert verdict.samples == 1000 and "as if its points were off from the optimal map's by about 0.9" in verdict.message
    exact = assess_map(model, source, points)
    assert exact.ok and abs(exact.transport_excess) < 0.02 * exact.transport_scale, exact.message


def test_too_few_points_to_judge_are_said_so_and_never_pass():
    # A 3 x 3 photo's recolouring passed at 4 points a sample: two samples of one target that small differ by chance
    # as much as a wrong map's from it (a review).
    from gradnet_core.verdict import MIN_SAMPLES

    model, source, target = _exact_gaussian_map()
    points = target.sample(2 * MIN_SAMPLES - 2, torch.Generator().manual_seed(1))
    few = assess_map(model, source, points)
    assert not few.ok and few.failed == ("samples",) and few.samples == MIN_SAMPLES - 1
    assert few.message.startswith(f"Too few points to judge the map: the target has {2 * MIN_SAMPLES - 2}, and the "
                                  f"check needs {2 * MIN_SAMPLES}")
    assert few.fault == "too few points to judge it" and after_short_run(few, 5) == few
    enough = assess_map(model, source, target.sample(2 * MIN_SAMPLES, torch.Generator().manual_seed(1)))
    assert enough.ok and enough.samples == MIN_SAMPLES
    assert assess_map(model, source, target, samples=50).ok     # a small sample asked for is the caller's choice


def test_the_reference_w2_of_the_same_target_samples_is_computed_once(monkeypatch):
    # A digit or mixture training judges two maps on one target with one seed: the target-vs-target W2s are the same.
    import gradnet_core.verdict as verdict

    verdict._w2sq.cache_clear()
    calls = []
    monkeypatch.setattr(verdict, "exact_w2", lambda a, b: calls.append(1) or exact_w2(a, b))
    model, source, target = _exact_gaussian_map()
    first = assess_map(model, source, target, seed=3)
    assert len(calls) == 1 + verdict.TRANSPORT_REPLICATES                # the map's W2 and the reference's
    shifted = Affine(model.A.detach(), model.b.detach() + torch.tensor([0.5, 0.0]))
    second = assess_map(shifted, source, target, seed=3)
    assert len(calls) == 2 + verdict.TRANSPORT_REPLICATES                # the map's W2 only
    assert second.transport_noise == first.transport_noise and second.transport > first.transport
    assess_map(model, source, target, seed=4)                            # other samples: computed
    assert len(calls) == 3 + 2 * verdict.TRANSPORT_REPLICATES


def test_a_map_that_is_not_monotone_is_never_called_optimal():
    torch.manual_seed(0)
    verdict = assess_map(MLPMap(2, width=8, depth=1), Gaussian([0.0, 0.0], np.eye(2)), Gaussian([0.0, 0.0], np.eye(2)))
    assert not verdict.ok and "not" in verdict.message
    assert verdict.uncovered is None                              # no inverse to measure it with


def test_training_returns_a_verdict_and_can_skip_it():
    source, target = Gaussian([1.0, -1.0], [[1.0, 0.7], [0.7, 1.0]]), Gaussian([0.0, 0.0], np.eye(2))
    torch.manual_seed(0)
    good = train(MGradNetM(2, width=16, modules=4), source, target,
                 TrainConfig(steps=300, lr=3e-2, lr_schedule="cosine", device="cpu"))
    assert good.verdict is not None and good.verdict.ok, good.verdict.message
    assert good.verdict.kl < KL_TOLERANCE
    short = train(MGradNetM(2, width=16, modules=4), source, target, TrainConfig(steps=2, device="cpu"))
    assert not short.verdict.ok
    skipped = train(MGradNetM(2, width=16, modules=4), source, target, TrainConfig(steps=2, assess=False))
    assert skipped.verdict is None


def test_an_image_target_is_judged_at_the_bandwidth_its_schedule_ends_at():
    # Digits are handed to train() as KDEs at bandwidth_start (a heavy blur the schedule anneals away);
    # the verdict must compare the map with the image at bandwidth_end, not with that blur.
    source = ImageDensity(load_bundled(0, 0), bandwidth=1e-2)
    target = ImageDensity(load_bundled(4, 0), bandwidth=1e-2)
    model = MGradNetM(2, width=8, modules=2)
    config = TrainConfig(steps=3, batch_size=64, seed=5,
                         objective=MongeAmpere(bandwidth_start=1e-2, bandwidth_end=1e-3))
    result = train(model, source, target, config)
    assert source.bandwidth == target.bandwidth == 1e-2          # the caller's densities are not changed
    sharp = [ImageDensity(load_bundled(d, 0), bandwidth=1e-3) for d in (0, 4)]
    expected = assess_map(model, *sharp, seed=5)
    blurred = assess_map(model, source, target, seed=5)
    assert result.verdict.distance == pytest.approx(expected.distance, rel=1e-4)
    assert result.verdict.noise == pytest.approx(expected.noise, rel=1e-4)
    assert abs(blurred.noise - expected.noise) > 0.1 * expected.noise


def test_a_sample_only_map_is_judged_against_target_samples():
    # A Sinkhorn map of the 2 -> 3 preset within a few % L2-UVP of the exact map has an untrained
    # Jacobian: its KL estimate alone would call it wrong. Judged as it was trained, it passes.
    source, target = mixture_presets()["ICASSP 2023 example: 2 -> 3 components"]
    name, kwargs = MODEL_PRESETS["mixture"]
    model = seeded_map(name, 0, dim=2, **kwargs)
    config = train_preset("mixture", seed=0, device="cpu",
                          **objective_overrides("Sinkhorn divergence (target samples only)", "mixture"))
    # 400 of the app's 500 steps: L2-UVP 1.8 % for seeds 0-1 (500: 1.5 %). At 250 steps (2.5-3.3 %) the mixture's
    # transport check, which flags maps from about 3 % off, read 2.3-2.5 % of the variance against its 2.25 %.
    result = train(model, source, target, replace(config, steps=400))
    g = torch.Generator().manual_seed(7)
    x, y = source.sample(1500, g), target.sample(1500, g)
    assert evaluate_map(model, source, target, x, barycentric_projection(x, y))["l2_uvp"] < 5.0
    assert result.verdict.kl is None and result.verdict.ok, result.verdict.message
    # Judged with the density, the KL estimate is far above its tolerance; in two dimensions the transport check
    # decides, and it passes the map, which is right.
    with_density = assess_map(model, source, target, seed=0)
    assert with_density.kl > KL_TOLERANCE and with_density.ok, with_density.message


def test_above_three_dimensions_the_energy_distance_decides():
    # Two samples of 1000 points in 8-D are far apart in W2 whatever their law: no transport check there.
    source, target = Gaussian(np.zeros(8), np.eye(8)), Gaussian(np.full(8, 0.5), np.eye(8))
    exact = Affine(np.eye(8), np.full(8, 0.5))
    assert exact.dim > TRANSPORT_MAX_DIM
    verdict = assess_map(exact, source, target)
    assert verdict.ok and verdict.transport is None and verdict.transport_excess is None, verdict.message
    assert "energy distance" in verdict.message
    shifted = assess_map(Affine(np.eye(8), np.full(8, 1.5)), source, target)
    assert not shifted.ok and "distance" in shifted.failed


def _bars(rows, weights):
    image = np.zeros((28, 28))
    for row, weight in zip(rows, weights):
        image[row:row + 2, 6:22] = weight
    return ImageDensity(image, bandwidth=1e-3)


def test_mass_sent_between_the_strokes_is_measured_and_named():
    # The identity from three bars onto the outer two sends the middle bar's mass (13 %) where the target is thin.
    identity = Affine(np.eye(2), np.zeros(2))
    target = _bars([6, 20], [1.0, 1.0])
    verdict = assess_map(identity, _bars([6, 13, 20], [1.0, 0.3, 1.0]), target)
    assert 0.10 < verdict.misplaced < 0.17 and verdict.uncovered < 0.05
    assert not verdict.ok and re.search(r"sends about 1[0-7] % of the source's mass where the target is thin",
                                        verdict.message)
    exact = assess_map(identity, target, target)
    assert exact.ok and exact.misplaced < 0.02, exact.message


def test_the_failed_checks_are_named():
    model, source, target = _exact_gaussian_map()
    assert assess_map(model, source, target).failed == ()
    identity = Affine(np.eye(2), np.zeros(2))
    verdict = assess_map(identity, _bars([6, 13, 20], [1.0, 0.3, 1.0]), _bars([6, 20], [1.0, 1.0]))
    assert "misplaced" in verdict.failed and not verdict.ok
    assert "monotone" in assess_map(MLPMap(2), source, target).failed


def test_the_advice_after_a_bare_part_depends_on_the_target():
    # A mixture's empty component stays empty for every seed (the test above); a digit's bare stroke does
    # not always (results/robustness/ab-retry/): the words say which.
    identity = Affine(np.eye(2), np.zeros(2))
    verdict = assess_map(identity, _bars([6, 20], [1.0, 1.0]), _bars([6, 13, 20], [1.0, 1.0, 1.0]))
    assert "uncovered" in verdict.failed, verdict.message
    assert "one time in five" in verdict.message and "rarely help" not in verdict.message
    # after training was tried again (train's attempts, or the run back) another seed is no longer the advice
    retried = after_retries(verdict)
    assert "one time in five" not in retried.message and retried.message.endswith(retried.advice)
    assert retried.message.startswith(verdict.message.removesuffix(verdict.advice)) and retried.failed == verdict.failed
    # A mixture's bare component: more steps rarely help. A single Gaussian left bare is a map not trained far
    # enough (a review's N(0, I) onto a thin Gaussian: 87 % off after 200 steps, 2 % after 2000): train longer.
    two = GaussianMixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [0.3 * np.eye(2)] * 2)
    mixture = assess_map(Affine(np.eye(2), np.zeros(2)), Gaussian([-3.0, 0.0], 0.3 * np.eye(2)), two)
    assert "uncovered" in mixture.failed and "rarely help" in mixture.message, mixture.message
    thin = Gaussian([2.0, -2.0], [[9.0, -0.95 * 3 * 0.05], [-0.95 * 3 * 0.05, 0.0025]])
    gaussian = assess_map(Affine(np.eye(2), np.zeros(2)), Gaussian([0.0, 0.0], np.eye(2)), thin)
    assert "uncovered" in gaussian.failed, gaussian.message
    assert gaussian.advice == TRY_AGAIN and "rarely help" not in gaussian.message and "part of the target" not in \
        gaussian.message


def test_mass_put_between_components_is_not_called_uncovered():
    # The identity from one wide Gaussian onto two close components covers both (nothing is bare) but puts a
    # fifth of its mass between them: KL(T#p || q) ≈ 0.24. The words must not claim uncovered mass (the app once
    # said "leaves about a quarter of the target's mass uncovered" over a picture with every component full).
    eye = 0.25 * np.eye(2)
    target = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [eye, eye])
    verdict = assess_map(Affine(np.eye(2), np.zeros(2)), Gaussian([0.0, 0.0], np.diag([1.0, 0.25])), target,
                         samples=2000)
    assert "kl" in verdict.failed and "uncovered" not in verdict.failed and verdict.uncovered < 0.02
    assert "left uncovered or put where the target has little" in verdict.message, verdict.message
    assert "it leaves about" not in verdict.message
