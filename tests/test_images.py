"""Tests for gradnet_core.images: uploads, canvas drawings, bundled digits and MNIST IDX files."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from gradnet_core.densities import ImageDensity
from gradnet_core.images import (DIGIT_BOX, DIGIT_LIMITS, IMAGE_SIZE, MAX_PIXELS, bundled_digits, canvas_to_image,
                                 load_bundled, load_image, mnist_frame, mnist_pair, read_idx, read_image)

CENTRE = (IMAGE_SIZE - 1) / 2.0


# --- helpers -------------------------------------------------------------------------------------

def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    total = img.sum()
    idx = np.arange(img.shape[0])
    return float(img.sum(axis=1) @ idx / total), float(img.sum(axis=0) @ idx / total)


def assert_mnist(img: np.ndarray, centred: bool = True) -> None:
    """A valid MNIST-style frame: (28, 28) float64 in [0, 1], peak 1, digit inside a 20 px box."""
    assert isinstance(img, np.ndarray)
    assert img.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert img.dtype == np.float64
    assert np.isfinite(img).all()
    assert img.min() >= 0.0 and img.max() == pytest.approx(1.0)
    rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= DIGIT_BOX
    if centred:
        r, c = centre_of_mass(img)
        assert abs(r - CENTRE) <= 1.0 and abs(c - CENTRE) <= 1.0


def draw_seven(size: tuple[int, int] = (120, 160), offset: tuple[int, int] = (0, 0),
               ink: int = 255, paper: int = 0, width: int = 12) -> Image.Image:
    """A '7' drawn on an 'L' image of ``size = (W, H)``, shifted by ``offset``."""
    img = Image.new("L", size, paper)
    dx, dy = offset
    ImageDraw.Draw(img).line([(20 + dx, 20 + dy), (100 + dx, 20 + dy), (45 + dx, 140 + dy)],
                             fill=ink, width=width)
    return img


def draw_zero(size: tuple[int, int] = (120, 160), ink: int = 255, paper: int = 0) -> Image.Image:
    img = Image.new("L", size, paper)
    ImageDraw.Draw(img).ellipse([25, 20, 95, 140], outline=ink, width=12)
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares ``width x height``: a decompression bomb costing nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The '7' drawn white on black, saved as a plain 8-bit PNG."""
    return load_image(encode(draw_seven()))


# --- load_image: geometry and polarity -----------------------------------------------------------

def test_output_is_mnist_like_and_centred(reference):
    assert_mnist(reference)
    # the 7's bounding box is taller than wide, so its height becomes the 20 px box
    rows = np.flatnonzero(reference.any(axis=1))
    assert rows[-1] - rows[0] + 1 == DIGIT_BOX


def test_light_background_is_inverted_to_a_bright_digit(reference):
    dark_on_light = load_image(encode(draw_seven(ink=0, paper=255)))
    assert_mnist(dark_on_light)
    assert dark_on_light[0].max() == 0 and dark_on_light[:, 0].max() == 0   # dark background
    np.testing.assert_allclose(dark_on_light, reference, atol=1e-6)


def test_position_in_the_picture_does_not_matter(reference):
    shifted = load_image(encode(draw_seven(size=(400, 300), offset=(250, 120))))
    np.testing.assert_allclose(shifted, reference, atol=1e-6)


def test_aspect_ratio_is_kept():
    bar = Image.new("L", (200, 300), 0)
    ImageDraw.Draw(bar).rectangle([20, 140, 179, 179], fill=255)            # 160 x 40 bar
    out = load_image(encode(bar))
    assert_mnist(out)
    rows = np.flatnonzero((out > 0.05).any(axis=1))
    cols = np.flatnonzero((out > 0.05).any(axis=0))
    assert cols[-1] - cols[0] + 1 == DIGIT_BOX
    assert 4 <= rows[-1] - rows[0] + 1 <= 6                                 # 20 * 40 / 160 = 5


