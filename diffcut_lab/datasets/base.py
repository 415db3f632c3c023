"""What every dataset yields, and the paper's evaluation preprocessing.

A dataset is a sized, indexable sequence of :class:`Sample` (original image and ground truth, already
mapped to the benchmark's class ids) plus a :class:`DatasetInfo` that says how to score it.
:func:`preprocess` applies the paper's protocol (reference section 5): centre crop to
``(min(H, W) - 1)`` squared, resize to the model's input size (image bilinear, label nearest-exact),
then the label nearest-resized to the evaluation size (128 x 128 in the paper).

Label convention (all datasets): int64, ``ignore_index`` (255) for pixels that are not scored, and, for
the datasets with a background class (VOC, Context, COCO-Object), the objects are ``0 .. N-2`` and the
background is ``N-1`` -- the published evaluation's convention, which its two-stage background matching
relies on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import MAX_IMAGE_PIXELS, PAPER_MASK_SIZE, DiffCutConfig
from ..errors import ImageInputError, ParameterError
from ..images import center_crop_box
from ..label_maps import resize_labels
from ..validation import check_int

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "Sample",
    "SegDataset",
    "center_crop_box",
    "preprocess",
    "preprocess_label",
    "read_image",
    "read_label",
]

#: label value of pixels that are not scored
IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetInfo:
    """How a dataset is scored.

    Attributes
    ----------
    name : str
        Registry name ("voc", "context", ...).
    num_classes : int
        Number of scored classes, background included where there is one.
    class_names : tuple of str
        One name per class id.
    ignore_index : int
        Label value of unscored pixels.
    background_index : int or None
        Class id of the background (``num_classes - 1``) for VOC, Context and COCO-Object; None otherwise.
    quirks : str
        "fixed" (this toolkit's label mapping) or "paper" (the published loader's, quirks included).
    notes : str
        What differs from the published protocol, if anything (e.g. no curated image list found).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    background_index: int | None = None
    quirks: str = "fixed"
    notes: str = ""

    @property
    def two_stage_background(self) -> bool:
        """Whether the evaluation merges unmatched clusters into the background (reference section 5)."""
        return self.background_index is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (JSON friendly)."""
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d


@dataclass(frozen=True)
class Sample:
    """One image with its ground truth.

    Attributes
    ----------
    name : str
        Stable identifier (file stem, or ``scene-<seed>``).
    image : numpy.ndarray
        (H, W, 3) uint8 RGB, as stored.
    label : numpy.ndarray or None
        (H, W) int64 class ids in the dataset's convention, or None for unlabelled sets.
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None = field(default=None)


class SegDataset(Sequence):
    """A lazy sequence of :class:`Sample` built from a list of item loaders.

    Parameters
    ----------
    info : DatasetInfo
        How the dataset is scored.
    names : sequence of str
        One identifier per item.
    load : callable
        ``load(i) -> Sample`` reads item ``i`` (from disk, or by generating it).
    root : path or None
        Where the data lives (None for built-in sets).
    """

    def __init__(
        self, info: DatasetInfo, names: Sequence[str], load: Callable[[int], Sample], root: Path | None = None
    ) -> None:
        self.info = info
        self.names = list(names)
        self._load = load
        self.root = root

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("SegDataset does not slice; use .subset(n) or index one item")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        return self._load(i % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)

    def subset(self, limit: int | None) -> SegDataset:
        """The first ``limit`` items (all when None), in the dataset's stable order."""
        if limit is None or limit >= len(self):
            return self
        if limit < 0:
            raise ParameterError(f"limit must be >= 0 or None, got {limit}")
        return SegDataset(self.info, self.names[:limit], self._load, self.root)

    def __repr__(self) -> str:
        where = f", root={str(self.root)!r}" if self.root else ""
        return f"SegDataset({self.info.name!r}, n={len(self)}, classes={self.info.num_classes}{where})"


