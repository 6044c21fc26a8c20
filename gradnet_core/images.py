"""Digit images in MNIST form: uploads, canvas drawings, bundled examples and MNIST IDX files.

``read_image`` is the one image-file reader of the package (digits here, pictures in ``color``): size,
format and pixel-count checks before decoding, first frame, EXIF rotation. Every digit loader returns a float64 array of shape ``(28, 28)`` with values in [0, 1], the digit bright
on a dark background, as in MNIST: the content is cropped to its bounding box, resized so that its
longer side is 20 px (aspect kept), and placed in the 28 x 28 frame with its centre of mass at the
centre. Bad input of any kind raises ``ValueError`` with a sentence meant for a student.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from ._resources import data_path
from .densities import as_tensor

__all__ = [
    "IMAGE_SIZE", "DIGIT_BOX", "MAX_PIXELS", "MIN_SIDE", "SUPPORTED_FORMATS", "DIGITS_DIR", "MNIST_DIR", "DIGIT_SETS",
    "MAX_UPLOAD_BYTES",
    "ImageLimits", "DIGIT_LIMITS", "read_image", "load_image", "canvas_to_image", "mnist_frame",
    "bundled_digits", "load_bundled",
    "read_idx", "mnist_pair",
]

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SIZE = 28             # side of the MNIST frame, px
DIGIT_BOX = 20              # longer side of the digit inside the frame, px (as in MNIST)
MAX_PIXELS = 40_000_000     # largest decoded image accepted (width x height); guards decompression bombs
MIN_SIDE = 8                # smallest image side accepted, px (scikit-learn's digits are 8 x 8)
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MAX_UPLOAD_BYTES = 10_000_000   # an image file, for the digits and the colour pages alike (README, Limits)
DIGITS_DIR = data_path("digits")   # package data: gradnet_core/data/digits/ (UCI digits via scikit-learn)
MNIST_DIR = data_path("mnist")     # package data: gradnet_core/data/mnist/ (from the MNIST test set)
#: The bundled digit sets (assets/README.md): name -> folder of ``{digit}_{k}.png``.
DIGIT_SETS = {"uci": DIGITS_DIR, "mnist": MNIST_DIR}

_WORK_SIDE = 1024           # large images are box-averaged down to this before any float maths
_MIN_CONTRAST = 0.05        # peak above background (fraction of full scale) that counts as content
_INK_LEVEL = 0.1            # fraction of the peak that counts as ink when finding the bounding box
_CANVAS_INK = 0.25          # canvas pixel counts as drawn at this fraction of the stroke's peak
_CANVAS_MIN_CELLS = 10      # drawn 28-scale cells below this: a dot or a scribble, not a digit
_CANVAS_MIN_EXTENT = 4.0    # ... and so is a drawing spanning under 4/28 (1/7) of the canvas
_UPLOAD_MIN_SIDE = 5        # an uploaded image's ink spanning under 5 px, or under 1/50 of the image's longer
_UPLOAD_MIN_SHARE = 1 / 50  # side, is a speck (dust, a scanner mark), not a digit: blown up it became a square
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_BUNDLED_NAME = re.compile(r"^([0-9])_([0-9]+)\.png$")

_NOT_AN_IMAGE = ("This file is not an image this app can read; upload a PNG, JPEG, GIF, BMP or WebP "
                 "file.")
_BLANK_IMAGE = ("The image is blank: no part of it stands out from the background, so there is "
                "no digit to find.")
_TRANSPARENT = "The image is blank: it is fully transparent, so there is no digit to find."
_EMPTY_CANVAS = "Draw a digit first: the canvas is empty."
_SMALL_CANVAS = ("The drawing is too small: it looks like a dot, a few dots or a tiny scribble. Draw a digit "
                 "that fills most of the canvas.")
_SPECK = ("Only a speck stands out from the background ({h} x {w} px of a {H} x {W} px image): there is no digit to "
          "find. Upload an image in which the digit spans a good part of the picture.")


@dataclass(frozen=True)
class ImageLimits:
    """What ``read_image`` asks of an image beyond the shared checks, and how it words two refusals.

    Digits use ``DIGIT_LIMITS``, colour transfer ``color.COLOR_LIMITS``.
    """

    min_side: int       # smallest side accepted, px
    decode_side: int    # JPEGs are decoded straight at a reduced scale, no smaller than this, px
    too_small: str      # refusal below min_side; {width}, {height} and {min_side} are filled in
    bomb: str           # refusal of a file PIL flags as a decompression bomb


DIGIT_LIMITS = ImageLimits(
    min_side=MIN_SIDE, decode_side=_WORK_SIDE,
    too_small="The image is only {width} x {height} pixels; it must be at least {min_side} x {min_side} "
              "to show a digit.",
    bomb=f"The image is too large: it declares more than {MAX_PIXELS // 1_000_000} megapixels (a "
         "decompression bomb, or simply a huge picture). Shrink it before uploading.")


# --- public API ---------------------------------------------------------------------------------

def read_image(data: bytes | PathLike, max_bytes: int = MAX_UPLOAD_BYTES,
               limits: ImageLimits = DIGIT_LIMITS, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read and decode an image file (bytes or path) into a PIL image, in the file's own mode.

    PNG, JPEG, GIF (first frame), BMP and WebP; at most ``max_bytes`` bytes and ``max_pixels``
    pixels (at most ``MAX_PIXELS``; checked from the header, before decoding, at the reduced scale a JPEG decodes at),
    at least ``limits.min_side`` px a side; EXIF rotation applied. Bad input of any kind raises ``ValueError`` with a
    sentence for the user.
    """
    image = _open_checked(_read_bytes(data, max_bytes), limits, min(max_pixels, MAX_PIXELS))
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(limits.bomb) from err
    except Exception as err:  # truncated or corrupt data surfaces here, with varied types
        raise ValueError(f"The image file is damaged or incomplete ({err}); save it again and "
                         "re-upload it.") from err
    try:
        return ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except Exception:  # a broken EXIF block should not reject pixels that decoded fine
        return image