def test_noisy_photo_of_paper_keeps_only_the_digit(rng, reference):
    """Gray paper with uneven light and noise, a dark digit, saved as JPEG: background removed."""
    mask = np.asarray(draw_seven(size=(240, 320), offset=(60, 80)), dtype=np.float64) / 255.0
    yy, xx = np.mgrid[0:320, 0:240]
    paper = 0.75 + 0.08 * xx / 240 + rng.normal(0.0, 0.02, size=(320, 240))
    photo = np.clip(paper * (1.0 - 0.75 * mask), 0.0, 1.0)
    out = load_image(encode(Image.fromarray(np.rint(photo * 255).astype(np.uint8)), "JPEG", quality=85))
    assert_mnist(out)
    digit = reference > 0.2
    assert out[~digit].sum() < 0.1 * out.sum()                              # little ink off the digit
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("light", ["falling off", "shadow on the left", "shadows on two edges"])
def test_unevenly_lit_photo_of_paper_keeps_only_the_digit(rng, reference, light):
    """A phone photo: light falling off by a third across the sheet, or a shadow along one or two edges (a hand, a
    table edge). One background level for the picture had called each blank (a review), or counted a shadow as ink."""
    mask = np.asarray(draw_seven(size=(300, 400), offset=(75, 100)), dtype=np.float64) / 255.0
    yy, xx = np.mgrid[0:400, 0:300]
    paper = 0.85 + rng.normal(0.0, 0.02, size=(400, 300))
    if light == "falling off":
        paper = paper * (1.0 - 0.35 * xx / 300) * (1.0 - 0.15 * yy / 400)
    else:
        paper = paper * np.where(xx < 50, 0.6, 1.0) * (np.where(yy > 350, 0.7, 1.0) if light == "shadows on two edges"
                                                      else 1.0)
    photo = np.clip(paper * (1.0 - 0.7 * mask), 0.0, 1.0)
    out = load_image(encode(Image.fromarray(np.rint(photo * 255).astype(np.uint8)), "JPEG", quality=80))
    assert_mnist(out)
    digit = reference > 0.2
    assert out[~digit].sum() < 0.1 * out.sum()                              # no shadow edge counted as ink
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.85


def test_exif_rotation_is_applied(reference):
    stored = draw_seven().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6                                                        # display rotated 90 deg CW
    out = load_image(encode(stored, "PNG", exif=exif))
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_path_and_bytes_agree(tmp_path, reference):
    path = tmp_path / "seven.png"
    draw_seven().save(path)
    np.testing.assert_array_equal(load_image(path), reference)
    np.testing.assert_array_equal(load_image(str(path)), reference)
    np.testing.assert_array_equal(load_image(bytearray(path.read_bytes())), reference)


# --- load_image: formats and modes ---------------------------------------------------------------

def _rgba(ink_rgb: int) -> Image.Image:
    alpha = draw_seven()
    img = Image.new("RGBA", alpha.size, (ink_rgb, ink_rgb, ink_rgb, 0))
    img.putalpha(alpha)
    return img


def _palette_transparent() -> Image.Image:
    img = draw_seven().convert("P")
    img.info["transparency"] = 0            # palette index 0 (black) is see-through
    return img


def _sixteen_bit() -> Image.Image:
    return Image.fromarray(np.asarray(draw_seven(), dtype=np.uint16) * 257)   # 0..65535, mode I;16


LOSSLESS = {
    "RGBA black ink on transparent": lambda: encode(_rgba(0)),
    "RGBA white ink on transparent": lambda: encode(_rgba(255)),
    "LA dark on light": lambda: encode(draw_seven(ink=0, paper=255).convert("LA")),
    "RGB": lambda: encode(draw_seven().convert("RGB")),
    "palette": lambda: encode(draw_seven().convert("P")),
    "palette with transparency": lambda: encode(_palette_transparent(), transparency=0),
    "16-bit gray": lambda: encode(_sixteen_bit()),
    "1-bit": lambda: encode(draw_seven(ink=0, paper=255).convert("1", dither=Image.Dither.NONE)),
    "BMP": lambda: encode(draw_seven().convert("RGB"), "BMP"),
    "WebP lossless": lambda: encode(draw_seven().convert("RGB"), "WEBP", lossless=True),
    "GIF": lambda: encode(draw_seven(), "GIF"),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS))
def test_lossless_formats_and_modes_match_the_reference(name, reference):
    out = load_image(LOSSLESS[name]())
    assert_mnist(out)
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_sixteen_bit_values_are_scaled_not_clipped(reference):
    faint = Image.fromarray(np.asarray(draw_seven(ink=40), dtype=np.uint16) * 257)
    assert faint.mode.startswith("I;16")
    out = load_image(encode(faint))
    np.testing.assert_allclose(out, reference, atol=1e-6)


