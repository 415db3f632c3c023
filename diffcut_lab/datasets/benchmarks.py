"""The paper's six benchmarks, read from local directories.

Each loader accepts ``root`` pointing at the dataset folder itself or at a folder that contains it under
its usual name, and tries the layouts below in order. Images and labels are paired by file name (the
published loader pairs two sorted listings, which silently misaligns when one file is missing); a
missing file is an error that names the path where it was expected.

Layouts (``{split}`` is the split name as the layout spells it)
----------------------------------------------------------------
voc (Pascal VOC 2012, 20 objects + background, 1,449 val images)
    a. raw devkit ``VOC2012/``: ``ImageSets/Segmentation/{val}.txt``, ``JPEGImages/<id>.jpg``,
       ``SegmentationClass/<id>.png`` (palette PNG: 0 background, 1..20, 255 void).
       Also found as ``<root>/VOCdevkit/VOC2012``.
    b. detectron2 preparation ``pascal_voc_d2/``: ``images/{validation}/<id>.jpg``,
       ``annotations_pascal20/{validation}/<id>.png`` (0..19, 255 background or void).
context (Pascal Context-59 + background, 5,105 val images)
    a. detectron2 preparation ``pascal_ctx_d2/``: ``images/{validation}/<id>.jpg``,
       ``annotations_ctx59/{validation}/<id>.png`` (0..58, 255 anything else = background).
    b. VOC2010 with converted masks: ``ImageSets/SegmentationContext/{val}.txt``, ``JPEGImages/<id>.jpg``,
       ``SegmentationClassContext/<id>.png`` (0 background, 1..59). Also ``<root>/VOCdevkit/VOC2010``.
coco-object (80 objects + background, every stuff class is background) and coco-stuff (27 coarse classes)
    ``coco/``: images in ``val2017/`` or ``images/val2017/``, labels (COCO-Stuff ``stuffthingmaps``,
    0..181 fine ids, 255 unlabelled) in ``annotations/val2017/`` or ``stuffthingmaps_trainval2017/val2017``.
    The image list is the curated 2,175-image ``Coco164kFull_Stuff_Coarse_7.txt`` (PiCIE/STEGO) when
    found at ``<root>/Coco164kFull_Stuff_Coarse_7.txt`` or ``<root>/curated/val2017/...`` (or passed as
    ``image_list=``); without it every labelled image is used and ``info.notes`` says so.
cityscapes (27 classes: labelIds 7..33, all others ignored, 500 val images)
    ``cityscapes/``: ``leftImg8bit/{val}/<city>/<stem>_leftImg8bit.png`` and
    ``gtFine/{val}/<city>/<stem>_gtFine_labelIds.png``.
ade20k (150 classes, 2,000 val images)
    ``ADEChallengeData2016/``: ``images/{validation}/<id>.jpg``, ``annotations/{validation}/<id>.png``
    (0 "other", 1..150).

Label mapping and quirks (``quirks="fixed"`` by default, ``"paper"`` reproduces the published loader)
------------------------------------------------------------------------------------------------------
- VOC raw layout: paper sends void (255) to background; fixed ignores void. The detectron2 layout has
  void already merged into background, so both modes read it alike (``info.notes`` says so).
- COCO-Object: paper sends unlabelled (255) to background; fixed ignores it. Stuff is background in both.
- ADE20K: paper scores "other" (0) as class 0 and never scores class 150 (identity mapping, 150
  classes); fixed maps 1..150 -> 0..149 and ignores "other".
- Context-59, COCO-Stuff-27, Cityscapes: one mapping, identical to the published one.
- Pairing by name instead of by sorted position is a fix in both modes (it changes nothing on a complete
  dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageInputError, ParameterError
from ..options import QUIRKS
from . import mappings as M
from .base import DatasetInfo, Sample, SegDataset, read_image, read_label

__all__ = [
    "BENCHMARKS",
    "load_ade20k",
    "load_benchmark",
    "load_cityscapes",
    "load_coco_object",
    "load_coco_stuff",
    "load_context",
    "load_voc",
]

COCO_CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class _Items:
    """Resolved files of one dataset split."""

    names: list[str]
    images: list[Path]
    labels: list[Path]
    layout: str
    notes: str = ""


# ----------------------------------------------------------------------------------------------------
# helpers


def _check_quirks(quirks: str) -> str:
    if quirks not in QUIRKS:
        raise ParameterError(f"quirks must be one of {QUIRKS}, got {quirks!r}")
    return quirks


def _candidates(root: Path, subdirs: Sequence[str]) -> list[Path]:
    """``root`` itself, then ``root/<subdir>`` for each conventional folder name that exists."""
    out = [root]
    out += [root / s for s in subdirs if (root / s).is_dir()]
    return out


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ImageInputError(
            f"the image list {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "expected one image id per line"
        ) from None
    except OSError as err:
        raise ImageInputError(f"cannot read the image list {path}: {err.strerror or err}") from None
    ids = [line.strip().split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise ImageInputError(f"the image list {path} is empty; expected one image id per line")
    return ids


def _pair_from_list(ids: Sequence[str], img: Callable[[str], Path], lab: Callable[[str], Path]) -> tuple:
    images, labels = [img(i) for i in ids], [lab(i) for i in ids]
    for kind, paths in (("image", images), ("label", labels)):
        for p in paths:
            if not p.is_file():
                raise ImageInputError(
                    f"expected the {kind} file {p.name} at {p.parent}, found none (listed in the split "
                    "file); restore it or remove the id from the list"
                )
    return images, labels


def _first_image(directory: Path, stem: str) -> Path | None:
    for ext in _IMAGE_EXTS:
        if (directory / f"{stem}{ext}").is_file():
            return directory / f"{stem}{ext}"
    return None


def _pair_dirs(img_dir: Path, lab_dir: Path) -> tuple[list[str], list[Path], list[Path]]:
    """Pair every image in ``img_dir`` with ``lab_dir/<stem>.png``; a missing label is an error."""
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
    if not files:
        raise ImageInputError(f"expected images (*.jpg, *.png) in {img_dir}, found none")
    names, images, labels = [], [], []
    for f in files:
        lab = lab_dir / f"{f.stem}.png"
        if not lab.is_file():
            raise ImageInputError(
                f"expected the label {lab.name} for image {f.name} at {lab_dir}, found none"
            )
        names.append(f.stem)
        images.append(f)
        labels.append(lab)
    return names, images, labels


def _not_found(dataset: str, root: Path, expected: Sequence[str]) -> ImageInputError:
    lines = "\n".join(f"  - {e}" for e in expected)
    return ImageInputError(
        f"no {dataset} layout found under {root}; expected one of:\n{lines}\n"
        f"Point root at the dataset folder (see diffcut_lab.datasets.benchmarks for the layouts)."
    )


def _root(root: str | Path | None, dataset: str) -> Path:
    if root is None:
        raise ParameterError(f"the {dataset} dataset needs root=<directory>; it is not bundled")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ImageInputError(f"expected the {dataset} dataset directory at {path}, found no such directory")
    return path


def _make(info: DatasetInfo, items: _Items, lut: np.ndarray, root: Path) -> SegDataset:
    images, labels, names = items.images, items.labels, items.names

    def load(i: int) -> Sample:
        image = read_image(images[i])
        raw = read_label(labels[i])
        if raw.shape != image.shape[:2]:
            raise ImageInputError(
                f"label {labels[i]} is {raw.shape[1]}x{raw.shape[0]} but its image {images[i].name} is "
                f"{image.shape[1]}x{image.shape[0]}; expected the same size"
            )
        return Sample(name=names[i], image=image, label=M.apply_lut(raw, lut))

    return SegDataset(info, names, load, root)


def _d2_split(split: str) -> str:
    return {"val": "validation", "train": "training"}.get(split, split)


# ----------------------------------------------------------------------------------------------------
# layouts


def _d2_items(
    root: Path,
    split: str,
    subdirs: Sequence[str],
    annotations: str,
    expected: list[str],
    label: str = "detectron2: ",
) -> tuple[list[str], list[Path], list[Path]] | None:
    """The ``images/<split>`` + ``<annotations>/<split>`` pairs of the first candidate folder holding both
    (the detectron2 layout); what was looked for is appended to ``expected``."""
    for base in _candidates(root, subdirs):
        img_dir = base / "images" / _d2_split(split)
        lab_dir = base / annotations / _d2_split(split)
        expected.append(f"{label}{img_dir} and {lab_dir}")
        if img_dir.is_dir() and lab_dir.is_dir():
            return _pair_dirs(img_dir, lab_dir)
    return None


def _devkit_items(
    root: Path,
    split: str,
    subdirs: Sequence[str],
    image_set: str,
    labels: str,
    expected: list[str],
    label: str,
) -> tuple[list[str], list[Path], list[Path]] | None:
    """The ids of ``ImageSets/<image_set>/<split>.txt`` with ``JPEGImages/<id>.jpg`` and ``<labels>/<id>.png``
    in the first candidate folder that has the list (the VOC devkit layout); what was looked for is appended
    to ``expected``."""
    for base in _candidates(root, subdirs):
        lst = base / "ImageSets" / image_set / f"{split}.txt"
        expected.append(f"{label}: {lst} with JPEGImages/ and {labels}/ beside it")
        if lst.is_file():
            ids = _read_list(lst)
            imgs, labs = _pair_from_list(
                ids,
                lambda i, b=base: b / "JPEGImages" / f"{i}.jpg",
                lambda i, b=base: b / labels / f"{i}.png",
            )
            return ids, imgs, labs
    return None


def _voc_items(root: Path, split: str) -> _Items:
    expected: list[str] = []
    found = _devkit_items(
        root,
        split,
        ["VOCdevkit/VOC2012", "VOC2012"],
        "Segmentation",
        "SegmentationClass",
        expected,
        "raw devkit",
    )
    if found is not None:
        return _Items(*found, "voc-devkit")
    pairs = _d2_items(root, split, ["pascal_voc_d2"], "annotations_pascal20", expected)
    if pairs is not None:
        note = "annotations_pascal20 merges void into background, so void is scored as background"
        return _Items(*pairs, "voc-d2", note)
    raise _not_found("voc", root, expected)


def _context_items(root: Path, split: str) -> _Items:
    expected: list[str] = []
    pairs = _d2_items(root, split, ["pascal_ctx_d2"], "annotations_ctx59", expected)
    if pairs is not None:
        return _Items(*pairs, "context-d2")
    found = _devkit_items(
        root,
        split,
        ["VOCdevkit/VOC2010", "VOC2010"],
        "SegmentationContext",
        "SegmentationClassContext",
        expected,
        "VOC2010",
    )
    if found is not None:
        return _Items(*found, "context-voc2010")
    raise _not_found("context", root, expected)


def _coco_items(root: Path, split: str, image_list: str | Path | None, dataset: str) -> _Items:
    folder = f"{split}2017" if not split.endswith("2017") else split
    expected = []
    for base in _candidates(root, ["coco"]):
        img_dirs = [base / folder, base / "images" / folder]
        lab_dirs = [base / "annotations" / folder, base / "stuffthingmaps_trainval2017" / folder]
        img_dir = next((d for d in img_dirs if d.is_dir()), None)
        lab_dir = next((d for d in lab_dirs if d.is_dir()), None)
        expected.append(
            f"images in {img_dirs[0]} (or {img_dirs[1]}), labels in {lab_dirs[0]} (or {lab_dirs[1]})"
        )
        if img_dir is None or lab_dir is None:
            continue
        if image_list is not None:
            lst = Path(image_list)
            if not lst.is_file():
                raise ImageInputError(f"expected the image list at {lst}, found no such file")
        else:
            found = [base / COCO_CURATED_LIST, base / "curated" / folder / COCO_CURATED_LIST]
            lst = next((p for p in found if p.is_file()), None)
        if lst is not None:
            ids = _read_list(lst)
            imgs, labs = _pair_from_list(
                ids,
                lambda i, d=img_dir: _first_image(d, i) or d / f"{i}.jpg",
                lambda i, d=lab_dir: d / f"{i}.png",
            )
            return _Items(ids, imgs, labs, "coco", f"image list: {lst.name}")
        names, imgs, labs = _pair_labels_first(img_dir, lab_dir)
        note = (
            f"no {COCO_CURATED_LIST} found (expected at {found[0]}): every labelled image is used, so "
            "scores are not comparable with the paper's 2,175-image set"
        )
        return _Items(names, imgs, labs, "coco", note)
    raise _not_found(dataset, root, expected)


def _pair_labels_first(img_dir: Path, lab_dir: Path) -> tuple[list[str], list[Path], list[Path]]:
    """Every label PNG with its image (COCO: unlabelled images are skipped, not an error)."""
    labs = sorted(lab_dir.glob("*.png"))
    if not labs:
        raise ImageInputError(f"expected label PNGs in {lab_dir}, found none")
    names, imgs = [], []
    for lab in labs:
        img = _first_image(img_dir, lab.stem)
        if img is None:
            raise ImageInputError(
                f"expected the image {lab.stem}.jpg for label {lab.name} at {img_dir}, found none"
            )
        names.append(lab.stem)
        imgs.append(img)
    return names, imgs, labs


def _cityscapes_items(root: Path, split: str) -> _Items:
    expected = []
    for base in _candidates(root, ["cityscapes"]):
        img_root, lab_root = base / "leftImg8bit" / split, base / "gtFine" / split
        expected.append(f"{img_root}/<city>/*_leftImg8bit.png and {lab_root}/<city>/*_gtFine_labelIds.png")
        if not (img_root.is_dir() and lab_root.is_dir()):
            continue
        files = sorted(img_root.glob("*/*_leftImg8bit.png"))
        if not files:
            raise ImageInputError(f"expected <city>/*_leftImg8bit.png images under {img_root}, found none")
        names, imgs, labs = [], [], []
        for f in files:
            stem = f.name[: -len("_leftImg8bit.png")]
            lab = lab_root / f.parent.name / f"{stem}_gtFine_labelIds.png"
            if not lab.is_file():
                raise ImageInputError(
                    f"expected the label {lab.name} for {f.name} at {lab.parent}, found none"
                )
            names.append(stem)
            imgs.append(f)
            labs.append(lab)
        return _Items(names, imgs, labs, "cityscapes")
    raise _not_found("cityscapes", root, expected)


def _ade20k_items(root: Path, split: str) -> _Items:
    expected = []
    pairs = _d2_items(root, split, ["ADEChallengeData2016"], "annotations", expected, label="")
    if pairs is not None:
        return _Items(*pairs, "ade20k")
    raise _not_found("ade20k", root, expected)


# ----------------------------------------------------------------------------------------------------
# public loaders


def load_voc(root: str | Path, *, split: str = "val", quirks: str = "fixed") -> SegDataset:
    """Pascal VOC 2012 (20 objects + background = 21 classes, background is class 20).

    Parameters
    ----------
    root : path
        The ``VOC2012`` devkit folder, the ``pascal_voc_d2`` folder, or a folder that contains either.
    split : str
        "val" (the paper's) or "train".
    quirks : {"fixed", "paper"}
        "paper" scores void boundaries as background, as the published loader does.
    """
    quirks = _check_quirks(quirks)
    path = _root(root, "voc")
    items = _voc_items(path, split)
    lut = M.voc_raw_lut(quirks) if items.layout == "voc-devkit" else M.voc_d2_lut()
    info = DatasetInfo("voc", 21, (*M.VOC_CLASSES, "background"), background_index=20, quirks=quirks,
                       notes=items.notes)  # fmt: skip
    return _make(info, items, lut, path)


def load_context(root: str | Path, *, split: str = "val", quirks: str = "fixed") -> SegDataset:
    """Pascal Context-59 + background (60 classes, background is class 59)."""
    quirks = _check_quirks(quirks)
    path = _root(root, "context")
    items = _context_items(path, split)
    lut = M.context_d2_lut() if items.layout == "context-d2" else M.context_raw_lut()
    info = DatasetInfo("context", 60, (*M.CONTEXT59_CLASSES, "background"), background_index=59,
                       quirks=quirks, notes=items.notes)  # fmt: skip
    return _make(info, items, lut, path)


def load_coco_object(
    root: str | Path, *, split: str = "val", quirks: str = "fixed", image_list: str | Path | None = None
) -> SegDataset:
    """COCO-Object: 80 objects + background (81 classes, background is class 80; stuff is background)."""
    quirks = _check_quirks(quirks)
    path = _root(root, "coco-object")
    items = _coco_items(path, split, image_list, "coco-object")
    info = DatasetInfo("coco-object", 81, (*M.COCO_OBJECT_CLASSES, "background"), background_index=80,
                       quirks=quirks, notes=items.notes)  # fmt: skip
    return _make(info, items, M.coco_object_lut(quirks), path)


def load_coco_stuff(
    root: str | Path, *, split: str = "val", quirks: str = "fixed", image_list: str | Path | None = None
) -> SegDataset:
    """COCO-Stuff-27 (the 27 coarse classes; unlabelled pixels ignored; no background class)."""
    quirks = _check_quirks(quirks)
    path = _root(root, "coco-stuff")
    items = _coco_items(path, split, image_list, "coco-stuff")
    info = DatasetInfo("coco-stuff", 27, M.COCO_STUFF_COARSE_CLASSES, quirks=quirks, notes=items.notes)
    return _make(info, items, M.coco_stuff_lut(), path)


def load_cityscapes(root: str | Path, *, split: str = "val", quirks: str = "fixed") -> SegDataset:
    """Cityscapes-27 (labelIds 7..33 -> 0..26, every other id ignored)."""
    quirks = _check_quirks(quirks)
    path = _root(root, "cityscapes")
    items = _cityscapes_items(path, split)
    info = DatasetInfo("cityscapes", 27, M.CITYSCAPES_CLASSES, quirks=quirks, notes=items.notes)
    return _make(info, items, M.cityscapes_lut(), path)


def load_ade20k(root: str | Path, *, split: str = "val", quirks: str = "fixed") -> SegDataset:
    """ADE20K-150 (see the module notes for the "paper" quirk on class 0 / 150)."""
    quirks = _check_quirks(quirks)
    path = _root(root, "ade20k")
    items = _ade20k_items(path, split)
    names = ("other", *M.ADE20K_CLASSES[:149]) if quirks == "paper" else M.ADE20K_CLASSES
    note = items.notes
    if quirks == "paper":
        note = "paper quirk: 'other' (0) is scored as class 0 and 'flag' (150) is never scored"
    info = DatasetInfo("ade20k", 150, names, quirks=quirks, notes=note)
    return _make(info, items, M.ade20k_lut(quirks), path)


#: registry name -> loader
BENCHMARKS: dict[str, Callable[..., SegDataset]] = {
    "voc": load_voc,
    "context": load_context,
    "coco-object": load_coco_object,
    "coco-stuff": load_coco_stuff,
    "cityscapes": load_cityscapes,
    "ade20k": load_ade20k,
}


def load_benchmark(name: str, root: str | Path, **kwargs) -> SegDataset:
    """Load one of :data:`BENCHMARKS` by name."""
    try:
        loader = BENCHMARKS[name]
    except KeyError:
        raise ParameterError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}") from None
    return loader(root, **kwargs)
