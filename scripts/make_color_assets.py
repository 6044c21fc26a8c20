"""Render the bundled colour-transfer examples: a daytime landscape and a sunset landscape.

Both scenes are drawn procedurally with numpy (sky gradient, sun with a glow, three ranges of rolling
hills, a lake that reflects the sky, a little deterministic grain) at 4x the output size and reduced
with Pillow's box filter, so edges are anti-aliased. Nothing is downloaded; rerunning the script
rewrites identical files.

    python scripts/make_color_assets.py            # --out gradnet_core/data/color --width 160 --height 120
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SUPERSAMPLE = 4

#: The package's bundled colour images, in this repository.
COLOR_DIR = Path(__file__).resolve().parents[1] / "gradnet_core" / "data" / "color"

#: Per scene: sky colours from the top to the horizon, the sun (centre x, y as fractions of the
#: frame, radius as a fraction of the height, colour, glow colour), hill colours from the farthest
#: range to the nearest, and how much of the sky colour the lake reflects.
SCENES = {
    "daytime": {
        "sky": [(0.0, (38, 98, 196)), (0.6, (112, 170, 232)), (1.0, (196, 226, 246))],
        "sun": (0.78, 0.18, 0.07, (255, 250, 220), (255, 240, 170)),
        "glow": 0.35,
        "hills": [(122, 168, 120), (74, 146, 64), (46, 110, 40)],
        "lake": 0.65,
        "seed": 1,
    },
    "sunset": {
        "sky": [(0.0, (42, 30, 92)), (0.45, (176, 64, 104)), (0.8, (246, 130, 58)), (1.0, (255, 196, 92))],
        "sun": (0.3, 0.36, 0.1, (255, 224, 120), (255, 120, 40)),
        "glow": 0.9,
        "hills": [(120, 56, 88), (72, 34, 66), (34, 18, 40)],
        "lake": 0.8,
        "seed": 2,
    },
}

HORIZON = 0.58      # fraction of the height where the sky meets the land
LAKE_TOP = 0.8      # the lake fills the bottom of the frame below this fraction


def _gradient(stops: list[tuple[float, tuple[int, int, int]]], t: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour ramp: ``t`` in [0, 1] -> RGB floats in [0, 1]."""
    positions = np.array([p for p, _ in stops])
    colours = np.array([c for _, c in stops], dtype=np.float64) / 255.0
    return np.stack([np.interp(t, positions, colours[:, k]) for k in range(3)], axis=-1)


def render(scene: dict, width: int, height: int) -> np.ndarray:
    """The scene as an ``(height, width, 3)`` uint8 array."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    rng = np.random.default_rng(scene["seed"])
    ys, xs = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]  # fractions of the frame
    aspect = w / h

    # sky: vertical ramp from the top to the horizon
    image = _gradient(scene["sky"], np.clip(ys / HORIZON, 0.0, 1.0))

    # sun: a soft glow and a disc
    cx, cy, radius, disc, glow = scene["sun"]
    dist = np.hypot((xs - cx) * aspect, ys - cy)
    halo = scene["glow"] * np.exp(-(dist / (3.0 * radius)) ** 2)[..., None]
    image = image * (1.0 - halo) + np.array(glow) / 255.0 * halo
    inside = np.clip((radius - dist) * h, 0.0, 1.0)[..., None]
    image = image * (1.0 - inside) + np.array(disc) / 255.0 * inside

    # hills: three ranges of summed sines, farther ranges higher and paler
    for k, colour in enumerate(scene["hills"]):
        phases = rng.uniform(0, 2 * np.pi, 3)
        ridge = HORIZON - 0.16 + 0.07 * k + 0.05 * np.sin(2 * np.pi * (1.1 + 0.4 * k) * xs[0] + phases[0]) \
            + 0.03 * np.sin(2 * np.pi * (2.7 + k) * xs[0] + phases[1]) \
            + 0.012 * np.sin(2 * np.pi * 7.3 * xs[0] + phases[2])
        land = np.clip((ys - ridge[None, :]) * h, 0.0, 1.0)[..., None]
        # shading: a little darker towards the bottom of each range
        shade = 1.0 - 0.25 * np.clip((ys - ridge[None, :]) / 0.3, 0.0, 1.0)[..., None]
        image = image * (1.0 - land) + np.array(colour) / 255.0 * shade * land

    # lake: the sky, mirrored and darkened, below LAKE_TOP
    mirrored = _gradient(scene["sky"], np.clip((1.0 - ys) / (1.0 - LAKE_TOP) * 0.6 + 0.4, 0.0, 1.0))
    ripples = 0.04 * np.sin(2 * np.pi * 60 * ys + 3 * np.sin(2 * np.pi * 4 * xs))
    water = np.clip((ys - LAKE_TOP) * h, 0.0, 1.0)[..., None]
    reflection = scene["lake"] * mirrored * (1.0 + ripples[..., None])
    image = image * (1.0 - water) + reflection * water

    image = image + rng.normal(0.0, 0.012, image.shape)   # grain, so no colour is a single point
    big = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    return np.asarray(big.resize((width, height), Image.Resampling.BOX))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=COLOR_DIR, help="output folder (default: gradnet_core/data/color)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, scene in SCENES.items():
        path = args.out / f"{name}.png"
        Image.fromarray(render(scene, args.width, args.height)).save(path, optimize=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