@pytest.mark.parametrize("fmt, kwargs", [("JPEG", {"quality": 90}), ("WEBP", {"quality": 90})])
def test_lossy_formats_are_close_to_the_reference(fmt, kwargs, reference):
    out = load_image(encode(draw_seven(ink=0, paper=255).convert("RGB"), fmt, **kwargs))
    assert_mnist(out)
    assert np.abs(out - reference).mean() < 0.03


def test_cmyk_jpeg_loads(reference):
    cmyk = draw_seven(ink=0, paper=255).convert("CMYK")
    out = load_image(encode(cmyk, "JPEG", quality=95))
    assert_mnist(out)
    assert np.abs(out - reference).mean() < 0.03


def test_animated_gif_uses_the_first_frame(reference):
    frames = [draw_seven().convert("P"), draw_zero().convert("P")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    np.testing.assert_allclose(load_image(data), reference, atol=1e-6)
    zero = load_image(encode(draw_zero(), "GIF"))
    assert np.abs(zero - reference).max() > 0.5


# --- load_image: bad input -----------------------------------------------------------------------

def _truncated(fmt: str) -> bytes:
    noisy = np.random.default_rng(0).integers(0, 255, size=(200, 200), dtype=np.uint8)
    data = encode(Image.fromarray(noisy), fmt)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "text": (b"hello, this is not a picture at all", "not an image this app can read"),
    "empty": (b"", "empty"),
    "pickle": (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94.", "not an image"),
    "PDF": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not an image"),
    "truncated PNG": (_truncated("PNG"), "damaged or incomplete"),
    "truncated JPEG": (_truncated("JPEG"), "damaged or incomplete"),
    "bomb beyond PIL's limit": (png_with_header_size(100_000, 100_000), "decompression bomb"),
    "bomb beyond our limit": (png_with_header_size(8_000, 8_000), "megapixels"),
    "1 x 1": (encode(Image.new("L", (1, 1), 255)), "at least 8 x 8"),
    "thin strip": (encode(Image.new("L", (500, 3), 255)), "at least 8 x 8"),
    "all black": (encode(Image.new("L", (64, 64), 0)), "blank"),
    "all white": (encode(Image.new("RGB", (64, 64), (255, 255, 255)), "JPEG"), "blank"),
    "uniform gray": (encode(Image.new("L", (64, 64), 128)), "blank"),
    "fully transparent": (encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), "transparent"),
    "TIFF (unsupported format)": (encode(draw_seven(), "TIFF"), "PNG, JPEG, GIF, BMP or WebP"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_a_clear_value_error(name):
    data, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message):
        load_image(data)


def test_a_speck_is_refused_and_a_small_digit_in_a_large_photo_is_not():
    # A review uploaded light paper with one faint 3 x 3 dot: it became a solid 20 x 20 square to train on.
    paper = np.full((300, 300), 246, np.uint8)
    paper[149:152, 149:152] = 200
    with pytest.raises(ValueError, match=r"Only a speck stands out .*3 x 3 px of a 300 x 300 px image"):
        load_image(encode(Image.fromarray(paper)))
    # A seven 20 px wide and 30 px tall on a 1000 x 800 page (3 % of its longer side) is a digit.
    photo = Image.new("L", (1000, 800), 240)
    ImageDraw.Draw(photo).line([(500, 400), (520, 400), (508, 430)], fill=30, width=3)
    digit = load_image(encode(photo, "JPEG"))
    assert (digit > 0.5).sum() > 40 and (digit > 0.1).mean() < 0.5    # strokes, not a filled box


def test_read_image_applies_the_callers_limits():
    small = encode(Image.new("RGB", (4, 5), (200, 10, 10)))
    with pytest.raises(ValueError, match="at least 8 x 8"):
        read_image(small)
    relaxed = replace(DIGIT_LIMITS, min_side=2, too_small="{width} x {height} is under {min_side} px")
    image = read_image(small, limits=relaxed)
    assert image.size == (4, 5) and image.getpixel((0, 0)) == (200, 10, 10)
    with pytest.raises(ValueError, match="1 x 1 is under 2 px"):
        read_image(encode(Image.new("L", (1, 1))), limits=relaxed)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_is_refused_from_its_header_without_touching_pil_globals():
    before = Image.MAX_IMAGE_PIXELS
    # 49 MP (over our cap), 144 MP (PIL warns), 3.6 GP (PIL errors): decoding any of them would need
    # gigabytes, so the ValueError must come from the declared size, before any pixel is decoded
    for side in (7_000, 12_000, 60_000):
        assert side * side > MAX_PIXELS
        with pytest.raises(ValueError, match="megapixels"):
            load_image(png_with_header_size(side, side))
    assert Image.MAX_IMAGE_PIXELS == before


def test_a_jpeg_over_the_pixel_limit_is_read_at_the_scale_it_decodes_at():
    # A phone's 48-megapixel photo was refused by its header's size, though a JPEG decodes straight at 1/8 scale (a
    # review); a PNG of that size still is, and so is a JPEG whose reduced size is over the limit the caller sets.
    page = Image.new("L", (8_000, 6_000), 235)
    ImageDraw.Draw(page).line([(3_000, 2_000), (5_000, 2_000), (3_800, 4_500)], fill=30, width=120)
    data = encode(page, "JPEG", quality=60)
    digit = load_image(data)
    assert (digit > 0.5).sum() > 30 and (digit > 0.1).mean() < 0.5
    assert read_image(data).size == (2_000, 1_500)                  # decoded at 1/4: at least 1024 px a side
    with pytest.raises(ValueError, match="2000 x 1500 pixels"):
        load_image(data, max_pixels=1_000_000)
    with pytest.raises(ValueError, match="megapixels"):
        load_image(encode(page, "PNG"))


def test_files_over_the_size_limit_are_refused(tmp_path):
    data = encode(draw_seven())
    with pytest.raises(ValueError, match="limit"):
        load_image(data, max_bytes=len(data) - 1)
    path = tmp_path / "seven.png"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="limit"):
        load_image(path, max_bytes=100)
    assert_mnist(load_image(path, max_bytes=len(data)))


