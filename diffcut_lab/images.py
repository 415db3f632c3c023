"""Image loading and batching: every input kind in, one ``(B, 3, H, W)`` float batch in [0, 1] out.

:func:`load_image` turns a path, a PIL image of any mode, a numpy array or a torch tensor into an RGB
PIL image; :func:`to_batch` stacks one or many images into a tensor, resized (bilinear, antialiased unless
asked otherwise) or centre-cropped then resized (the evaluation protocol of the DiffCut paper). The one
crop (:func:`center_crop_box`, :func:`crop_region`) and the one resize (:func:`resize_image`) of the
toolkit live here: the pipeline, the evaluation and the ablations all call them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import MAX_IMAGE_PIXELS, DiffCutConfig, parse_size
from .errors import ImageInputError, ParameterError
from .options import POLICIES

__all__ = [
    "ImageLike",
    "center_crop_box",
    "crop_region",
    "load_image",
    "parse_size",
    "resize_image",
    "to_batch",
    "unique_names",
]

#: the settings' defaults: how an image becomes the UNet input (``policy``, ``antialias``) when not said
_DEFAULTS = DiffCutConfig()

#: Anything :func:`load_image` accepts.
ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor


def load_image(src: ImageLike) -> Image.Image:
    """Load one image as an RGB PIL image.

    Parameters
    ----------
    src : str, os.PathLike, PIL.Image.Image, numpy.ndarray or torch.Tensor
        - a path to an image file (any format Pillow reads);
        - a PIL image of any mode (``RGB``, ``RGBA``, ``LA``, ``L``, ``1``, ``P``, ``I;16``, ``I``,
          ``F``, ``CMYK``, ...); alpha is composited over white, 16-bit and float grey images are
          scaled by their type's range, never by their data (a 16-bit PGM, PNG or TIFF by 65535; a
          32-bit integer image as integer arrays are: 8-bit when its values fit, refused otherwise);
        - a numpy array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` of dtype uint8
          (0..255), uint16 (0..65535), bool, or float with values in [0, 1]; other integer dtypes only
          with values in 0..255 (read as 8-bit; any other range is ambiguous and refused);
        - a torch tensor ``(3, H, W)``, ``(1, H, W)``, ``(H, W, 3)`` or ``(H, W)``, same dtype rules.

        Files and PIL images are turned upright as their EXIF orientation says (as image viewers show
        them). Images above :data:`~diffcut_lab.config.MAX_IMAGE_PIXELS` (about 89 MP) are refused
        before they are decoded.

    Returns
    -------
    PIL.Image.Image
        An ``RGB`` image.

    Raises
    ------
    ImageInputError
        Missing or unreadable file, unsupported shape, dtype or value range.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((4, 5), dtype=np.uint8)).size
    (5, 4)
    """
    if isinstance(src, (str, os.PathLike)):
        return _load_path(Path(src))
    if isinstance(src, Image.Image):
        _check_pixels(src.size, "(PIL image)")
        return _pil_to_rgb(src)
    if isinstance(src, torch.Tensor):
        return _array_to_rgb(_tensor_to_hwc(src), origin="torch tensor")
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, origin="numpy array")
    raise ImageInputError(
        f"cannot read an image from an object of type {type(src).__name__}; expected a file path, a PIL "
        "image, a numpy array (H,W[,3|4]) or a torch tensor (3,H,W) / (H,W,3)."
    )


def to_batch(
    images: ImageLike | Sequence[ImageLike],
    size: int | tuple[int, int] | None = None,
    *,
    policy: Literal["resize", "center_crop"] = _DEFAULTS.policy,
    antialias: bool = _DEFAULTS.antialias,
) -> torch.Tensor:
    """Stack one or many images into a float batch.

    Parameters
    ----------
    images : image or sequence of images
        Anything :func:`load_image` accepts, or a list/tuple of those. A 4-D tensor ``(B, 3, H, W)``
        (float in [0, 1] or uint8) is taken as an already stacked batch.
    size : int or (H, W), optional
        Output size. ``None`` keeps each image's size; then every image must have the same size.
    policy : {"resize", "center_crop"}
        ``"resize"`` resizes to ``size`` (bilinear; the aspect ratio is not kept); ``"center_crop"``
        first crops the published evaluation's centred square (:func:`center_crop_box`), then resizes.
    antialias : bool
        Antialias the bilinear resize (the published code does not).

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` float32 in [0, 1] on the CPU.

    Raises
    ------
    ImageInputError
        An image cannot be read, or sizes differ with ``size=None``.
    ParameterError
        Unknown ``policy`` or an invalid ``size``.
    """
    if policy not in POLICIES:
        raise ParameterError(f"unknown resize policy {policy!r}; expected one of {POLICIES}.")
    target = None if size is None else parse_size(size)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        items: list[torch.Tensor] = [_as_chw_float(img) for img in images]
    else:
        seq = list(images) if isinstance(images, (list, tuple)) else [images]
        if not seq:
            raise ImageInputError("no images given: expected one image or a non-empty list of images.")
        items = [_pil_to_tensor(load_image(img)) for img in seq]
    out = []
    for img in items:
        img = crop_region(img, policy)
        if target is not None:
            img = resize_image(img, target, antialias=antialias)
        out.append(img)
    shapes = {tuple(t.shape[-2:]) for t in out}
    if len(shapes) > 1:
        raise ImageInputError(
            f"images have different sizes {sorted(shapes)}; pass size=... (e.g. size=512) so they can be "
            "stacked into one batch."
        )
    return torch.stack(out).clamp_(0.0, 1.0)


def unique_names(paths: Sequence[str | os.PathLike], *, flat: bool = False) -> list[str]:
    """One distinct, readable name per input path, in order (no two inputs ever share an output).

    ``flat=False`` (names to show): the file name, else as many parent folders as make it distinct
    (``d1/same.png``, ``d2/same.png``). ``flat=True`` (file-name stems to write): the stem, else the stem
    with its suffix (``a_jpg``), else with a counter (``a_2``) -- always checked against every name
    already given, so ``a.png a.jpg a_1.png`` cannot collide.

    Examples
    --------
    >>> unique_names(["d1/same.png", "d2/same.png"])
    ['d1/same.png', 'd2/same.png']
    >>> unique_names(["a.png", "a.jpg", "a_1.png"], flat=True)
    ['a', 'a_jpg', 'a_1']
    """
    ps = [Path(p) for p in paths]
    if flat:
        candidates = [[p.stem, f"{p.stem}_{p.suffix.lstrip('.')}" if p.suffix else p.stem] for p in ps]
    else:  # the shortest tail of the path that no other input shares
        depth = [1] * len(ps)
        while True:
            tails = ["/".join(p.parts[-d:]) for p, d in zip(ps, depth)]
            grow = [i for i, t in enumerate(tails) if tails.count(t) > 1 and depth[i] < len(ps[i].parts)]
            if not grow:
                break
            for i in grow:
                depth[i] += 1
        candidates = [[t] for t in tails]
    used: set[str] = set()
    out: list[str] = []
    for cands in candidates:
        name = next((c for c in cands if c not in used), None)
        k = 2
        while name is None or name in used:  # the same path twice, or every candidate already given
            name = f"{cands[0]}_{k}" if flat else f"{cands[0]} ({k})"
            k += 1
        used.add(name)
        out.append(name)
    return out


# ----------------------------------------------------------------------------------------------------
# helpers


def _load_path(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageInputError(f"image file not found: {str(path)!r}; check the path.")
    if path.is_dir():
        raise ImageInputError(f"{str(path)!r} is a directory, not an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(img.size, repr(str(path)))  # before decoding a single pixel
                img.load()
                return _pil_to_rgb(img, f"image {str(path)!r}")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageInputError(f"image {str(path)!r} is too large to read safely ({err}).") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageInputError(
            f"cannot read image {str(path)!r}: {err}; expected a file Pillow can open (PNG, JPEG, ...)."
        ) from err


def _check_pixels(size: tuple[int, int], what: str) -> None:
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageInputError(
            f"image {what} is {w} x {h} = {w * h / 1e6:.0f} MP, above the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} "
            "MP; downscale it first (DiffCut reads it at the model's input size anyway, e.g. 1024 px)."
        )


def _source_bits(img: Image.Image) -> int | None:
    """Bits per sample of the file an integer (mode ``I``) image was read from, when the file says so.

    Pillow reads 16-bit PGM / PPM files as mode ``I`` with values rescaled to 0..65535 (whatever the
    file's maxval), older versions 16-bit PNGs too; a TIFF says its depth in ``BitsPerSample``. An image
    made in memory says nothing (None).
    """
    fmt = getattr(img, "format", None)
    if fmt == "PPM" or fmt == "PNG":
        return 16
    if fmt == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        return int(bits) if isinstance(bits, int) else None
    return None


def _integer_scale(arr: np.ndarray, bits: int | None, origin: str) -> float:
    """The value that is white in a mode ``I`` image: by the type of its source, never by its data.

    8- and 16-bit sources scale by their type's range (255, 65535); a 32-bit or unknown source is read
    as integer arrays are: as 8-bit when its values fit in 0..255, refused otherwise (ambiguous).
    """
    lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
    if bits in (8, 16):
        top = 2**bits - 1
        if lo < 0 or hi > top:
            raise ImageInputError(
                f"{origin} is a {bits}-bit image with values in [{lo}, {hi}], outside 0..{top} (signed or "
                "damaged data); convert it to an unsigned 8- or 16-bit image (or a float image in [0, 1]) first."
            )
        return float(top)
    if lo < 0 or hi > 255:
        depth = f"{bits}-bit" if bits else "32-bit (PIL mode I)"
        raise ImageInputError(
            f"{origin} is a {depth} integer image with values in [{lo}, {hi}]: its range is ambiguous (8, 12, "
            "16 or 32 bits?). Convert it to an 8- or 16-bit image (or a float image in [0, 1]) first."
        )
    return 255.0


def _pil_to_rgb(img: Image.Image, origin: str | None = None) -> Image.Image:
    """``img`` as RGB; ``origin`` names it in errors (a file's name; default: its PIL mode)."""
    bits = _source_bits(img)  # before the transpose, which drops what the file said
    img = ImageOps.exif_transpose(img)  # as viewers show it: a portrait phone photo stays upright
    mode = img.mode
    origin = origin or f"PIL image of mode {mode}"
    if mode == "RGB":
        return img.copy()
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr = arr.astype(np.float32) / 65535.0
        elif mode == "I":
            arr = arr.astype(np.float64) / _integer_scale(arr, bits, origin)
        return _array_to_rgb(np.asarray(arr, dtype=np.float32), origin=origin)
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageInputError(f"cannot convert {origin} (mode {mode!r}) to RGB: {err}") from err


def _tensor_to_hwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        t = t.float()
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t.permute(
            1, 2, 0
        )  # (C, H, W); in a tiny image that could be (H, W, C) too, torch's convention wins
    elif t.ndim == 4:
        raise ImageInputError(
            f"got a 4-D tensor of shape {tuple(t.shape)} where one image was expected; pass it to "
            "to_batch(...) or index one image."
        )
    return t.numpy()


def _array_to_rgb(arr: np.ndarray, *, origin: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageInputError(
            f"{origin} of shape {arr.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)"
            " (tensors: (3, H, W) or (H, W, 3))."
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageInputError(f"{origin} of shape {arr.shape} is empty.")
    _check_pixels((arr.shape[1], arr.shape[0]), f"({origin})")
    if arr.dtype == np.bool_:
        f = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        f = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        f = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        f = arr.astype(np.float32)
        if not np.isfinite(f).all():
            raise ImageInputError(f"{origin} contains NaN or Inf values.")
        lo, hi = float(f.min()), float(f.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ImageInputError(
                f"{origin} of dtype {arr.dtype} has values in [{lo:.3g}, {hi:.3g}]; float images must lie "
                "in [0, 1] (divide uint8 data by 255, or pass it as uint8)."
            )
        f = np.clip(f, 0.0, 1.0)
    elif np.issubdtype(arr.dtype, np.integer):
        # the range of uint8 / uint16 is their dtype's; other integer arrays are read as 8-bit when their
        # values fit, and refused otherwise (max 300 could be 9-bit, 12-bit or 16-bit data)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageInputError(
                f"{origin} of dtype {arr.dtype} has values in [{lo}, {hi}]: its range is ambiguous. Pass uint8 "
                "(0..255), uint16 (0..65535) or float in [0, 1]."
            )
        f = arr.astype(np.float32) / 255.0
    else:
        raise ImageInputError(f"{origin} has unsupported dtype {arr.dtype}; expected uint8, uint16 or float.")
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=-1)
    elif f.shape[-1] == 4:
        alpha = f[..., 3:4]
        f = f[..., :3] * alpha + (1.0 - alpha)  # composite over white, like PIL RGBA input
    u8 = np.round(f * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(u8))


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _as_chw_float(t: torch.Tensor) -> torch.Tensor:
    if t.shape[0] != 3:
        raise ImageInputError(f"a batch tensor must be (B, 3, H, W); got an item of shape {tuple(t.shape)}.")
    t = t.detach().cpu()
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise ImageInputError(f"a batch tensor must be float in [0, 1] or uint8; got {t.dtype}.")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ImageInputError("the batch tensor contains NaN or Inf values.")
    if t.min() < -1e-3 or t.max() > 1.0 + 1e-3:
        raise ImageInputError(
            f"a float batch must lie in [0, 1]; got values in [{float(t.min()):.3g}, {float(t.max()):.3g}]."
        )
    return t


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """The published evaluation's square centre crop: ``(top, left, side)`` with ``side = min(H, W) - 1``.

    Offsets are rounded like ``torchvision.transforms.CenterCrop`` (round half to even of the halved
    margin), so crops match the published loader pixel for pixel.

    Examples
    --------
    >>> center_crop_box(369, 492)
    (0, 62, 368)
    """
    side = max(min(height, width) - 1, 1)
    top = round((height - side) / 2.0)
    left = round((width - side) / 2.0)
    return top, left, side


def crop_region(image: torch.Tensor, policy: str = _DEFAULTS.policy) -> torch.Tensor:
    """The part of a ``(C, H, W)`` image that is segmented: all of it (``"resize"``) or the published
    centred square (``"center_crop"``, :func:`center_crop_box`)."""
    if policy not in POLICIES:
        raise ParameterError(f"unknown resize policy {policy!r}; expected one of {POLICIES}.")
    if policy == "resize":
        return image
    top, left, side = center_crop_box(*image.shape[-2:])
    return image[..., top : top + side, left : left + side]


def resize_image(image: torch.Tensor, size: tuple[int, int], *, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of a ``(C, H, W)`` float image (identity at its own size).

    ``antialias=False`` is the published code's resize (``F.interpolate(..., mode="bilinear")``).
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None].float(), size=tuple(size), mode="bilinear", align_corners=False,
                        antialias=antialias)  # fmt: skip
    return out[0]