def load_image(data: bytes | PathLike, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file (bytes or path) into an MNIST-style ``(28, 28)`` float64 array in [0, 1].

    Accepts PNG, JPEG, GIF (first frame), BMP and WebP in any mode; transparency is composited on
    the backdrop that contrasts with the drawing, and a light background is inverted. An image whose ink spans under
    5 px, or under 1/50 of its longer side (a speck), is refused.
    """
    gray = _grayscale(read_image(data, max_bytes, max_pixels=max_pixels), _TRANSPARENT)
    ink = _foreground(gray, _BLANK_IMAGE)
    rows, cols = _ink_box(ink)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    if max(height, width) < max(_UPLOAD_MIN_SIDE, _UPLOAD_MIN_SHARE * max(ink.shape)):
        raise ValueError(_SPECK.format(h=height, w=width, H=ink.shape[0], W=ink.shape[1]))
    return _centre(ink)


def canvas_to_image(rgba: np.ndarray) -> np.ndarray:
    """A drawing canvas's ``(H, W, 4)`` RGBA uint8 array -> MNIST-style ``(28, 28)`` float64 in [0, 1].

    Made for streamlit-drawable-canvas (black background, white stroke); ``(H, W, 3)`` RGB and
    ``(H, W)`` gray arrays with values in 0..255 are accepted too. An empty canvas, or a drawing too
    small to be a digit (touching fewer than 10 cells of a 28 x 28 grid laid over the canvas, or
    spanning less than 1/7 of the canvas's longer side, or with no stroke that long: dots), is refused.
    """
    image = _canvas_image(rgba)
    # White strokes on black, as the canvas draws them: no light-background test, which inverted a frame drawn along
    # the border (or a U touching three edges) into a filled square (a review).
    fg = _foreground(_grayscale(image, _EMPTY_CANVAS), _EMPTY_CANVAS, light_ink=True)
    # Measure the drawing's footprint at 28 px scale, whatever the pen width: a thin stroke across
    # the canvas is a digit, a fat dot is not.
    rows, cols = np.nonzero(fg >= _CANVAS_INK)
    cell = IMAGE_SIZE / max(fg.shape)
    cells = np.unique((rows * cell).astype(np.int64) * IMAGE_SIZE + (cols * cell).astype(np.int64))
    extent = (max(np.ptp(rows), np.ptp(cols)) + 1) * cell
    if cells.size < _CANVAS_MIN_CELLS or extent < _CANVAS_MIN_EXTENT or not _has_stroke(fg >= _CANVAS_INK, cell):
        raise ValueError(_SMALL_CANVAS)
    return _centre(fg)


def _has_stroke(drawn: np.ndarray, cell: float) -> bool:
    """Whether a connected part of the drawing spans at least ``_CANVAS_MIN_EXTENT`` cells of 28 (``cell`` of them a
    pixel): two dots in opposite corners span the canvas together, but neither is a stroke (a review trained them
    onto a 3). A digit of several strokes has at least one long one."""
    from scipy import ndimage

    parts = ndimage.find_objects(ndimage.label(drawn, structure=np.ones((3, 3), dtype=bool))[0])
    return any(max(rows.stop - rows.start, cols.stop - cols.start) * cell >= _CANVAS_MIN_EXTENT for rows, cols in parts)


def mnist_frame(gray: np.ndarray) -> np.ndarray:
    """A grayscale ``(H, W)`` array with values in [0, 1] -> MNIST-style ``(28, 28)`` float64.

    The background is taken from the border pixels (inverted when light) and subtracted; the
    content is cropped, resized to a 20 px box and centred by centre of mass.
    """
    arr = _numeric_array(gray, "the grayscale image")
    if arr.ndim != 2:
        raise ValueError(f"the grayscale image must be 2-D (height x width); got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"the grayscale image is empty: shape {arr.shape}")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"grayscale values must lie in [0, 1]; got {arr.min():.3g} to {arr.max():.3g}")
    return _centre(_foreground(arr, _BLANK_IMAGE))


def bundled_digits(collection: str = "uci") -> dict[int, list[Path]]:
    """The bundled example PNGs of ``collection`` (a key of ``DIGIT_SETS``: "uci", the scikit-learn
    digits, or "mnist", from the MNIST test set): digit 0..9 -> paths sorted by example index."""
    if collection not in DIGIT_SETS:
        raise ValueError(f"unknown digit set {collection!r}; choose one of {sorted(DIGIT_SETS)}")
    folder = DIGIT_SETS[collection]
    found: dict[int, list[tuple[int, Path]]] = {d: [] for d in range(10)}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _BUNDLED_NAME.match(path.name)
            if match and path.is_file():
                found[int(match.group(1))].append((int(match.group(2)), path))
    return {d: [p for _, p in sorted(items)] for d, items in found.items()}


def load_bundled(digit: int, index: int = 0, collection: str = "uci") -> np.ndarray:
    """Bundled example ``index`` of ``digit`` from ``collection`` as an MNIST-style ``(28, 28)`` float64 array."""
    digit = _check_digit(digit, "digit")
    paths = bundled_digits(collection)[digit]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(paths):
        raise ValueError(f"there are {len(paths)} bundled examples of the digit {digit}; "
                         f"index must be 0 to {len(paths) - 1}, got {index!r}")
    return load_image(paths[int(index)])


def read_idx(path: PathLike, max_bytes: int = 1_000_000_000) -> np.ndarray:
    """Read an IDX file (MNIST's format; plain or gzip) into a native-endian array of its shape.

    Images come back as ``(n, rows, cols)`` uint8, labels as ``(n,)`` uint8. The magic number,
    dimensions and data length are checked; a damaged file raises ``ValueError``.
    """
    path = Path(path)
    try:
        with path.open("rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if is_gzip:
                with gzip.GzipFile(fileobj=raw) as stream:
                    return _parse_idx(stream, path.name, max_bytes)
            return _parse_idx(raw, path.name, max_bytes)
    except FileNotFoundError as err:
        raise ValueError(f"There is no file at {path}.") from err
    except (OSError, EOFError, zlib.error) as err:
        # gzip.BadGzipFile is an OSError; a corrupt stream also raises EOFError or zlib.error
        raise ValueError(f"{path.name} could not be read as an IDX file: {err}") from err


def mnist_pair(directory: PathLike, source_digit: int, target_digit: int) -> tuple[np.ndarray, np.ndarray]:
    """The GradNetOT authors' MNIST pair: the first training image of ``source_digit`` and the
    second training image of ``target_digit``, each ``(28, 28)`` float64 in [0, 1].

    ``directory`` holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (optionally
    ``.gz``), directly or in torchvision's ``MNIST/raw`` layout. Nothing is downloaded.
    """
    source_digit = _check_digit(source_digit, "source digit")
    target_digit = _check_digit(target_digit, "target digit")
    images = read_idx(_find_mnist_file(Path(directory), "train-images", "idx3-ubyte"))
    labels = read_idx(_find_mnist_file(Path(directory), "train-labels", "idx1-ubyte"))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"the MNIST image file must hold uint8 images of shape (n, rows, cols); "
                         f"it holds {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"the MNIST label file must hold one label per image ({images.shape[0]}); "
                         f"it holds shape {labels.shape}")
    source_idx = np.flatnonzero(labels == source_digit)
    target_idx = np.flatnonzero(labels == target_digit)
    if source_idx.size < 1:
        raise ValueError(f"the MNIST training set has no image of the digit {source_digit}")
    if target_idx.size < 2:
        raise ValueError(f"the MNIST training set needs two images of the digit {target_digit}; "
                         f"it has {target_idx.size}")
    return (images[source_idx[0]].astype(np.float64) / 255.0,
            images[target_idx[1]].astype(np.float64) / 255.0)


# --- reading and decoding ------------------------------------------------------------------------

def _read_bytes(data: bytes | PathLike, max_bytes: int) -> bytes:
    """The file's bytes from ``data`` (bytes-like or a path), refusing more than ``max_bytes``."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive whole number of bytes; got {max_bytes!r}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise ValueError(f"The file is {_over_limit(len(raw), max_bytes)}. Upload a smaller image.")
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ValueError(f"{path} is not a file.")
            if size > max_bytes:
                raise ValueError(f"The file is {_over_limit(size, max_bytes)}. Use a smaller image.")
            with path.open("rb") as f:
                raw = f.read(max_bytes + 1)
        except FileNotFoundError as err:
            raise ValueError(f"There is no file at {path}.") from err
        except OSError as err:
            raise ValueError(f"Could not read {path}: {err.strerror or err}.") from err
        if len(raw) > max_bytes:
            raise ValueError(f"The file is larger than the limit of {_size_text(max_bytes)}.")
    else:
        raise ValueError(f"an image file must be given as its bytes or a path to it; got {type(data).__name__}")
    if not raw:
        raise ValueError("The file is empty.")
    return raw


def _open_checked(raw: bytes, limits: ImageLimits, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open the file (header only) and check its declared size before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(raw), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(limits.bomb) from err
    except Exception as err:  # PIL's plugins raise many exception types on malformed headers
        raise ValueError(_NOT_AN_IMAGE) from err
    # A JPEG decodes straight at 1/2, 1/4 or 1/8 scale, never under ``decode_side`` a side: what counts is that size (a
    # phone's 48-megapixel photo decodes at 12 or 3 megapixels and was refused by its header's size; a review). A
    # smaller JPEG and other formats keep theirs.
    image.draft(None, (limits.decode_side, limits.decode_side))
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
                         f"the limit is {max_pixels / 1e6:.3g} megapixels. Shrink it before uploading.")
    if min(width, height) < limits.min_side:
        raise ValueError(limits.too_small.format(width=width, height=height, min_side=limits.min_side))
    return image


def _canvas_image(rgba: np.ndarray) -> Image.Image:
    """Validate a canvas array (values 0..255) and wrap it as a PIL image (RGBA, RGB or L)."""
    try:
        shape = np.shape(rgba)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the canvas must be a numeric array; got {type(rgba).__name__}") from err
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4))):
        raise ValueError(f"the canvas must be an (H, W, 4) RGBA array; got shape {shape}")
    height, width = shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"the canvas is only {width} x {height} pixels; it must be at least "
                         f"{MIN_SIDE} x {MIN_SIDE}")
    if height * width > MAX_PIXELS:
        raise ValueError(f"the canvas is {width} x {height} pixels; the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels")
    if isinstance(rgba, np.ndarray) and rgba.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(rgba))       # the usual case: no copy to float
    arr = _numeric_array(rgba, "the canvas")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"canvas values must lie in 0..255; got {arr.min():.3g} to {arr.max():.3g}")
    return Image.fromarray(np.rint(arr).astype(np.uint8))