@pytest.mark.parametrize("bad", [None, 42, 3.5, ["a"], np.zeros((28, 28))])
def test_wrong_argument_types_raise_value_error(bad):
    with pytest.raises(ValueError, match="bytes or a path"):
        load_image(bad)


def test_missing_file_and_directory_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="no file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match="max_bytes"):
        load_image(encode(draw_seven()), max_bytes=0)


# --- canvas --------------------------------------------------------------------------------------

def canvas(draw=None, size: int = 280, transparent: bool = False) -> np.ndarray:
    """An (H, W, 4) uint8 array as streamlit-drawable-canvas returns it: black, white strokes."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0 if transparent else 255))
    if draw is not None:
        draw(ImageDraw.Draw(img))
    return np.asarray(img)


def _stroke(d: ImageDraw.ImageDraw) -> None:
    d.line([(60, 50), (200, 50), (100, 240)], fill=(255, 255, 255, 255), width=18)


@pytest.mark.parametrize("transparent", [False, True])
def test_drawn_stroke_becomes_a_digit(transparent):
    rgba = canvas(_stroke, transparent=transparent)
    assert rgba.dtype == np.uint8 and rgba.shape == (280, 280, 4)
    out = canvas_to_image(rgba)
    assert_mnist(out)
    np.testing.assert_allclose(out, load_image(encode(Image.fromarray(rgba))), atol=1e-6)


def test_thin_long_stroke_is_a_digit_not_a_dot():
    one = canvas(lambda d: d.line([(140, 40), (140, 240)], fill=(255, 255, 255, 255), width=2))
    assert_mnist(canvas_to_image(one))


def test_a_frame_drawn_along_the_canvas_border_stays_a_frame():
    # The photo rule (a light border means a light background: invert) turned a frame drawn along the edges, or a U
    # touching three of them, into a filled square (a review). The canvas draws light strokes on black.
    frame = canvas(lambda d: d.rectangle([2, 2, 277, 277], outline=(255, 255, 255, 255), width=14))
    out = canvas_to_image(frame)
    assert_mnist(out)
    assert out[12:16, 12:16].max() < 0.05 and out[4:24, 4].max() > 0.5      # hollow inside, ink on its left edge
    u = canvas(lambda d: d.line([(4, 0), (4, 275), (275, 275), (275, 0)], fill=(255, 255, 255, 255), width=12))
    assert canvas_to_image(u)[10:16, 10:18].max() < 0.05                      # the U's inside stays empty


@pytest.mark.parametrize("transparent", [False, True])
def test_empty_canvas_is_refused(transparent):
    with pytest.raises(ValueError, match="Draw a digit first"):
        canvas_to_image(canvas(transparent=transparent))


@pytest.mark.parametrize("draw", [
    lambda d: d.point((140, 140), fill=(255, 255, 255, 255)),
    lambda d: d.ellipse([125, 125, 155, 155], fill=(255, 255, 255, 255)),         # a fat dot
    lambda d: d.line([(130, 130), (150, 130), (135, 150)], fill=(255, 255, 255, 255), width=5),
])
def test_dot_or_tiny_scribble_is_refused(draw):
    with pytest.raises(ValueError, match="too small"):
        canvas_to_image(canvas(draw))


def test_dots_far_apart_are_refused_and_a_digit_of_two_strokes_is_not():
    # Two dots in opposite corners span the canvas together, but neither is a stroke (a review trained them onto a 3).
    def dots(d):
        for x, y in ((30, 30), (250, 250)):
            d.ellipse([x - 17, y - 17, x + 17, y + 17], fill=(255, 255, 255, 255))
    with pytest.raises(ValueError, match="a few dots"):
        canvas_to_image(canvas(dots))

    def four(d):                                            # a 4 of two strokes that do not touch
        d.line([(150, 40), (70, 170), (210, 170)], fill=(255, 255, 255, 255), width=20)
        d.line([(175, 110), (175, 250)], fill=(255, 255, 255, 255), width=20)
    assert canvas_to_image(canvas(four)).sum() > 0

    def seven_and_dot(d):                                   # a stroke and a stray dot: the stroke makes it a drawing
        d.line([(60, 50), (220, 50), (120, 240)], fill=(255, 255, 255, 255), width=20)
        d.ellipse([20, 230, 40, 250], fill=(255, 255, 255, 255))
    assert canvas_to_image(canvas(seven_and_dot)).sum() > 0


@pytest.mark.parametrize("bad, message", [
    (np.zeros((280, 280, 5), np.uint8), "RGBA"),
    (np.zeros(280, np.uint8), "RGBA"),
    (np.zeros((4, 4, 4), np.uint8), "at least"),
    (np.full((40, 40, 4), 300.0), "0..255"),
    (np.full((40, 40, 4), np.nan), "NaN"),
    (np.full((40, 40, 4), "x"), "numeric"),
    ("not an array", "RGBA"),
    ([[1, 2], [3]], "numeric"),
])
def test_malformed_canvas_raises_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        canvas_to_image(bad)


# --- mnist_frame ---------------------------------------------------------------------------------

def test_mnist_frame_of_a_small_array_upsamples_and_centres():
    small = np.zeros((8, 8))
    small[1:7, 2] = 1.0
    small[1:7, 5] = 1.0
    small[1, 2:6] = small[6, 2:6] = 1.0                                     # an 8 x 8 "0"
    out = mnist_frame(small)
    assert_mnist(out)
    rows = np.flatnonzero((out > 0.05).any(axis=1))
    assert rows[-1] - rows[0] + 1 == DIGIT_BOX


@pytest.mark.parametrize("bad", [np.full((8, 8), 2.0), np.zeros((3, 4, 5)), np.zeros((0, 5)), np.zeros((8, 8))])
def test_mnist_frame_validates(bad):
    with pytest.raises(ValueError):
        mnist_frame(bad)


# --- IDX files and the authors' MNIST pair -------------------------------------------------------

def write_idx(path: Path, arr: np.ndarray, code: int, compress: bool = False) -> None:
    big = arr.astype(arr.dtype.newbyteorder(">"))
    payload = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + big.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.fixture
def mnist_dir(tmp_path, rng) -> tuple[Path, np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 3, 4, 1, 4, 1], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images, 0x08)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 0x08, compress=True)
    return tmp_path, images, labels


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                         (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_idx_round_trip(tmp_path, rng, compress, dtype, code):
    arr = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, arr, code, compress)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_mnist_pair_takes_first_source_and_second_target(mnist_dir):
    directory, images, _ = mnist_dir
    source, target = mnist_pair(directory, 3, 1)
    np.testing.assert_array_equal(source, images[0] / 255.0)          # first 3 is image 0
    np.testing.assert_array_equal(target, images[4] / 255.0)          # second 1 is image 4
    source, target = mnist_pair(str(directory), 4, 3)
    np.testing.assert_array_equal(source, images[3] / 255.0)
    np.testing.assert_array_equal(target, images[2] / 255.0)
    same_source, same_target = mnist_pair(directory, 1, 1)            # the 0 -> 0 style pair
    assert not np.array_equal(same_source, same_target)
    assert source.dtype == np.float64 and 0.0 <= source.min() and source.max() <= 1.0


def test_mnist_pair_finds_torchvision_layout(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte.gz", images, 0x08, compress=True)
    write_idx(raw / "train-labels-idx1-ubyte", np.array([0, 0, 0], np.uint8), 0x08)
    source, target = mnist_pair(tmp_path, 0, 0)
    np.testing.assert_array_equal(source, images[0] / 255.0)
    np.testing.assert_array_equal(target, images[1] / 255.0)


def test_mnist_pair_refuses_missing_digits_files_and_bad_digits(mnist_dir, tmp_path_factory):
    directory, _, _ = mnist_dir
    with pytest.raises(ValueError, match="no image of the digit 7"):
        mnist_pair(directory, 7, 1)
    with pytest.raises(ValueError, match="two images of the digit 0"):
        mnist_pair(directory, 3, 0)
    with pytest.raises(ValueError, match="0 to 9"):
        mnist_pair(directory, 10, 1)
    with pytest.raises(ValueError, match="Could not find train-images"):
        mnist_pair(tmp_path_factory.mktemp("empty"), 3, 1)


def test_mnist_pair_refuses_mismatched_label_count(mnist_dir):
    directory, _, _ = mnist_dir
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.array([3, 1], np.uint8), 0x08, compress=True)
    with pytest.raises(ValueError, match="one label per image"):
        mnist_pair(directory, 3, 1)


def test_bad_idx_files_raise_value_error(tmp_path):
    good = bytes([0, 0, 8, 1]) + struct.pack(">i", 4) + bytes(4)
    cases = {
        "bad magic": b"\x01\x02\x08\x01" + good[4:],
        "unknown type": bytes([0, 0, 0x42, 1]) + good[4:],
        "no dimensions": bytes([0, 0, 8, 0]),
        "short header": bytes([0, 0, 8, 3]) + struct.pack(">i", 4),
        "truncated data": good[:-1],
        "extra data": good + b"\x00",
        "negative size": bytes([0, 0, 8, 1]) + struct.pack(">i", -4),
        "huge declared size": bytes([0, 0, 8, 3]) + struct.pack(">3i", 2**31 - 1, 2**31 - 1, 8),
        "too short": b"\x00\x00",
        "bad gzip": b"\x1f\x8b\x08\x00garbage that is not deflate data",
    }
    assert read_idx(_write(tmp_path / "good", good)).shape == (4,)
    for name, data in cases.items():
        with pytest.raises(ValueError):
            read_idx(_write(tmp_path / name.replace(" ", "_"), data))
    with pytest.raises(ValueError, match="no file"):
        read_idx(tmp_path / "missing-idx")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- bundled digits ------------------------------------------------------------------------------

@pytest.mark.parametrize("collection", ["uci", "mnist"])
def test_bundled_digits_exist_and_each_is_a_valid_density(collection):
    found = bundled_digits(collection)
    assert sorted(found) == list(range(10))
    for digit, paths in found.items():
        assert len(paths) == 3, f"digit {digit} has {len(paths)} bundled examples"
        for k, path in enumerate(paths):
            assert path.name == f"{digit}_{k}.png"
            with Image.open(path) as stored:
                assert stored.mode == "L" and stored.size == (IMAGE_SIZE, IMAGE_SIZE)
            img = load_bundled(digit, k, collection)
            assert_mnist(img)
            density = ImageDensity(img, bandwidth=1e-3)
            assert float(density.weights.sum()) == pytest.approx(1.0)
            assert density.points.min() >= 0 and density.points.max() <= 1
            x = density.sample(64, generator=torch.Generator().manual_seed(0))
            assert x.shape == (64, 2) and torch.isfinite(density.log_prob(x)).all()


def test_bundled_examples_differ_and_load_bundled_validates():
    a, b = load_bundled(3, 0), load_bundled(3, 1)
    assert np.abs(a - b).max() > 0.1
    for digit, index in [(10, 0), (-1, 0), (True, 0), (3, 99), (3, -1), ("3", 0)]:
        with pytest.raises(ValueError):
            load_bundled(digit, index)
    with pytest.raises(ValueError, match="unknown digit set"):
        load_bundled(3, 0, "emnist")


def test_mnist_digits_are_sharper_than_the_upscaled_uci_scans():
    """What the MNIST set is bundled for: on a projector the 8 x 8 scans look blurred. Mean absolute
    gradient of the ink, over all 30 images of each set."""
    def sharpness(collection):
        values = []
        for digit in range(10):
            for k in range(3):
                img = load_bundled(digit, k, collection)
                gy, gx = np.gradient(img)
                values.append(np.hypot(gx, gy)[img > 0.1].mean())
        return float(np.median(values))

    assert sharpness("mnist") > 1.5 * sharpness("uci")


# --- fuzzing -------------------------------------------------------------------------------------

def assert_valid_or_value_error(fn, *args) -> None:
    try:
        out = fn(*args)
    except ValueError:
        return
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE) and out.dtype == np.float64
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0 and out.sum() > 0


SEEDS = {fmt: encode(draw_seven(size=(40, 50), width=6).convert(mode), fmt)
         for fmt, mode in [("PNG", "L"), ("GIF", "P"), ("BMP", "RGB"), ("JPEG", "RGB"), ("WEBP", "RGB")]}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    assert_valid_or_value_error(load_image, data)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_fuzz_corrupted_image_files(fmt, data):
    raw = bytearray(SEEDS[fmt])
    # mostly corrupt the pixel data rather than the header, so the decoders themselves get fuzzed
    start = data.draw(st.sampled_from([0, len(raw) // 4]))
    for _ in range(data.draw(st.integers(0, 8))):
        raw[data.draw(st.integers(start, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)) | st.just(len(raw)))
    assert_valid_or_value_error(load_image, bytes(raw[:cut]))


@FUZZ
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4])),
                  elements=st.integers(0, 255) | st.sampled_from([0, 255])),
       st.sampled_from(["PNG", "GIF", "BMP", "WEBP"]))
def test_fuzz_random_small_images(arr, fmt):
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr)
    if fmt in ("BMP", "GIF") and mode in ("LA", "RGBA"):
        img = img.convert("RGB")
    assert_valid_or_value_error(load_image, encode(img, fmt))


CANVAS_SHAPES = st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([3, 4]))


@FUZZ
@given(hnp.arrays(np.uint8, CANVAS_SHAPES, elements=st.sampled_from([0, 0, 0, 0, 255, 255, 128, 7])))
def test_fuzz_random_uint8_canvases(arr):
    assert_valid_or_value_error(canvas_to_image, arr)


@FUZZ
@given(st.integers(8, 120), st.booleans(),
       st.lists(st.tuples(st.integers(-10, 130), st.integers(-10, 130), st.integers(1, 30),
                          st.integers(0, 255)), max_size=6))
def test_fuzz_random_strokes(size, transparent, strokes):
    rgba = canvas(size=size, transparent=transparent)
    img = Image.fromarray(rgba)
    draw = ImageDraw.Draw(img)
    points = [(x, y) for x, y, _, _ in strokes]
    for (a, b), (_, _, width, level) in zip(zip(points, points[1:]), strokes):
        draw.line([a, b], fill=(level, level, level, 255), width=width)
    if strokes:
        draw.point(points[-1], fill=(255, 255, 255, 255))
    assert_valid_or_value_error(canvas_to_image, np.asarray(img))


@FUZZ
@given(st.data())
def test_fuzz_random_numeric_canvases(data):
    dtype = data.draw(st.sampled_from([np.bool_, np.int16, np.float32, np.float64]))
    if dtype in (np.float32, np.float64):
        elements = st.floats(-10, 300, width=16) | st.sampled_from([np.nan, np.inf, 0.0, 255.0])
    else:
        elements = None
    arr = data.draw(hnp.arrays(dtype, CANVAS_SHAPES, elements=elements))
    assert_valid_or_value_error(canvas_to_image, arr)
