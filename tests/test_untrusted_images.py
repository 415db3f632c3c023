"""Inputs read as the user sees them, and refused clearly when they cannot be: EXIF orientation, integer
ranges, decompression bombs and images too large to hold."""

from __future__ import annotations

import numpy as np
import pytest
from _forged_files import png_header_only
from PIL import Image

import diffcut_lab as dl
from diffcut_lab.images import load_image


def test_exif_orientation_is_applied(tmp_path):
    """A portrait phone photo: stored landscape with orientation 6 (rotate 90), shown portrait."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255  # white band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    img = load_image(path)
    assert img.size == (20, 40)  # (width, height): upright portrait
    top = np.asarray(img)[:10].mean()
    assert top > 200  # orientation 6: the stored left edge is now at the top
    assert load_image(Image.open(path)).size == (20, 40)  # an opened PIL image too


def test_integer_arrays_are_scaled_by_dtype_not_by_their_data():
    np.testing.assert_array_equal(np.asarray(load_image(np.full((2, 2), 200, np.int64)))[..., 0], 200)
    np.testing.assert_array_equal(np.asarray(load_image(np.full((2, 2), 200, np.uint16)))[..., 0], 1)
    with pytest.raises(dl.ImageInputError, match="ambiguous"):
        load_image(np.full((2, 2), 300, np.int64))


def test_a_32_bit_integer_image_gets_a_clear_message(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.full((4, 4), 70_000, np.int32), mode="I").save(path)
    with pytest.raises(dl.ImageInputError, match="32-bit integer image"):
        load_image(path)


@pytest.mark.parametrize("side", [12_000, 20_000])
def test_too_large_images_are_refused_before_decoding(tmp_path, side):
    path = tmp_path / f"big{side}.png"
    png_header_only(path, side, side)
    with pytest.raises(dl.ImageInputError, match=r"above the limit|too large"):
        load_image(path)
    with pytest.raises(dl.ImageInputError):
        load_image(np.zeros((10_000, 9_000), np.bool_))


def _pgm(path, values: np.ndarray, maxval: int, *, ascii: bool = False) -> None:
    h, w = values.shape
    if ascii:
        path.write_text(f"P2\n{w} {h}\n{maxval}\n" + " ".join(str(int(v)) for v in values.ravel()) + "\n")
    else:
        data = values.astype(">u2" if maxval > 255 else "u1").tobytes()
        path.write_bytes(f"P5\n{w} {h}\n{maxval}\n".encode() + data)


@pytest.mark.parametrize("ascii", [False, True])
def test_16_bit_pgms_are_scaled_by_their_type_not_their_data(tmp_path, ascii):
    a = np.full((4, 4), 255)
    a[0, 0] = 0
    b = a.copy()
    b[0, 0] = 256  # one pixel differs, by one level of 65536
    _pgm(tmp_path / "a.pgm", a, 65535, ascii=ascii)
    _pgm(tmp_path / "b.pgm", b, 65535, ascii=ascii)
    mean_a = np.asarray(load_image(tmp_path / "a.pgm"), dtype=np.float64).mean()
    mean_b = np.asarray(load_image(tmp_path / "b.pgm"), dtype=np.float64).mean()
    assert abs(mean_a - mean_b) < 0.1 and mean_a < 2  # 255 / 65535 of white: nearly black, both
    # a PGM of another maxval is read by that maxval (white is white)
    _pgm(tmp_path / "c.pgm", np.full((2, 2), 4095), 4095)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "c.pgm")), 255)


def test_16_bit_tiffs_and_pngs_are_scaled_by_their_type(tmp_path):
    grey = np.array([[0, 255], [256, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey).save(tmp_path / "g.tif")
    for name in ("g.png", "g.tif"):
        out = np.asarray(load_image(tmp_path / name))[..., 0]
        np.testing.assert_array_equal(out, [[0, 1], [1, 255]], err_msg=name)


def test_mode_i_images_are_scaled_as_integer_arrays_are():
    small = Image.fromarray(np.full((2, 2), 200, np.int32), mode="I")
    np.testing.assert_array_equal(np.asarray(load_image(small))[..., 0], 200)
    with pytest.raises(dl.ImageInputError, match="ambiguous"):  # not silently divided by 65535
        load_image(Image.fromarray(np.full((2, 2), 300, np.int32), mode="I"))


def test_a_32_bit_tiff_is_read_by_its_type_or_refused_naming_the_file(tmp_path):
    fits = tmp_path / "fits.tif"
    Image.fromarray(np.full((2, 2), 200, np.int32), mode="I").save(fits)
    np.testing.assert_array_equal(np.asarray(load_image(fits))[..., 0], 200)
    deep = tmp_path / "deep300.tif"
    Image.fromarray(np.full((2, 2), 300, np.int32), mode="I").save(deep)
    with pytest.raises(dl.ImageInputError, match=r"deep300\.tif.*32-bit integer image.*ambiguous"):
        load_image(deep)


def test_a_nan_tiff_error_names_the_file(tmp_path):
    path = tmp_path / "holes.tif"
    Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(path)
    with pytest.raises(dl.ImageInputError, match=r"holes\.tif.*NaN"):
        load_image(path)
    bright = tmp_path / "bright.tif"
    Image.fromarray(np.full((4, 4), 7.0, np.float32)).save(bright)
    with pytest.raises(dl.ImageInputError, match=r"bright\.tif.*\[0, 1\]"):
        load_image(bright)
