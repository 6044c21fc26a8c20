"""Paper Table I: morph digit a into digit b for every ordered pair, and measure the learned map
against the barycentric projection of the exact OT plan between 1000 samples of each digit.

Images: by default the bundled digits (source: example 0 of digit a, target: example 1 of digit b);
with ``mnist`` a folder of MNIST IDX files, as the authors chose them (first training image of a,
second of b). Both densities are image KDEs; training anneals the bandwidth (docs/method.md §4) and the
evaluation uses the authors' final bandwidth, 1e-4, whatever the preset ends at. Presets: "fast" =
the app's ``digits`` preset, "paper" = the authors' ``digits-paper`` (mGradNet-M 32 x 128, AdamW
lr 1, 10000 steps).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..densities import ImageDensity
from ..ground_truth import barycentric_projection
from ..images import load_bundled, load_image, mnist_pair
from ..metrics import evaluate_map, map_mse
from ..networks import TransportMap, seeded_map
from ..presets import MODEL_PRESETS, parse_settings, train_preset, with_settings
from ..training import Progress, TrainConfig, TrainResult, train
from .common import (ExperimentResult, ProgressFn, ProgressTracker, machine_description,
                     output_dir, run_tasks, write_csv, write_html, write_json)
from .figures import heatmap_png
from .paper import PAPER_DIGITS, paper_table_median, paper_table_value

__all__ = ["DIGIT_PRESETS", "EVAL_BANDWIDTH", "digit_image", "digit_pair_images", "digit_densities", "preset_config",
           "train_digit_pair", "digit_pair_metrics", "reference_noise", "run_digits_table", "add_arguments", "run"]

#: Kernel variance at which maps are measured: the authors' final bandwidth, whatever a preset ends at.
EVAL_BANDWIDTH = 1e-4

#: Command-line preset -> the name of its model and training preset in ``gradnet_core.presets``.
DIGIT_PRESETS = {"fast": "digits", "paper": "digits-paper"}


def digit_image(spec: str | int, index: int = 0) -> np.ndarray:
    """A ``(28, 28)`` digit image: a digit 0-9 picks bundled example ``index``; anything else is read as
    an image file."""
    text = str(spec).strip()
    if text.isdigit() and len(text) == 1:
        return load_bundled(int(text), index)
    if not Path(text).is_file():
        raise ValueError(f"{text!r} is neither a digit 0-9 nor an image file")
    return load_image(text)


def digit_pair_images(source: str | int, target: str | int, mnist: str | Path | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Source and target images as the paper chose them: with ``mnist``, the first MNIST training image of
    the source digit and the second of the target digit; otherwise bundled examples 0 and 1. An image
    path on either side is read as is."""
    src, tgt = str(source).strip(), str(target).strip()
    is_digit = lambda s: s.isdigit() and len(s) == 1  # noqa: E731
    if mnist is not None and is_digit(src) and is_digit(tgt):
        return mnist_pair(mnist, int(src), int(tgt))
    if mnist is not None and (is_digit(src) or is_digit(tgt)):
        # One side is a file: take the MNIST image of the other side as the pair would.
        digit = int(src) if is_digit(src) else int(tgt)
        a, b = mnist_pair(mnist, digit, digit)
        return (a, digit_image(tgt)) if is_digit(src) else (digit_image(src), b)
    return digit_image(src, 0), digit_image(tgt, 1)


def digit_densities(source: np.ndarray, target: np.ndarray, bandwidth: float) -> tuple[ImageDensity, ImageDensity]:
    """Image KDEs of both images (float32, the models' precision) at kernel variance ``bandwidth``."""
    return (ImageDensity(np.asarray(source, np.float32), bandwidth=bandwidth),
            ImageDensity(np.asarray(target, np.float32), bandwidth=bandwidth))


def preset_config(preset: str, steps: int | None, seed: int, settings: dict[str, dict[str, Any]] | None = None
                  ) -> tuple[str, dict[str, Any], TrainConfig]:
    """(network name, network arguments, training config) of a digit preset ("fast" or "paper"), with
    ``settings`` (one preset's ``presets.parse_settings`` entry) applied before ``steps`` and ``seed``."""
    if preset not in DIGIT_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(DIGIT_PRESETS)}")
    name = DIGIT_PRESETS[preset]
    model_name, kwargs = MODEL_PRESETS[name]
    kwargs, config = with_settings(dict(kwargs), train_preset(name), settings)
    return model_name, kwargs, replace(config, seed=seed, device="cpu").with_steps(steps)