def _grayscale(image: Image.Image, blank_message: str) -> np.ndarray:
    """Any decoded image -> ``(h, w)`` float64 luminance in [0, 1], at most ``_WORK_SIDE`` per side."""
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit gray: PIL's conversion to "L" clips at 255 instead of scaling, so scale here
        return np.clip(_shrink(image.convert("F")) / 65535.0, 0.0, 1.0)
    if image.has_transparency_data:
        pair = _shrink(image if mode == "LA" else image.convert("RGBA").convert("LA"))
        return _composite(pair[..., 0] / 255.0, pair[..., 1] / 255.0, blank_message)
    return _shrink(image.convert("L")) / 255.0


def _shrink(image: Image.Image) -> np.ndarray:
    """Box-average ``image`` to fit in ``_WORK_SIDE`` (no-op when smaller); float64 array."""
    width, height = image.size
    scale = _WORK_SIDE / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BOX)  # LA is resized with premultiplied alpha
    return np.asarray(image, dtype=np.float64)


def _composite(luminance: np.ndarray, alpha: np.ndarray, blank_message: str) -> np.ndarray:
    """Flatten gray + alpha, both ``(h, w)`` in [0, 1], onto the backdrop that contrasts with the
    opaque content: dark content goes on white, light content on black."""
    if alpha.min() >= 1.0:
        return luminance
    if alpha.max() <= 0.0:
        raise ValueError(blank_message)
    content = float((alpha * luminance).sum() / alpha.sum())
    backdrop = 1.0 if content < 0.5 else 0.0
    return alpha * luminance + (1.0 - alpha) * backdrop


