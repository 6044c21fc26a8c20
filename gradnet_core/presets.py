"""Named problem and training presets shared by the app, the experiments and the benchmarks.

One place for the numbers, so the app's defaults, the CLI and the benchmarks never disagree.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any, Sequence

import numpy as np

from .densities import Gaussian, GaussianMixture, covariance_2d
from .objectives import AdversarialW1, ConstrainedFlow, GaussianMomentKL, MongeAmpere, ReverseKL, SinkhornLoss
from .training import TrainConfig

__all__ = ["PAPER_GAUSSIAN", "gaussian_presets", "mixture_presets", "TRAIN_PRESETS", "MODEL_PRESETS",
           "SAMPLE_LOSS_SETTINGS", "OBJECTIVE_CHOICES", "DEFAULT_OBJECTIVE", "MIXTURE_OBJECTIVES", "MIXTURE_WITHHELD",
           "objective_overrides", "train_preset", "mixture_from_rows", "random_gaussian_pair", "parse_settings",
           "with_settings"]

#: The paper's 2-D problem: N([1, -1], [[1, .7], [.7, 1]]) -> N(0, I).
PAPER_GAUSSIAN = {
    "source": {"mean": [1.0, -1.0], "cov": [[1.0, 0.7], [0.7, 1.0]]},
    "target": {"mean": [0.0, 0.0], "cov": [[1.0, 0.0], [0.0, 1.0]]},
}


def gaussian_presets() -> dict[str, tuple[Gaussian, Gaussian]]:
    """Named 2-D Gaussian pairs (source, target)."""
    p = PAPER_GAUSSIAN
    return {
        "Paper: N([1,-1], [[1,.7],[.7,1]]) -> N(0, I)": (
            Gaussian(p["source"]["mean"], p["source"]["cov"]), Gaussian(p["target"]["mean"], p["target"]["cov"])),
        "Stretch and rotate": (
            Gaussian([0.0, 0.0], [[2.0, 0.0], [0.0, 0.5]]), Gaussian([1.0, 1.0], [[0.6, -0.4], [-0.4, 1.2]])),
    }


def random_gaussian_pair(seed: int) -> tuple[Gaussian, Gaussian]:
    """A random 2-D pair (source, target): means in [-2, 2]^2, standard deviations in [0.4, 1.6],
    correlations in [-0.8, 0.8], reproducible from ``seed``."""
    rng = np.random.default_rng(seed)

    def one() -> Gaussian:
        (mx, my), (sx, sy), r = rng.uniform(-2, 2, 2), rng.uniform(0.4, 1.6, 2), rng.uniform(-0.8, 0.8)
        return Gaussian([mx, my], covariance_2d(sx, sy, r))

    return one(), one()


def mixture_from_rows(rows: list[dict[str, float]]) -> GaussianMixture:
    """A 2-D mixture from table rows with keys weight, mean_x, mean_y, std_x, std_y, corr."""
    weights, means, covs = [], [], []
    for i, row in enumerate(rows, start=1):
        weights.append(float(row["weight"]))
        means.append([float(row["mean_x"]), float(row["mean_y"])])
        try:
            covs.append(covariance_2d(row["std_x"], row["std_y"], row["corr"]))
        except ValueError as err:
            raise ValueError(f"covariance of component {i}: {err}") from None
    return GaussianMixture(weights, means, covs)


def _row(w: float, mx: float, my: float, sx: float = 0.5, sy: float = 0.5, r: float = 0.0) -> dict[str, float]:
    return {"weight": w, "mean_x": mx, "mean_y": my, "std_x": sx, "std_y": sy, "corr": r}


#: Named mixture pairs as table rows (source rows, target rows).
MIXTURE_ROWS: dict[str, tuple[list[dict[str, float]], list[dict[str, float]]]] = {
    "ICASSP 2023 example: 2 -> 3 components": (
        [_row(0.5, -2.0, 0.0), _row(0.5, 2.0, 0.0)],
        [_row(1 / 3, -3.0, 1.0), _row(1 / 3, 0.0, -1.0), _row(1 / 3, 3.0, 1.0)],
    ),
    "Four corners -> N(0, I)": (
        [_row(0.25, -2.0, -2.0), _row(0.25, 2.0, -2.0), _row(0.25, -2.0, 2.0), _row(0.25, 2.0, 2.0)],
        [_row(1.0, 0.0, 0.0, 1.0, 1.0)],
    ),
}


def mixture_presets() -> dict[str, tuple[GaussianMixture, GaussianMixture]]:
    """Named 2-D mixture pairs (source, target)."""
    return {name: (mixture_from_rows(s), mixture_from_rows(t)) for name, (s, t) in MIXTURE_ROWS.items()}


#: Model architecture per preset: registry name and constructor arguments (dim added by the caller).
#: The app's presets are the fastest settings measured to reach MSE <= 1e-3 (benchmarks/README.md);
#: the "-paper" presets are the GradNetOT authors' settings (docs/method.md §7).
MODEL_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "gaussian": ("mGradNet-M", {"width": 32, "modules": 4}),
    "gaussian-paper": ("mGradNet-M", {"width": 32, "modules": 4}),
    "mixture": ("mGradNet-M", {"width": 32, "modules": 8}),
    "digits": ("mGradNet-M", {"width": 32, "modules": 4}),
    "digits-paper": ("mGradNet-M", {"width": 128, "modules": 32}),
}

#: Training settings per preset.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    # 200 steps at 3e-2 with a cosine decay end within 2-4e-4 of whitening (the paper's 1000 steps at
    # 1e-2 end within 1e-4): about 1 s on one CPU core.
    # A map the verdict flags goes on from its weights for 800 steps on the plain Monge-Ampere loss (2026-12-04):
    # pairs the Gaussians page's sliders make far from the presets (standard deviations 0.05 against 3 on one axis,
    # two tiny Gaussians 8.5 apart, two wide ones with correlations +-0.9) ended the 200 steps flagged at L2-UVP
    # 50-120 %; with it 0.0-0.44 % for seeds 0-1, passed, in 1.5 CPU s (docs/method.md 4.14). Maps that pass, the
    # presets' among them, are not touched.
    "gaussian": TrainConfig(steps=200, lr=3e-2, lr_schedule="cosine",
                            fallback=TrainConfig(steps=800, lr=1e-2, lr_schedule="cosine",
                                                 objective=MongeAmpere(smoothing=0.0)),
                            fallback_start="trained"),
    # The authors' notebooks (gaussians, high_dim_gaussians): Adam 1e-2, batch 1000, 1000 steps,
    # gradient norms clipped at 2.
    "gaussian-paper": TrainConfig(steps=1000, lr=1e-2, clip_grad=2.0),
    # 500 steps at 3e-2 match 2000 at 1e-2 on the mixture presets (MSE to the barycentric projection).
    # The objective's default continuation in the target's smoothness (docs/method.md §4.5) is what
    # fills the middle component of the 2 -> 3 preset: L2-UVP 1.1 % against 32.6 % without it.
    # Trained on KL(T#p || q), not the Monge–Ampère residual's mean |r|: on the 22 mixture cases of the
    # robustness benchmark (seeds 0-1, 1500 test points) L2-UVP <= 5 % on 84 % of runs against 61 %, median
    # 2.4 % against 2.7 %, at the same cost. The |r| of a map that covers part of a component is small
    # almost everywhere; the likelihood keeps paying for every point pushed where q is thin. Larger
    # smoothing, cosine decay, more steps or modules, Sinkhorn, sliced-W2 and mass-covering terms were
    # tried against it on the same runs and lost or cost 3x (docs/method.md §4.6). Direction "auto" (train back
    # from the target when the map is flagged) passed 36 of 44 runs against 35 but kept inverses that send rare
    # tail points of the source hundreds of units away, unflagged (results/robustness/ab-auto-mixtures/).
    # One attempt: two (docs/method.md §4.9), replayed, promised 70.5 -> 75.0 % and 77.3 -> 81.8 % of runs passing,
    # but run on the same 22 cases and seeds (results/robustness/attempts-mixtures/) they gave 70.5 -> 70.5 % and
    # 77.3 -> 79.5 %, and the retry kept two more wrong maps that the verdict passes (11 of 22 above the threshold
    # unflagged, against 9 of 23): of the 14 flagged maps above the threshold, the fresh start fixed one.
    # A moving average of the weights over the last 30 % of the steps, kept when it pushes the source nearer the
    # target than the last step's weights (docs/method.md §4.10): at the constant lr 3e-2 the last step's weights
    # jitter. On the 22 cases x seeds 0-3 (88 runs) and 22 fresh cases x 2 seeds, paired: 100 -> 107 of 132 runs
    # within L2-UVP 5 %, median 2.33 -> 1.95 % and 2.06 -> 1.94 %, runs above 10 % 13 -> 9; about 0.4 s a run. The
    # benchmark run on the cases of strat-mixtures/ (results/robustness/avg-mixtures/): 73.9 -> 79.5 % of 88 runs
    # passing, five runs brought under the threshold and none over it.
    # A fallback on the Sinkhorn divergence (docs/method.md §4.11): when the verdict flags the KL map, the network
    # trains again from its starting weights on 300 steps of 256 target samples (about 5 s), which see the target as
    # a whole: a component KL leaves empty gets its share. Also when the verdict passes the map with its transport
    # excess above half the tolerance: the near misses at 5-6 %. On the 88 runs of avg-mixtures/ (fallback-mixtures/):
    # 79.5 -> 85.2 % within L2-UVP 5 % with the fallback on flagged maps, 90.9 % with fallback_from=0.5 (22 runs
    # train it), runs above 10 % 7 -> 4, median train CPU 4.1 -> 4.2 s; the map nearer the target is kept (the KL
    # map where the Sinkhorn one is further: random 14, 10.7 -> 19 %). 500 Sinkhorn steps fixed no more runs.
    # The fallback at a cosine-decayed rate from 0.2, 600 steps (about 10 s): at 3e-2 for 300 steps random 12's map
    # bridged its two components, as if the weights could not grow to the size a sharp split needs (docs/method.md
    # §4.11). On the 2 -> 3 preset and the four runs flagged after the first fallback (seeds 0-3, the fallback
    # alone): random 12 14-17 -> 4.3-4.4 %, random 14 (2->4) 19 -> 4.3-4.9 %, the 2 -> 3 preset 3.9-4.1 -> 2.2-2.8 %;
    # lr 0.1 or 0.3, constant or not, or 300 steps did less. On the 88 runs (results/robustness/fallback-cosine-
    # mixtures/): 90.9 -> 97.7 % within L2-UVP 5 % (POT 95.5 %), runs above 10 % 4 -> 0, the 2 -> 3 preset seeds 0-3
    # at 2.2, 2.8, 0.6, 0.7 % (POT 5.2, 2.9, 0.9, 1.5 %); median train CPU about 4.3 s, a run that trains the
    # fallback 12-16 s.
    # fallback_from 0.25, not 0.5 (2026-12-03): with the fused kernels (docs/method.md §2.3) the rounding moved, and
    # near the trigger that decides: the 2 -> 3 preset's KL maps for seeds 0-1 passed at 30-35 % of the tolerance,
    # scored 4.8 and 5.9 % (seed 1 unflagged) and were kept. On the 88 runs at 3 draws (results/robustness/fused-
    # mixtures/): 84 -> 85 of 88 within L2-UVP 5 % (POT 86), every run above it flagged (3 of 3), 22 runs train the
    # fallback, the 2 -> 3 preset seeds 0-3 at 3.0, 3.3, 0.7, 0.8 % (POT 3.7, 4.1, 0.8, 1.5 %); median train CPU 4.4 s,
    # a run with the fallback 10-13 s (the Sinkhorn loop in C made it about 5 s shorter).
    # The Sinkhorn phase after every KL map, going on from the weights it reached at 0.03 (2026-12-04, docs/method.md
    # §4.13): the held-out near misses were seams the KL map put in the wrong place and the transport check passed
    # (random 4 of --seed 4 at 0.18 of its tolerance, 6.4-6.6 %); 600 warm Sinkhorn steps took all twelve runs tried,
    # misses and passes, to 1.5-5.6 % (random 4 2.7-3.2 %, random 3 17.9 -> 2.7 %, random 10 9.8 -> 1.9 %, random 12
    # 1.29 -> 1.5 %: the one run it made worse), where the fallback from the starting weights had left them at
    # 5-6.6 %; the typed app case whose small component KL leaves empty 0.9-1.75 % for seeds 0-3 (1.65-3.1 % before).
    # The warm map is kept when the verdict passes it (training._nearer_of_two): the transport check ranked random 4's
    # two maps the wrong way. Batch 512 or lr 0.01-0.05 or 900 steps did no better for the time.
    # The second phase is KL again, without smoothing, beside a debiased Sinkhorn term (section 3.8) of weight 100 that
    # falls to 0 over two thirds of its 900 steps (2026-12-05, docs/method.md 4.16): the Sinkhorn term moves mass
    # between components as the Sinkhorn phase before it did, and KL then sharpens each component's shape, which the
    # Sinkhorn divergence at eps 1e-2 (a narrow component's whole width in the rescaled frame) could not see. It
    # squeezed 6 narrow blobs into streaks (1.3 % by L2-UVP, three quarters of the target bare, flagged) and left the
    # seams of rings turned by a third of a step in the wrong place (5-7.5 %). On the fresh cases of --seed 31, paired
    # (results/robustness/s33-fresh/): mixtures 43 -> 44 of 44 runs within L2-UVP 5 %, median 1.06 -> 0.90 %; layouts
    # 19 -> 19 of 24, median 0.97 -> 0.80 %, the streaks 1.3 -> 1.0 % and passed; train CPU +3 %.
    "mixture": TrainConfig(steps=500, lr=3e-2, average_from=0.7, objective=ReverseKL(),
                           fallback=TrainConfig(steps=900, batch_size=256, lr=0.03, lr_schedule="cosine",
                                                average_from=0.7,
                                                objective=ReverseKL(smoothing=0.0, global_weight=100.0,
                                                                    global_fraction=0.67, global_epsilon=1e-2)),
                           fallback_from=0.0, fallback_start="trained"),
    # A small network, a large cosine-decayed learning rate, half batches and a schedule that stops at
    # bandwidth 1e-3 (ending at 1e-4 as the authors do needs their 10000 steps; in 1000 it leaves the map
    # noisier and more often wrong). The early global Sinkhorn term (weight 100 falling to 0 over 30 % of
    # the steps) frees maps stuck between strokes: on 16 drawn and MNIST pairs that had failed, median
    # MSE 3.6e-3 -> 2.0e-3. 1000 steps, not 600: on 9 MNIST and drawn pairs that had failed, 2 of 9
    # -> 6 of 9 at or below 2e-3 (seed 0), about 8 s on one core; 1500 and 2000 steps gained little more,
    # and on the 5 hardest (seeds 0-1) a stronger, longer or wider Sinkhorn term, a wider start, lr 0.2 or
    # 1, batch 1000, 8 or 16 modules, width 64, the l2 residual, the KL objective and an affine start
    # (300 steps fitting the moment-matched Bures map first: 1 of 10 passing against 5) were no better or
    # worse. On the
    # robustness benchmark's first 10 cases per family: MNIST 67 -> 83 %, drawings 70 -> 80 % of runs at
    # or below 2e-3 (results/robustness/after-2/). The schedule's end, on the first 10 MNIST and 10 drawn
    # pairs (2 draws): 5e-4 passed 13 of 20 for seed 0 against 17 at 1e-3; 1.5e-3 and 2e-3 passed 18,
    # and for seed 1 2e-3 and 3e-3 passed 18 of 20 like 1e-3 (medians 9.0-9.3e-4 all): MNIST 7 -> 4 went
    # from 7.1/8.6e-3 to 4.6/5.0e-3 at 2e-3 and easy pairs got a little worse. Not beyond the seeds'
    # spread, so 1e-3 stays. 8 modules instead of 4 on all 90 MNIST pairs (seeds 0-1): 136 against 133 of 180
    # runs passing, same median, 16 % more time (results/robustness/ab-modules-8/); the Sinkhorn term over 60 %
    # of the steps: 136 of 180, same median (ab-global-0.6/). Every run onto MNIST's 4 fails either way.
    # What does move it: direction "auto" (docs/method.md §4.8), a second network trained from the target back
    # to the source when the verdict flags the map, its inverse kept when the verdict passes it
    # (results/robustness/full-2/: MNIST 133 -> 146 of 180 runs passing, onto the 4 0 -> 6 of 18; drawings 32 of
    # 40 either way; median train CPU 7.5 -> 9.0 s, a pair trained back 14-20 s).
    # Two attempts (docs/method.md §4.9): a map still flagged after training back is trained again from a fresh
    # start. With the stratified transport check, on seeds 2-3 of 45 MNIST pairs and 20 drawings: MNIST 78 ->
    # 82 %, drawings 90 -> 95 % of runs passing, replayed (results/robustness/strat-digits/) and run
    # (attempts-digits/), the same as keeping the better of the two seeds; train CPU per run median 11.2 ->
    # 11.9 s, mean 13.6 -> 19.5 s, at most 51 s (a pair flagged twice trains four networks).
    # A fallback that goes on from the trained weights on the Sinkhorn divergence (docs/method.md §4.12), instead of
    # the second attempt: the Monge–Ampère residual pulls a map onto a target far from convex (MNIST's 4 and 5) away
    # from the optimal map even when training starts next to it, while the Sinkhorn divergence, which compares the
    # mapped points with the target's samples as a whole, takes a flagged map there. 1500 steps at lr 0.02 from the
    # flagged forward map: MNIST 2, 5, 0, 6 -> 4 from 6.4-11.5e-3 to 1.0-1.6e-3, where 3000 steps of it from the
    # starting weights reached 2.3-2.9e-3. On the 45 MNIST pairs of --seed 4 (results/robustness/s21-digits-fallback/):
    # 73 -> 87 of 90 runs within MSE 2e-3 with one attempt (86 with two), every flagged run fixed; on those of
    # --seed 6, which nothing was chosen on, 79 -> 88 of 90; drawings 34 -> 36 and 37 -> 40 of 40. A flagged run
    # takes 17-23 s of CPU (forward, back and the fallback), the median run 2.6-2.7 s.
    # 600 of those steps after every map, not 1500 after a flagged one (2026-12-04, docs/method.md §4.13): the runs
    # left above 2e-3 were near misses the verdict passed (transport excess 0.2-0.97 of its tolerance, as for many
    # maps well under it). Going on from the Monge-Ampere map on twelve drawing and MNIST runs (research scripts):
    # near misses 7 -> wave 2.02 -> 0.81e-3, 8 -> check 2.11 -> 0.46, MNIST 9 -> 2 2.24 -> 0.74, passes 0.39 -> 0.33
    # and 1.75 -> 0.84, flagged maps 2 -> 4 and 5 -> 4 7.2, 6.4 -> 1.36, 1.19 (1500 steps: 1.12, 1.01), 1 -> 4
    # 13.2 -> 2.6 (1500: 2.6); 300 steps did nearly as well (0.5-1.5e-3), at half the added 7 s. On the benchmark
    # (results/robustness/s22-digits-warm/, paired with s21-digits-fallback/): MNIST 87 -> 88 and 88 -> 88 of 90,
    # drawings 36 -> 38 and 40 -> 40 of 40, medians 0.75-0.98e-3 -> 0.50-0.59e-3; train CPU median 2.6 -> 8.4 s,
    # longest 20-23 -> 11-13.5 s.
    # Batches of 384 in that phase, not 500 (2026-12-04): its Sinkhorn loop, quadratic in the batch, was 40 % of a digit
    # training. Paired run for run on fresh cases (results/robustness/s28-fresh/, three draws): MSE ratio median 1.009
    # (IQR 0.97-1.06) on MNIST --seed 11, 1.001 on drawings --seed 12, 1.01 on 30 MNIST pairs of --seed 9 (256: 1.02,
    # worse in 72 % of runs); every run still within 2e-3; train CPU median 4.6 -> 3.1 s and 4.7 -> 3.2 s.
    "digits": TrainConfig(steps=1000, batch_size=500, lr=0.5, optimizer="adamw", weight_decay=1e-4,
                          lr_schedule="cosine", clip_grad=10.0, direction="auto",
                          objective=MongeAmpere(bandwidth_end=1e-3, global_weight=100.0),
                          fallback=TrainConfig(steps=600, batch_size=384, lr=0.02, lr_schedule="cosine",
                                               objective=SinkhornLoss(epsilon=1e-3)), fallback_from=0.0,
                          fallback_start="trained"),
    # The authors' MNIST settings (docs/method.md §7).
    "digits-paper": TrainConfig(steps=10000, lr=1.0, optimizer="adamw", weight_decay=1e-4, lr_schedule="step",
                                lr_step_size=1000, lr_gamma=0.5, clip_grad=10.0),
}


#: TrainConfig overrides per sample-only objective, on top of a problem's preset. The adversarial
#: loss uses the critic of docs/method.md §3 (3 x 64, gradient penalty 10, 5 critic steps per map step)
#: and a smaller map learning rate than the density losses. Its critic learns at 1e-3, not 1e-4: at
#: 1e-4, 1500 steps left the 2 -> 3 mixture's maps (docs/method.md §8) at W2 1.7 to 2.5 from the
#: target, further than no map at all (1.2).
SAMPLE_LOSS_SETTINGS: dict[str, dict[str, Any]] = {
    "gaussian-kl": {"objective": GaussianMomentKL(), "steps": 1000, "batch_size": 1000, "lr": 1e-2},
    "wasserstein": {"objective": AdversarialW1(critic_lr=1e-3, critic_steps=5), "steps": 1500, "batch_size": 256,
                    "lr": 1e-3},
    # lr 3e-2, the mixture preset's and so the rate the mixtures page trains this objective at: on the 22 mixture
    # cases (seeds 0-1) 42 of 44 runs within L2-UVP 10 % against 38 at 1e-2 (2e-2: 41), median 3.9 % against 4.7 %,
    # same time; 1000 steps at 1e-2 did as well at twice the time, a cosine decay worse
    # (results/robustness/sample-only-3/).
    "sinkhorn": {"objective": SinkhornLoss(), "steps": 500, "batch_size": 500, "lr": 3e-2},
}


DEFAULT_OBJECTIVE = "Monge–Ampère loss (Adam)"

#: Training objectives a user can pick -> TrainConfig overrides on top of the problem's preset (the
#: inputs then set steps and lr; a flow's steps are its outer x inner steps).
OBJECTIVE_CHOICES: dict[str, dict[str, Any]] = {
    DEFAULT_OBJECTIVE: {"objective": MongeAmpere()},
    "KL divergence (Adam)": {"objective": ReverseKL()},
    # The flows run outer x inner Adam steps at a constant 1e-2, whatever the problem's preset, and are shown as they
    # end: no fallback on another objective after them.
    "Constrained gradient flow, explicit": {"objective": ConstrainedFlow(variant="explicit"), "steps": 1000,
                                            "lr": 1e-2, "lr_schedule": "constant", "fallback": None},
    # Stable for large steps (results/flow): the implicit scheme with tau = 1.
    "Constrained gradient flow, implicit": {"objective": ConstrainedFlow(variant="implicit", tau=1.0, outer_steps=20),
                                            "steps": 1000, "lr": 1e-2, "lr_schedule": "constant", "fallback": None},
    "Gaussian-moment KL (target samples only)": {k: v for k, v in SAMPLE_LOSS_SETTINGS["gaussian-kl"].items()
                                                 if k not in ("steps", "lr")},
    "Adversarial W1 (target samples only)": {k: v for k, v in SAMPLE_LOSS_SETTINGS["wasserstein"].items()
                                             if k not in ("steps", "lr")},
    "Sinkhorn divergence (target samples only)": {k: v for k, v in SAMPLE_LOSS_SETTINGS["sinkhorn"].items()
                                                  if k not in ("steps", "lr")},
}


#: What the mixtures page offers, its default first, and what it leaves out and why. Measured on all 22
#: mixture cases of the robustness benchmark (seeds 0-1, L2-UVP against the exact map on 1500 test points, pass at
#: 10 %), with the weights' moving average of the mixture preset (results/robustness/avg-sample-only/): Sinkhorn
#: median 3.1 % (44 of 44 runs pass; 42 without the average, sample-only-4/), Gaussian-moment KL 11.7 % (13 of 44),
#: adversarial W1 17.6 % (15 of 44); the density objectives in results/robustness/avg-mixtures/ (KL: 79.5 % of
#: runs within 5 %).
MIXTURE_OBJECTIVES: tuple[str, ...] = ("KL divergence (Adam)", DEFAULT_OBJECTIVE,
                                       "Sinkhorn divergence (target samples only)")
MIXTURE_WITHHELD: dict[str, str] = {
    # results/robustness/avg-sample-only/: the 22 mixture cases, seeds 0-1.
    "Gaussian-moment KL": "it matches only the target's mean and covariance, so its maps miss a mixture's "
                          "shape (median L2-UVP 12 % against the exact map; 13 of 44 runs within 10 %)",
    "Adversarial W1": "its maps missed the exact map by a median L2-UVP of 18 % (15 of 44 runs within 10 %)",
    "Constrained gradient flow": "it needs a log-concave target, and a mixture of several components is not",
}


def objective_overrides(label: str, preset: str) -> dict[str, Any]:
    """TrainConfig overrides for the objective a user picked (an ``OBJECTIVE_CHOICES`` label) on top
    of training preset ``preset``. Where the label names the preset's own objective class, the preset's
    objective is kept with its tuned settings (the digits' bandwidth end and Sinkhorn term, say):
    a label's bare ``MongeAmpere()`` would silently drop them."""
    if label not in OBJECTIVE_CHOICES:
        raise ValueError(f"unknown objective {label!r}; choose one of {sorted(OBJECTIVE_CHOICES)}")
    overrides = dict(OBJECTIVE_CHOICES[label])
    own = train_preset(preset).objective
    if type(overrides["objective"]) is type(own):
        overrides["objective"] = own
    return overrides


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of a training preset with some fields replaced."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
    return replace(TRAIN_PRESETS[name], **overrides)


#: Where a setting of ``parse_settings`` goes: the network's arguments, TrainConfig, or its objective.
SETTING_PARTS = ("model", "train", "objective")


def parse_settings(items: Sequence[str], presets: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``"PRESET.FIELD=VALUE"`` strings (``digits.steps=1500``, ``digits.objective.bandwidth_end=2e-3``,
    ``mixture.model.modules=16``) -> ``{preset: {"model" | "train" | "objective": {field: value}}}``.

    FIELD is a ``TrainConfig`` field other than ``seed`` and ``device`` (the caller's), ``objective.NAME``
    (a setting of the preset's objective) or ``model.NAME`` (an argument of its network); VALUE is read as JSON
    where it can be (numbers, ``true``/``false``, ``null``, and for ``fallback`` an object of the fields to replace
    in the preset's fallback: ``mixture.fallback={"lr": 0.2, "steps": 600}``) and as a string otherwise.
    ValueError, naming the item, for an unknown preset or TrainConfig field or an item without ``=``;
    ``with_settings`` checks the objective's and network's names.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    train_fields = {f.name for f in fields(TrainConfig)} - {"objective", "seed", "device"}
    for item in items:
        key, sep, raw = item.partition("=")
        preset, _, field = key.strip().partition(".")
        if not sep or not field:
            raise ValueError(f"setting {item!r} must look like PRESET.FIELD=VALUE, e.g. digits.steps=1500")
        if preset not in presets:
            raise ValueError(f"setting {item!r}: no preset {preset!r}; choose from {', '.join(presets)}")
        part, _, name = field.partition(".") if field.split(".")[0] in ("model", "objective") else ("train", "", field)
        if not name or (part == "train" and name not in train_fields):
            raise ValueError(f"setting {item!r}: {field!r} is not a training setting, objective.NAME or model.NAME "
                             f"(training settings: {', '.join(sorted(train_fields))})")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.strip()
        out.setdefault(preset, {}).setdefault(part, {})[name] = value
    return out


def with_settings(model_kwargs: dict[str, Any], config: TrainConfig, settings: dict[str, dict[str, Any]] | None
                  ) -> tuple[dict[str, Any], TrainConfig]:
    """A preset's network arguments and TrainConfig with one preset's ``parse_settings`` entry applied;
    ValueError for a name the objective does not have or a value TrainConfig refuses."""
    if not settings:
        return model_kwargs, config
    train_settings = dict(settings.get("train", {}))
    if isinstance(train_settings.get("fallback"), dict):
        # mixture.fallback={"lr": 0.2}: those fields of the preset's fallback replaced (a fresh one without it)
        base = config.fallback.to_dict() if config.fallback is not None else {}
        train_settings["fallback"] = TrainConfig.from_dict({**base, **train_settings["fallback"]})
    try:
        config = replace(config, **train_settings)
        if settings.get("objective"):
            config = config.with_objective(**settings["objective"])
    except TypeError as err:          # dataclasses.replace with a field the class does not have
        raise ValueError(f"{config.objective.name} objective has no such setting: {err}") from err
    return {**model_kwargs, **settings.get("model", {})}, config