def train_digit_pair(source: np.ndarray, target: np.ndarray, preset: str = "fast", steps: int | None = None,
                     seed: int = 0, callback: Callable[[Progress], Any] | None = None,
                     settings: dict[str, dict[str, Any]] | None = None) -> tuple[TransportMap, TrainResult, TrainConfig]:
    """Train the preset's network to push image ``source`` onto image ``target`` (both ``(H, W)``); returns
    the trained map (``TrainResult.map``), the result and the configuration."""
    model_name, kwargs, config = preset_config(preset, steps, seed, settings)
    src, tgt = digit_densities(source, target, config.objective.bandwidth_start)
    model = seeded_map(model_name, seed, dim=2, **kwargs)
    result = train(model, src, tgt, config, callback=callback)
    return result.map, result, config


def digit_pair_metrics(model: TransportMap, source: np.ndarray, target: np.ndarray, bandwidth: float,
                       n: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """evaluate_map of ``model`` against the barycentric projection of the exact plan between ``n``
    source and ``n`` target samples at kernel variance ``bandwidth``; returns the metrics and the
    points (x, mapped, truth, target samples), all ``(n, 2)``."""
    src, tgt = digit_densities(source, target, bandwidth)
    gen = torch.Generator().manual_seed(seed + 7919)
    x = src.sample(n, gen)
    y = tgt.sample(n, gen)
    truth = barycentric_projection(x, y)
    metrics = evaluate_map(model, src, tgt, x, truth)
    with torch.no_grad():
        mapped = model(x).double().numpy()
    return metrics, {"x": x.double().numpy(), "mapped": mapped, "truth": truth.numpy(), "target": y.double().numpy()}


def reference_noise(source: np.ndarray, target: np.ndarray, bandwidth: float, n: int = 1000, seed: int = 0,
                    repeats: int = 2) -> float:
    """The MSE that even the exact OT map would score against the barycentric projection.

    The reference is built from ``n`` random target samples, so it is noisy: with the source samples
    fixed, two projections onto independent target samples differ by twice the noise's variance.
    Returns half their MSE, averaged over ``repeats`` draws: the floor below which no map's MSE
    against the reference can be expected to go.
    """
    src, tgt = digit_densities(source, target, bandwidth)
    gen = torch.Generator().manual_seed(seed + 104729)
    x = src.sample(n, gen)
    halves = []
    for _ in range(repeats):
        first = barycentric_projection(x, tgt.sample(n, gen))
        second = barycentric_projection(x, tgt.sample(n, gen))
        halves.append(0.5 * map_mse(first, second))
    return float(np.mean(halves))


def run_digits_table(out: str | Path | None = None, digits: Sequence[int] = (0, 1, 2, 3, 4), preset: str = "fast",
                     steps: int | None = None, mnist: str | Path | None = None,
                     pairs: Sequence[tuple[int, int]] | None = None, seed: int = 0, n_test: int = 1000,
                     on_progress: ProgressFn | None = None, write_files: bool = True, jobs: int | None = 1,
                     seeds: int = 3, draws: int = 3, backend: str = "local",
                     settings: Sequence[str] = ()) -> ExperimentResult:
    """Train and evaluate every ordered pair of ``digits`` (or just ``pairs``); write CSV, heatmaps.

    Each pair trains with ``seeds`` training seeds (``seed``, ``seed + 1``, ...) and each map is scored
    on ``draws`` independent evaluation draws; a pair's numbers are the medians over those runs, with
    their minimum and maximum (``digits_table.csv``); every run is in ``digits_runs.csv``. ``jobs``
    trains that many maps at once, in worker processes or on Ray (``backend``, see ``run_tasks``). ``settings``
    changes the preset: ``"digits.FIELD=VALUE"`` (``"digits-paper...."`` for the paper preset;
    ``presets.parse_settings``), recorded in summary.json."""
    for name, value in (("seeds", seeds), ("draws", draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    digits = [int(d) for d in digits]
    if not digits or any(not 0 <= d <= 9 for d in digits) or len(set(digits)) != len(digits):
        raise ValueError(f"digits must be distinct numbers from 0 to 9; got {digits}")
    todo = [(a, b) for a in digits for b in digits] if pairs is None else [(int(a), int(b)) for a, b in pairs]
    stray = [p for p in todo if p[0] not in digits or p[1] not in digits]
    if stray:
        raise ValueError(f"pair {stray[0][0]}-{stray[0][1]} uses a digit outside --digits {digits}")
    if preset not in DIGIT_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(DIGIT_PRESETS)}")
    chosen = parse_settings(settings, [DIGIT_PRESETS[preset]]).get(DIGIT_PRESETS[preset])
    model_name, model_kwargs, config = preset_config(preset, steps, seed, chosen)
    images = {p: digit_pair_images(p[0], p[1], mnist) for p in todo}   # fail on a bad file before training
    started = time.perf_counter()
    runs = [(a, b, s) for a, b in todo for s in range(seed, seed + seeds)]
    tasks = [(a, b, *images[(a, b)], preset, steps, s, n_test, draws, chosen) for a, b, s in runs]
    tracker = ProgressTracker([config.steps] * len(runs), on_progress)
    per_run = run_tasks(_digit_pair_run, tasks, [f"{a} -> {b}, seed {s}" for a, b, s in runs], tracker, jobs,
                        backend=backend)
    run_rows = [row for rows_of_run in per_run for row in rows_of_run]
    rows = [_pair_summary([r for r in run_rows if (r["source"], r["target"]) == pair]) for pair in todo]
    ours = _matrix(rows, digits, "mse")
    # the paper's whole table over these digits, run or not, so the two panels compare at a glance
    paper = np.array([[paper_table_value(a, b) for b in digits] for a in digits])
    mses = np.array([r["mse"] for r in rows], float)
    median = paper_table_median()
    summary = {
        "preset": preset, "train_preset": DIGIT_PRESETS[preset], "steps": config.steps,
        "model": {"name": model_name, **model_kwargs},
        "train_config": config.to_dict(), "settings": list(settings),
        "images": ("MNIST training images (source: 1st of its digit, target: 2nd, as the authors)"
                   if mnist is not None else "bundled digits (example 0 -> example 1)"),
        "digits": digits, "n_test": n_test, "seed": seed, "seeds": seeds, "draws": draws, "jobs": jobs,
        "backend": backend,
        "statistic": f"per pair: median over {seeds} training seeds x {draws} evaluation draws",
        "mse": {f"{r['source']}->{r['target']}": r["mse"] for r in rows},
        "median_mse": float(np.nanmedian(mses)) if mses.size else None,
        "max_mse": float(np.nanmax(mses)) if mses.size else None,
        "paper_median_mse": median,
        "median_reference_noise": float(np.median([r["reference_noise"] for r in rows])) if rows else None,
        "pairs_at_or_below_paper_median": int(np.count_nonzero(mses <= median)),
        "pairs": len(rows),
        "train_s_per_pair": float(np.median([r["train_s"] for r in run_rows])) if run_rows else None,
        "pair_spread": {f"{r['source']}->{r['target']}": [r["mse_min"], r["mse_max"]] for r in rows},
        "paper": PAPER_DIGITS, "machine": machine_description(),
    }
    figures = {"heatmap": _heatmap_figure(ours, paper, digits)}
    files: list[Path] = []
    if write_files:
        folder = output_dir(out, "digits-table")
        files.append(write_csv(folder / "digits_table.csv", rows))
        files.append(write_csv(folder / "digits_runs.csv", run_rows))
        files.append(heatmap_png(folder / "heatmap.png",
                                 [(f"ours ({preset} preset, {config.steps} steps)", ours),
                                  ("paper (Table I, MNIST)", paper)],
                                 digits, digits, "source", "target digit"))
        files.append(write_html(folder / "heatmap.html", figures["heatmap"]))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("digits-table", rows, summary, files, time.perf_counter() - started, figures)


def _digit_pair_run(task: tuple, callback) -> list[dict[str, Any]]:
    """Train one pair with one seed and score it on each evaluation draw; a row per draw. Module
    level: worker processes run it."""
    a, b, src_img, tgt_img, preset, steps, seed, n_test, draws, settings = task
    model, result, config = train_digit_pair(src_img, tgt_img, preset, steps, seed, callback, settings)
    verdict = result.verdict.as_row() if result.verdict is not None else {}
    rows = []
    for draw in range(draws):
        # Evaluation draws are independent of the training seed: every seed is scored on the same draws.
        metrics, _ = digit_pair_metrics(model, src_img, tgt_img, EVAL_BANDWIDTH, n_test, 1000 * draw)
        rows.append({"source": a, "target": b, "seed": seed, "draw": draw, "mse": metrics["mse"],
                     "paper_mse": paper_table_value(a, b),
                     "reference_noise": reference_noise(src_img, tgt_img, EVAL_BANDWIDTH, n_test, 1000 * draw),
                     **{k: v for k, v in metrics.items() if k != "mse"}, **verdict,
                     "stopped": result.stopped, "steps": result.steps, "final_loss": result.final_loss,
                     "train_s": result.elapsed, "s_per_step": result.elapsed / max(result.steps, 1)})
    return rows


def _pair_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row for a pair: medians over its seeds and draws, the MSE's minimum and maximum, and
    how many of its maps the verdict flagged."""
    first = runs[0]
    # A verdict's number can be None (its KL for a map the fallback trained on samples, docs/method.md §4.12): the
    # median is over the runs that have it, NaN when none has.
    numeric = [k for k in dict.fromkeys(k for r in runs for k in r)
               if all(r.get(k) is None or (isinstance(r[k], (int, float)) and not isinstance(r[k], bool)) for r in runs)
               and k not in ("source", "target", "seed", "draw", "paper_mse")]
    row: dict[str, Any] = {"source": first["source"], "target": first["target"]}
    row["mse"] = float(np.median([r["mse"] for r in runs]))
    row["mse_min"], row["mse_max"] = float(min(r["mse"] for r in runs)), float(max(r["mse"] for r in runs))
    row["paper_mse"] = first["paper_mse"]
    row.update({k: _median_of_numbers([r.get(k) for r in runs]) for k in numeric if k != "mse"})
    row["runs"] = len(runs)
    if "verdict" in first:
        row["flagged"] = sum(1 for r in runs if r["verdict"] != "ok") // max(1, len({r["draw"] for r in runs}))
    return row


def _median_of_numbers(values: list[Any]) -> float:
    """The median of the values that are numbers (None left out); NaN when there is none."""
    numbers = [float(v) for v in values if v is not None]
    return float(np.median(numbers)) if numbers else math.nan


def _matrix(rows: list[dict[str, Any]], digits: list[int], key: str) -> np.ndarray:
    m = np.full((len(digits), len(digits)), np.nan)
    for r in rows:
        m[digits.index(r["source"]), digits.index(r["target"])] = r[key]
    return m


def _heatmap_figure(ours: np.ndarray, paper: np.ndarray, digits: list[int]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    both = np.concatenate([ours.ravel(), paper.ravel()])
    both = both[np.isfinite(both) & (both > 0)]
    lo, hi = (np.log10(both.min()), np.log10(both.max())) if both.size else (-4.0, -2.0)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ours", "paper (Table I)"), horizontal_spacing=0.12)
    labels = [str(d) for d in digits]
    for col, m in ((1, ours), (2, paper)):
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(np.isfinite(m) & (m > 0), np.log10(m), np.nan)
        text = [[("n/a" if not np.isfinite(v) else f"{v:.2e}") for v in row] for row in m]
        fig.add_trace(go.Heatmap(z=z, x=labels, y=labels, text=text, texttemplate="%{text}", zmin=lo, zmax=hi,
                                 colorscale="YlGnBu", showscale=col == 2,
                                 colorbar={"title": "log10 MSE"},
                                 hovertemplate="source %{y} -> target %{x}<br>MSE %{text}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="target digit", row=1, col=col)
        fig.update_yaxes(title_text="source digit", autorange="reversed", row=1, col=col)
    fig.update_layout(title="MSE of the learned map against the barycentric projection (1000 samples)",
                      template="plotly_white", height=430)
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``digits-table`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="digits; all ordered pairs run")
    parser.add_argument("--preset", choices=["fast", "paper"], default="fast",
                        help='"fast": the app\'s digits preset; "paper": 32 modules x 128, 10000 steps, AdamW lr 1')
    parser.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--mnist", default=None, metavar="DIR",
                        help="folder with MNIST's train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    parser.add_argument("--pairs", nargs="+", default=None, metavar="A-B",
                        help="run only these ordered pairs, e.g. 0-4 3-1 (default: all pairs of --digits)")
    parser.add_argument("--seed", type=int, default=0, help="first training seed (weights and batches)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per pair (medians are reported)")
    parser.add_argument("--draws", type=int, default=3, help="evaluation draws per trained map")
    parser.add_argument("--n-test", type=int, default=1000, help="samples for the barycentric projection")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="PRESET.FIELD=VALUE",
                        help="change the preset (repeatable): digits.attempts=1, digits.direction=forward, "
                             "digits.objective.bandwidth_end=2e-3, digits.model.modules=8 (digits-paper.... for "
                             "--preset paper)")


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``digits-table`` subcommand from parsed arguments."""
    return run_digits_table(args.out, digits=args.digits, preset=args.preset, steps=args.steps, mnist=args.mnist,
                            pairs=_parse_pairs(args.pairs), seed=args.seed, n_test=args.n_test,
                            on_progress=on_progress, jobs=args.jobs, seeds=args.seeds, draws=args.draws,
                            backend=args.backend, settings=args.settings)


def _parse_pairs(pairs: Sequence[str] | None) -> list[tuple[int, int]] | None:
    if pairs is None:
        return None
    parsed = []
    for text in pairs:
        try:
            a, b = text.split("-")
            parsed.append((int(a), int(b)))
        except ValueError:
            raise ValueError(f"a pair is written SOURCE-TARGET, e.g. 0-4; got {text!r}") from None
    return parsed