def read_image(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB with :func:`diffcut_lab.images.load_image` (any mode,
    16-bit and alpha handled as for every other input); a missing or unreadable file -> ImageInputError."""
    from ..images import load_image

    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"expected an image file at {path}, found none; check the dataset root")
    return np.array(load_image(path), dtype=np.uint8)


def read_label(path: Path) -> np.ndarray:
    """Read a label PNG as (H, W) int64 raw values (palette indices for palette PNGs)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"expected a label file at {path}, found none; check the dataset root")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:  # before decoding, as for images
                    raise ImageInputError(
                        f"label {path} is {w} x {h} = {w * h / 1e6:.0f} MP, above the limit of "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP; it cannot be the label of a readable image."
                    )
                if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise ImageInputError(
                        f"label {path} has mode {im.mode!r}; expected a single-channel (L, P or I) PNG of class ids"
                    )
                arr = np.asarray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageInputError(f"label {path} is too large to read safely ({err}).") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageInputError):
            raise
        raise ImageInputError(f"cannot read the label {path}: {err}") from err
    return arr.astype(np.int64)


def preprocess(
    image: np.ndarray,
    label: np.ndarray | None = None,
    *,
    size: int = 1024,
    label_size: int | None = PAPER_MASK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The paper's evaluation preprocessing of one sample.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, 3) uint8.
    label : numpy.ndarray or None
        (H, W) int64 class ids.
    size : int
        Model input side (1024 for the SDXL family, the backbone's ``image_size`` in general).
    label_size : int or None
        Evaluation side of the label (128 in the paper); None keeps it at ``size``.

    Returns
    -------
    image : torch.Tensor
        (3, size, size) float32 in [0, 1]: centre crop to ``(min(H, W) - 1)^2``, bilinear resize
        (no antialiasing, as the published loader): the network input of
        :meth:`DiffCutConfig.paper() <diffcut_lab.config.DiffCutConfig.paper>`
        (:func:`~diffcut_lab.segmentation.network_input`).
    label : torch.Tensor or None
        (label_size, label_size) int64: the same crop, nearest-exact resize to ``size``, then nearest
        resize to ``label_size`` (both as published; :func:`~diffcut_lab.label_maps.resize_labels`). When ``size < label_size`` the crop is resized
        directly to ``label_size`` (nearest-exact), so a small model input does not coarsen the labels.
    """
    size = check_int(size, "size", minimum=1)
    label_size = None if label_size is None else check_int(label_size, "label_size", minimum=1)
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ImageInputError(f"expected an (H, W, 3) image, got shape {img.shape}")
    from ..segmentation import network_input

    h, w = img.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
    _, x = network_input(x, DiffCutConfig.paper(), (size, size))
    if label is None:
        return x, None
    lab = np.asarray(label)
    if lab.shape != (h, w):
        raise ImageInputError(f"label shape {lab.shape} does not match the image's {(h, w)}")
    return x, preprocess_label(lab, size=size, label_size=label_size)


def preprocess_label(
    label: np.ndarray, *, size: int = 1024, label_size: int | None = PAPER_MASK_SIZE
) -> torch.Tensor:
    """The ground truth as the paper's evaluation scores it (the label half of :func:`preprocess`).

    The published centre crop (:func:`~diffcut_lab.images.center_crop_box`), nearest-exact resize to
    ``size``, then nearest resize to ``label_size``; ``(label_size, label_size)`` int64.
    """
    lab = np.asarray(label)
    top, left, side = center_crop_box(*lab.shape[:2])
    crop = np.ascontiguousarray(lab[top : top + side, left : left + side], dtype=np.float64)
    y = torch.from_numpy(crop).round()  # class ids (a float label map is rounded to them)
    target = size if label_size is None else label_size
    if target > size:  # a small model input does not coarsen the labels
        return resize_labels(y, (target, target))
    y = resize_labels(y, (size, size))
    return y if target == size else resize_labels(y, (target, target), exact=False)
