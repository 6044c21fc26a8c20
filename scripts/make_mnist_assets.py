"""Build ``gradnet_core/data/mnist/`` (package data): a few real MNIST digits per class, from the MNIST test set.

Source: the MNIST test set (``t10k-images.idx3-ubyte``, ``t10k-labels.idx1-ubyte``), read from the IDX
files in ``--mnist DIR`` with ``gradnet_core.images.read_idx`` (nothing is downloaded). For each digit
0-9 the script takes the ``--per-digit`` test images closest (Euclidean) to that digit's mean test
image, which are clean and typical rather than the first arbitrary ones, and writes them unchanged
(MNIST's own 28 x 28 frame, 8-bit grayscale, digit bright on black) as PNGs ``{digit}_{k}.png``,
k = 0 for the closest, with the test-set index of each in ``provenance.csv``. Deterministic.
Provenance and licence: assets/README.md.

Run from the repository root:  python scripts/make_mnist_assets.py --mnist /path/to/mnist
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from gradnet_core.images import _find_mnist_file, read_idx

#: The package's bundled MNIST digits, in this repository (not in whatever copy is installed).
MNIST_OUT = Path(__file__).resolve().parents[1] / "gradnet_core" / "data" / "mnist"


def build(mnist: Path, out_dir: Path, per_digit: int) -> list[Path]:
    """Write ``per_digit`` PNGs per digit and provenance.csv into ``out_dir``; returns the PNG paths."""
    images = read_idx(_find_mnist_file(mnist, "t10k-images", "idx3-ubyte"))          # (10000, 28, 28) uint8
    labels = read_idx(_find_mnist_file(mnist, "t10k-labels", "idx1-ubyte"))
    flat = images.reshape(len(images), -1).astype(np.float64)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("[0-9]_*.png"):
        old.unlink()
    written, rows = [], []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        distance = np.linalg.norm(flat[members] - flat[members].mean(axis=0), axis=1)
        for k, index in enumerate(members[np.argsort(distance, kind="stable")[:per_digit]]):
            path = out_dir / f"{digit}_{k}.png"
            Image.fromarray(images[index]).save(path, optimize=True)
            written.append(path)
            rows.append({"file": path.name, "digit": digit, "t10k_index": int(index)})
    with open(out_dir / "provenance.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "digit", "t10k_index"])
        writer.writeheader()
        writer.writerows(rows)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder with MNIST's IDX files")
    parser.add_argument("--out", type=Path, default=MNIST_OUT, help="output folder (default: gradnet_core/data/mnist)")
    parser.add_argument("--per-digit", type=int, default=3, help="examples per digit (default: 3)")
    args = parser.parse_args()
    if args.per_digit < 1:
        parser.error("--per-digit must be at least 1")
    paths = build(args.mnist, args.out, args.per_digit)
    print(f"wrote {len(paths)} digits to {args.out}")


if __name__ == "__main__":
    main()