# --- normalisation -------------------------------------------------------------------------------

def _foreground(gray: np.ndarray, blank_message: str, light_ink: bool = False) -> np.ndarray:
    """Ink in [0, 1] (peak 1) from ``(h, w)`` luminance: invert a light background, subtract it.

    The background level is the median of the border pixels plus three robust standard deviations,
    so paper texture and JPEG noise fall below it; a digit touching under half the border is fine.
    Where the border is uneven (its levels' range above ``_UNEVEN_BORDER``: a phone photo with a shadow along an edge
    or light falling off across the sheet), or that level leaves nothing, the paper's level is taken under every
    pixel instead (``_without_background``): one level for the whole picture had counted a shadow as ink, or
    lay above the ink and called the picture blank. With ``light_ink`` (a drawing canvas: light strokes on a
    black background) the background is black.
    """
    if light_ink:
        level, uneven = 0.0, False
    else:
        border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
        centre = float(np.median(border))
        low, high = np.percentile(border, [5, 95])
        uneven = high - low > _UNEVEN_BORDER
        # Light paper or a dark background: the border says, unless shadows darken most of it; then the picture,
        # most of which is paper, does.
        if (float(np.median(gray)) if uneven else centre) > 0.5:
            gray, centre = 1.0 - gray, 1.0 - centre
        level = centre + 3.0 * 1.4826 * float(np.median(np.abs(border - np.median(border))))
    contrast = float(gray.max()) - level
    if not light_ink and (uneven or not contrast >= _MIN_CONTRAST):
        gray = _without_background(gray)
        centre = float(np.median(gray))
        level = centre + 3.0 * 1.4826 * float(np.median(np.abs(gray - centre)))
        contrast = float(gray.max()) - level
    if not contrast >= _MIN_CONTRAST:
        raise ValueError(blank_message)
    return np.clip((gray - level) / contrast, 0.0, 1.0)


