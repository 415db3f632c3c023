"""Inputs read as the user sees them, and refused clearly when they cannot be: EXIF orientation, integer
ranges, decompression bombs and images too large to hold."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
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


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (decoding it would allocate gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("side", [12_000, 20_000])
def test_too_large_images_are_refused_before_decoding(tmp_path, side):
    path = tmp_path / f"big{side}.png"
    _png_header_only(path, side, side)
    with pytest.raises(dl.ImageInputError, match=r"above the limit|too large"):
        load_image(path)
    with pytest.raises(dl.ImageInputError):
        load_image(np.zeros((10_000, 9_000), np.bool_))
