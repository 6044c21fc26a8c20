"""Build ``gradnet_core/data/digits/`` (package data): MNIST-style 28 x 28 PNGs of handwritten digits from scikit-learn.

Source: scikit-learn's ``load_digits`` (its bundled copy of the UCI "Optical Recognition of
Handwritten Digits" test set; 1797 images of 8 x 8 pixels with 17 gray levels, 0..16). For each
digit 0-9 the script takes the ``--per-digit`` images closest (Euclidean) to that digit's mean
image, which are clean and typical rather than the first arbitrary ones, upsamples each smoothly
(bicubic) into a 20 px box centred by centre of mass in a 28 x 28 frame, as MNIST does
(``gradnet_core.images.mnist_frame``), and writes 8-bit grayscale PNGs ``{digit}_{k}.png``,
k = 0 for the closest. The output is deterministic.

Run from the repository root:  python scripts/make_digit_assets.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from gradnet_core.images import mnist_frame

#: The package's bundled digits, in this repository (not in whatever copy of gradnet_core is installed).
DIGITS_DIR = Path(__file__).resolve().parents[1] / "gradnet_core" / "data" / "digits"


def representative_indices(images: np.ndarray, labels: np.ndarray, digit: int, count: int) -> list[int]:
    """Indices of the ``count`` images of ``digit`` closest to the digit's mean; ``images: (n, 64)``."""
    members = np.flatnonzero(labels == digit)
    centre = images[members].mean(axis=0)
    distance = np.linalg.norm(images[members] - centre, axis=1)
    return [int(i) for i in members[np.argsort(distance, kind="stable")[:count]]]


def build(out_dir: Path, per_digit: int) -> list[Path]:
    """Write ``per_digit`` PNGs per digit into ``out_dir`` (old ``*_*.png`` removed); returns paths."""
    data = load_digits()
    images = data.images.astype(np.float64) / 16.0          # (1797, 8, 8), ink bright, in [0, 1]
    flat = images.reshape(len(images), -1)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("[0-9]_*.png"):
        old.unlink()
    written = []
    for digit in range(10):
        for k, index in enumerate(representative_indices(flat, data.target, digit, per_digit)):
            frame = mnist_frame(images[index])                # (28, 28) in [0, 1]
            path = out_dir / f"{digit}_{k}.png"
            Image.fromarray(np.rint(frame * 255).astype(np.uint8)).save(path, optimize=True)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DIGITS_DIR, help="output folder (default: gradnet_core/data/digits)")
    parser.add_argument("--per-digit", type=int, default=3, help="examples per digit (default: 3)")
    args = parser.parse_args()
    if args.per_digit < 1:
        parser.error("--per-digit must be at least 1")
    paths = build(args.out, args.per_digit)
    print(f"wrote {len(paths)} images to {args.out}")


if __name__ == "__main__":
    main()