#: The range of the border's levels (5th to 95th percentile, full scale 1) above which a picture's paper counts as
#: unevenly lit: the bundled digits show 0, paper with noise of 2 % and lit 8 % brighter on one side 0.12 (one level
#: still separates its ink: tests/test_images.py), a photo whose light falls off by 40 grey levels across the sheet
#: 0.25, a shadow along one edge 0.34-0.47.
_UNEVEN_BORDER = 0.2


#: The unevenly lit picture's side, px, once shrunk for ``_without_background`` (the digit ends at 20 px anyway).
_UNEVEN_SIDE = 256


def _without_background(gray: np.ndarray) -> np.ndarray:
    """``gray: (h, w)`` (ink bright, paper dark) less the paper's level under every pixel, at most ``_UNEVEN_SIDE``
    px a side: a morphological top-hat, the image less its opening (a running minimum, then maximum, over a square an
    eighth of the picture's side), which removes every bright feature narrower than that square (the strokes) and
    keeps the paper's level, the sharp edge of a shadow included, which a smoothed estimate would turn into a line."""
    h, w = gray.shape
    scale = min(1.0, _UNEVEN_SIDE / max(h, w))
    if scale < 1.0:
        gray = _resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    from scipy import ndimage

    side = max(3, max(gray.shape) // 8) | 1
    return np.clip(gray - ndimage.grey_opening(gray, size=(side, side), mode="nearest"), 0.0, None)


def _ink_box(ink: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of ``ink: (h, w)`` (peak 1) holding its ink (``_INK_LEVEL`` of the peak and above)."""
    mask = ink >= _INK_LEVEL
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _centre(ink: np.ndarray) -> np.ndarray:
    """Crop ``ink: (h, w)`` (peak 1) to its bounding box, fit it in a 20 px box, centre by centre of
    mass in 28 x 28. The shift is clipped so that no ink leaves the frame; returns ``(28, 28)``."""
    crop = ink[_ink_box(ink)]
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Lanczos antialiases when shrinking; bicubic upsamples small crops without Lanczos' ringing
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    digit = np.clip(_resize(crop, size, resample), 0.0, None)
    peak = float(digit.max())
    if not peak > 0:
        raise ValueError(_BLANK_IMAGE)
    digit /= peak
    total = digit.sum()
    h, w = digit.shape
    row_com = float(digit.sum(axis=1) @ np.arange(h)) / total
    col_com = float(digit.sum(axis=0) @ np.arange(w)) / total
    middle = (IMAGE_SIZE - 1) / 2.0
    top = int(np.clip(round(middle - row_com), 0, IMAGE_SIZE - h))
    left = int(np.clip(round(middle - col_com), 0, IMAGE_SIZE - w))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    frame[top:top + h, left:left + w] = digit
    return frame


def _resize(arr: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a float ``(h, w)`` array to ``size = (width, height)`` with PIL; float64 result."""
    image = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    return np.asarray(image.resize(size, resample), dtype=np.float64)


# --- IDX files -----------------------------------------------------------------------------------

def _parse_idx(stream: BinaryIO, name: str, max_bytes: int) -> np.ndarray:
    """Parse an open IDX stream: magic (0, 0, type, ndim), ndim big-endian int32 sizes, data."""
    magic = _read_upto(stream, 4)
    if len(magic) < 4:
        raise ValueError(f"{name} is too short to be an IDX file ({len(magic)} bytes)")
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim < 1:
        raise ValueError(f"{name} is not an IDX file: its magic number is 0x{magic.hex()}, expected "
                         "0x0000TTNN with a known type TT and at least one dimension NN")
    dims_raw = _read_upto(stream, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValueError(f"{name} is truncated inside its header")
    dims = [int(v) for v in np.frombuffer(dims_raw, dtype=">i4")]
    if any(v < 0 for v in dims):
        raise ValueError(f"{name} declares a negative dimension: {dims}")
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if expected > max_bytes:
        raise ValueError(f"{name} declares {_size_text(expected)} of data, more than the limit of "
                         f"{_size_text(max_bytes)}")
    data = _read_upto(stream, expected + 1)
    if len(data) < expected:
        raise ValueError(f"{name} is truncated: its header declares shape {tuple(dims)} "
                         f"({expected} bytes of data) but only {len(data)} bytes follow")
    if len(data) > expected:
        raise ValueError(f"{name} has more data than its header's shape {tuple(dims)} declares")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_upto(stream: BinaryIO, n: int) -> bytearray:
    """Read at most ``n`` bytes in chunks, so memory follows the data present, not a header's claim."""
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(n - len(out), 1 << 20))
        if not chunk:
            break
        out += chunk
    return out


def _find_mnist_file(directory: Path, stem: str, kind: str) -> Path:
    """``directory``'s MNIST file ``{stem}-{kind}`` (or ``{stem}.{kind}``), plain or ``.gz``."""
    names = [f"{stem}-{kind}", f"{stem}.{kind}"]
    for folder in (directory, directory / "MNIST" / "raw", directory / "raw"):
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise ValueError(f"Could not find {stem}-{kind} (or {stem}-{kind}.gz) in {directory}; put the MNIST "
                     "training files there (this library downloads nothing).")


# --- small helpers -------------------------------------------------------------------------------

def _numeric_array(value: object, what: str) -> np.ndarray:
    """``value`` as a finite float64 array, or ValueError naming ``what``."""
    arr = as_tensor(value, what, dtype=torch.float64, device="cpu").numpy()
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def _check_digit(digit: object, what: str) -> int:
    if isinstance(digit, bool) or not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"the {what} must be a whole number from 0 to 9; got {digit!r}")
    return int(digit)


def _over_limit(size: int, limit: int) -> str:
    """"12.3 MB; the limit is 10.0 MB", in exact bytes where the rounded sizes would read the same."""
    if _size_text(size) == _size_text(limit):
        return f"{size:,} bytes; the limit is {limit:,} bytes"
    return f"{_size_text(size)}; the limit is {_size_text(limit)}"


def _size_text(n: int) -> str:
    if n < 1_000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB"
