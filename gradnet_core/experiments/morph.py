"""One digit morph: train a map from one digit image to another, measure it against the barycentric
projection, and write the morph as a GIF, an interactive animation and PNG snapshots.

``source`` and ``target`` are a digit 0-9 (bundled example 0 and 1, or the paper's MNIST images with
``mnist``) or a path to an image file. ``save`` writes the trained map with ``save_map``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


from ..files import save_map
from .common import ExperimentResult, ProgressFn, ProgressTracker, machine_description, output_dir, write_csv, \
    write_html, write_json
from .digits_table import (DIGIT_PRESETS, EVAL_BANDWIDTH, digit_pair_images, digit_pair_metrics, preset_config,
                           train_digit_pair)
from .figures import snapshot_grid_png
from .paper import paper_table_value

__all__ = ["run_morph", "add_arguments", "run"]

_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _writable(path: Path) -> Path:
    """``path`` once its folder exists and a file can be written there; ValueError saying why not."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as err:
        raise ValueError(f"cannot write the map to {path}: {err.strerror}") from err
    if not existed:
        path.unlink()
    return path


def run_morph(source: str | int = "0", target: str | int = "4", out: str | Path | None = None,
              preset: str = "fast", steps: int | None = None, mnist: str | Path | None = None,
              save: str | Path | None = None, seed: int = 0, n_test: int = 1000,
              on_progress: ProgressFn | None = None, write_files: bool = True) -> ExperimentResult:
    """Train ``source`` -> ``target`` with the preset, evaluate it and write the morph's figures."""
    from ..plotting import Panel, animation_figure, animation_gif, position_colours, square_bounds

    _, _, config = preset_config(preset, steps, seed)
    src_img, tgt_img = digit_pair_images(source, target, mnist)
    if save is not None:
        save = _writable(Path(save))        # before training, so a bad path costs nothing
    started = time.perf_counter()
    label = f"{source} -> {target}"
    tracker = ProgressTracker([config.steps], on_progress)
    model, result, config = train_digit_pair(src_img, tgt_img, preset, steps, seed, tracker.callback(0, label))
    tracker.finish(0, label)
    metrics, pts = digit_pair_metrics(model, src_img, tgt_img, EVAL_BANDWIDTH, n_test, seed)
    digits = [int(s) if str(s).strip().isdigit() and len(str(s).strip()) == 1 else None for s in (source, target)]
    paper = paper_table_value(*digits) if None not in digits and mnist is not None else float("nan")
    row = {"source": str(source), "target": str(target), **metrics, "paper_mse": paper,
           "stopped": result.stopped, "steps": result.steps, "final_loss": result.final_loss,
           "train_s": result.elapsed, "preset": preset,
           "images": "MNIST" if mnist is not None else "bundled digits / files"}
    panels = [Panel(title="learned map", mapped=pts["mapped"]),
              Panel(title="barycentric projection", mapped=pts["truth"])]
    bounds = square_bounds(pts["x"], pts["mapped"], pts["truth"], pts["target"])
    # Rounded to 3 decimals and 600 points: the HTML stays a few hundred kB.
    small = [Panel(title=p.title, mapped=p.mapped.round(3)) for p in panels]
    figures = {"animation": animation_figure(pts["x"].round(3), small, pts["target"].round(3), frames=16,
                                             show_target=True, max_points=600, bounds=bounds)}
    summary: dict[str, Any] = {
        "source": str(source), "target": str(target), "preset": preset, "train_preset": DIGIT_PRESETS[preset],
        "steps": config.steps, "stopped": result.stopped, "train_s": result.elapsed, **metrics,
        "paper_mse": paper, "machine": machine_description(),
    }
    files: list[Path] = []
    if save is not None:
        save_map(model, save, extra={"source": str(source), "target": str(target), "preset": preset,
                                     "training": config.to_dict(), "metrics": metrics})
        files.append(save)
        summary["saved_map"] = str(save)
    if write_files:
        folder = output_dir(out, "morph")
        files.append(write_csv(folder / "morph.csv", [row]))
        gif = folder / "morph.gif"
        gif.write_bytes(animation_gif(pts["x"], panels, pts["target"], show_target=True, bounds=bounds,
                                      frames=20, size=240, max_points=800))
        files.append(gif)
        frames = [[(1 - t) * pts["x"] + t * p.mapped for t in _TIMES] for p in panels]
        files.append(snapshot_grid_png(folder / "snapshots.png", frames, position_colours(pts["x"]),
                                       [f"learned map\nMSE {metrics['mse']:.2e}", "barycentric\nprojection"],
                                       [f"t = {t:g}" for t in _TIMES], bounds, cell=170, background=pts["target"]))
        files.append(write_html(folder / "animation.html", figures["animation"]))
        files.append(write_json(folder / "summary.json", summary))
    return ExperimentResult("morph", [row], summary, files, time.perf_counter() - started, figures)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``morph`` subcommand's own options (``__main__`` adds --out, --json, --threads, --no-progress)."""
    parser.add_argument("--source", default="0",
                        help="a digit 0-9 (bundled example 0, or MNIST with --mnist) or an image path")
    parser.add_argument("--target", default="4",
                        help="a digit 0-9 (bundled example 1, or MNIST with --mnist) or an image path")
    parser.add_argument("--preset", choices=["fast", "paper"], default="fast")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--mnist", default=None, metavar="DIR", help="read digits from MNIST IDX files in DIR")
    parser.add_argument("--save", default=None, metavar="PATH", help="save the trained map (safetensors) here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=1000, help="samples for the barycentric projection")


def run(args: argparse.Namespace, on_progress: ProgressFn | None = None) -> ExperimentResult:
    """Run the ``morph`` subcommand from parsed arguments."""
    return run_morph(args.source, args.target, args.out, preset=args.preset, steps=args.steps, mnist=args.mnist,
                     save=args.save, seed=args.seed, n_test=args.n_test, on_progress=on_progress)
