"""Image loading and batching: every input kind, both resize policies, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffcut_lab.errors import ImageInputError, ParameterError
from diffcut_lab.images import load_image, parse_size, to_batch


def _gradient(h: int = 6, w: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 30, y * 40, (x + y) * 10], axis=-1).astype(np.uint8)


def test_rgb_uint8_roundtrip_is_exact():
    arr = _gradient()
    img = load_image(arr)
    assert img.mode == "RGB" and img.size == (8, 6)
    np.testing.assert_array_equal(np.asarray(img), arr)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "I", "F", "1", "CMYK"])
def test_pil_modes_become_rgb(mode):
    base = Image.fromarray(_gradient())
    if mode == "I;16":
        img = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L")).astype(np.float32) / 255.0)
    else:
        img = base.convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (8, 6)


def test_grey_16bit_scaled_by_range():
    grey = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    out = np.asarray(load_image(Image.fromarray(grey)))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[1, 0, 0] in (127, 128)
    np.testing.assert_array_equal(np.asarray(load_image(grey)), out)


def test_rgba_composited_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[1, 1] = (0, 0, 0, 0)  # transparent -> white
    pil = np.asarray(load_image(Image.fromarray(rgba)))
    arr = np.asarray(load_image(rgba))
    for out in (pil, arr):
        assert tuple(out[0, 0]) == (255, 0, 0)
        assert tuple(out[1, 1]) == (255, 255, 255)


def test_palette_with_transparency():
    img = Image.new("P", (3, 3), 0)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.info["transparency"] = 1
    img.putpixel((0, 0), 1)
    out = np.asarray(load_image(img))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (10, 20, 30)


def test_float_numpy_and_torch_layouts_agree():
    arr = _gradient()
    f = arr.astype(np.float32) / 255.0
    chw = torch.from_numpy(f).permute(2, 0, 1)
    for src in (f, chw, torch.from_numpy(f), f.astype(np.float64), chw.to(torch.bfloat16)):
        got = np.asarray(load_image(src)).astype(int)
        assert np.abs(got - arr.astype(int)).max() <= 1


def test_uint8_tensor_and_grey_shapes():
    t = torch.from_numpy(_gradient()).permute(2, 0, 1).contiguous()
    np.testing.assert_array_equal(np.asarray(load_image(t)), _gradient())
    assert load_image(np.zeros((4, 5, 1), np.uint8)).size == (5, 4)
    assert load_image(torch.zeros(1, 4, 5)).size == (5, 4)
    assert load_image(np.ones((3, 3), dtype=bool)).getpixel((0, 0)) == (255, 255, 255)


def test_path_and_errors(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_gradient()).save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), _gradient())
    np.testing.assert_array_equal(np.asarray(load_image(str(path))), _gradient())
    with pytest.raises(ImageInputError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageInputError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ImageInputError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageInputError, match=r"\[0, 1\]"):
        load_image(np.full((2, 2, 3), 2.0, dtype=np.float32))
    with pytest.raises(ImageInputError, match="NaN"):
        load_image(np.full((2, 2), np.nan, dtype=np.float32))
    with pytest.raises(ImageInputError, match="not an image"):
        load_image(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ImageInputError, match="4-D"):
        load_image(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ImageInputError, match="type"):
        load_image(42)


def test_to_batch_shapes_and_range():
    imgs = [_gradient(), Image.fromarray(_gradient()).convert("RGBA"), torch.rand(3, 6, 8)]
    batch = to_batch(imgs)
    assert batch.shape == (3, 3, 6, 8) and batch.dtype == torch.float32
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    one = to_batch(_gradient(), 16)
    assert one.shape == (1, 3, 16, 16)
    assert to_batch(imgs, (4, 12)).shape == (3, 3, 4, 12)


def test_to_batch_mismatched_sizes_need_size():
    with pytest.raises(ImageInputError, match="size="):
        to_batch([_gradient(6, 8), _gradient(5, 8)])
    assert to_batch([_gradient(6, 8), _gradient(5, 8)], 8).shape == (2, 3, 8, 8)


def test_center_crop_takes_the_middle_square():
    arr = np.zeros((4, 8, 3), dtype=np.uint8)
    arr[:, 2:6] = 255  # the centre 4x4 square is white, the sides black
    out = to_batch(arr, 4, policy="center_crop")
    assert torch.allclose(out, torch.ones_like(out))
    resized = to_batch(arr, 4, policy="resize")
    assert float(resized.min()) < 0.5  # plain resize keeps the black sides


def test_resize_is_antialiased_and_identity_when_same_size():
    arr = np.zeros((64, 64), np.uint8)
    arr[::2] = 255  # stripes: antialiased downscale averages to grey
    small = to_batch(arr, 8)
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)
    same = to_batch(_gradient(), (6, 8))
    assert torch.equal(same, to_batch(_gradient()))


def test_batch_tensor_input_and_validation():
    b = torch.rand(2, 3, 5, 5)
    assert torch.equal(to_batch(b), b)
    assert to_batch((b * 255).to(torch.uint8)).dtype == torch.float32
    with pytest.raises(ImageInputError):
        to_batch(torch.rand(2, 3, 5, 5) * 3)
    with pytest.raises(ImageInputError):
        to_batch([])
    with pytest.raises(ParameterError, match="policy"):
        to_batch(b, policy="stretch")
    with pytest.raises(ParameterError):
        to_batch(b, size=0)


def test_parse_size():
    assert parse_size(5) == (5, 5)
    assert parse_size((3, 4)) == (3, 4)
    for bad in ("5", (1, 2, 3), -1, True, (2.0, 3)):
        with pytest.raises(ParameterError):
            parse_size(bad)
