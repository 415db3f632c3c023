"""``diffcut-lab eval``: the paper's protocol on a fake VOC directory, checked step by step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffcut_lab.ablation.evaluation import EvalReport, evaluate, format_table
from diffcut_lab.datasets import load_dataset
from diffcut_lab.datasets.base import DatasetInfo, preprocess


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A VOC2012 devkit with three synthetic scenes (non-square), objects as VOC classes, void borders."""
    from diffcut_lab.datasets.synthetic import make_scene

    base = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    ids = [f"2007_00000{i}" for i in range(3)]
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids))
    (base / "JPEGImages").mkdir()
    (base / "SegmentationClass").mkdir()
    for k, i in enumerate(ids):
        scene = make_scene(2_000_000 + k, size=(72, 90))
        Image.fromarray(scene.image).save(base / "JPEGImages" / f"{i}.jpg", quality=95)
        raw = np.where(scene.mask == 0, 0, (scene.mask * 7) % 20 + 1).astype(np.uint8)
        edge = np.zeros_like(raw, bool)
        edge[:, 1:] |= scene.mask[:, 1:] != scene.mask[:, :-1]
        raw[edge] = 255  # void boundaries, as VOC draws them
        im = Image.fromarray(raw, mode="P")
        im.putpalette([v % 256 for v in range(768)])
        im.save(base / "SegmentationClass" / f"{i}.png")
    return base.parent.parent


def test_eval_command_on_fake_voc(voc_root, tiny_dir, tmp_path, capsys):
    from diffcut_lab.cli import main

    report = tmp_path / "report.json"
    argv = ["eval", "--dataset", "voc", "--root", str(voc_root), "--model", str(tiny_dir), "--limit", "2",
            "--mask-size", "64", "--tau", "0.4", "--json", str(report), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for col in ("Method", "VOC", "Context", "COCO-Object", "COCO-Stuff", "Cityscapes", "ADE20K", "images/s"):
        assert col in header
    assert "DiffCut (paper, reported)" in out and "0.652" in out
    assert "images/s" in out and "2 images in" in out
    data = json.loads(report.read_text())
    assert data["n_images"] == 2 and 0 <= data["miou"] <= 1 and data["images_per_second"] > 0
    assert len(data["iou"]) == 21 and data["config"]["tau"] == 0.4
    # the table row is the JSON's score
    row = next(line for line in out.splitlines() if line.startswith("| diffcut"))
    assert f"{data['miou']:.3f}" in row


@pytest.mark.parametrize("refine", ["none", "pamr"])
def test_eval_follows_the_protocol_step_by_step(voc_root, tiny_dir, refine):
    """Recompute one image by hand with the published pipeline: crop, resize without antialias, capture,
    features normalised twice, paper-mode NCut, published segment numbering, concept assignment,
    background merge, (PAMR guided by the model input + median), Hungarian -> the same TP/FP/FN."""
    from diffcut_lab import DiffCutConfig
    from diffcut_lab.affinities import affinity
    from diffcut_lab.backbones import load_backbone
    from diffcut_lab.hooks import capture
    from diffcut_lab.metrics import image_counts, merge_background
    from diffcut_lab.ncut import recursive_ncut
    from diffcut_lab.refine import concept_assignment, median_filter, pamr

    ds = load_dataset("voc", voc_root, limit=1)
    bb = load_backbone(str(tiny_dir))
    rep = evaluate(ds, bb, DiffCutConfig.paper(tau=0.4, refine=refine, mask_size=64), progress=False)
    s = ds[0]
    x, y = preprocess(s.image, s.label, size=64, label_size=64)
    f = capture(bb, x[None], layers="diffcut", timesteps=50, seed=42, image_size=64)["diffcut", 50][0].float()
    fn1 = torch.nn.functional.normalize(f, dim=0)
    tree = recursive_ncut(affinity(fn1, alpha=10.0), tau=0.4, grid=tuple(f.shape[-2:]), mode="paper")
    pred = np.asarray(concept_assignment(tree.published_labels(), f, (64, 64), order="features"))
    pred, gt = merge_background(pred, y.numpy(), 21, match="reference")
    if refine == "pamr":
        small = torch.nn.functional.interpolate(x[None], size=(64, 64), mode="bilinear", align_corners=False)[
            0
        ]
        pred = np.asarray(median_filter(pamr(small, pred, num_iter=10, dilations=(1, 2, 4, 8)), 3))
    tp, fp, fn, n = image_counts(pred, gt, 21, match="reference")
    row = rep.rows.iloc[0]
    assert (
        list(row["tp"]) == tp.tolist() and list(row["fp"]) == fp.tolist() and list(row["fn"]) == fn.tolist()
    )
    assert row["n_pixels"] == n == int((y.numpy() != 255).sum())
    assert rep.result.miou == pytest.approx(
        np.nanmean(np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), np.nan))
    )


def test_two_stage_background_merges_unmatched_clusters():
    """Two clusters on the background: with the background protocol they are merged and both count."""
    from diffcut_lab import DiffCutConfig
    from diffcut_lab import segmentation as core
    from diffcut_lab.ablation.engine import _Scorer

    gt = np.zeros((8, 8), np.int64)
    gt[:, :4] = 2  # background of a 3-class set (objects 0, 1; background 2)
    gt[:, 4:] = 0
    labels = np.array([[0, 1, 2, 2]] * 4)  # clusters 0 and 1 on background, 2 on the object
    feats = torch.from_numpy(np.stack([labels == k for k in range(3)]).astype(np.float32))
    info_bg = DatasetInfo("toy", 3, ("a", "b", "bg"), background_index=2)
    info_no = DatasetInfo("toy", 3, ("a", "b", "c"))
    cfg = DiffCutConfig(refine="none")
    scorer = _Scorer(gt, info_bg, "reference")
    tp, _fp, fn, n = scorer.counts(core.pixel_labels(labels, feats, (8, 8), cfg, before_refine=scorer.merge))
    assert tp.tolist() == [32, 0, 32] and fn.sum() == 0 and n == 64
    scorer = _Scorer(gt, info_no, "reference")
    tp, _fp, fn, n = scorer.counts(core.pixel_labels(labels, feats, (8, 8), cfg))
    assert tp[0] == 32 and tp[2] == 16 and fn[2] == 16  # one background cluster left unmatched


def test_format_table_layout():
    from diffcut_lab.metrics import MIoUResult

    res = MIoUResult.from_counts([5, 5], [0, 5], [5, 0])
    cfg = {"method": "diffcut", "tau": 0.5, "refine": "pamr"}
    r = EvalReport("context", "pocket", cfg, res, 4, 2.0, rows=None)
    table = format_table([r], reported=False)
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "Method (mIoU, 0-1)"
    row = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert row[0] == "diffcut (pocket, tau=0.5, pamr)"
    assert row[1] == "-" and row[2] == f"{res.miou:.3f}" and row[-2:] == ["4", "2.00"]
    synth = EvalReport("synthetic", "pocket", cfg, res, 1, 1.0, rows=None)
    assert "synthetic" in format_table([synth]).splitlines()[0]


@pytest.mark.slow
def test_eval_pocket_on_synthetic(capsys):
    pytest.importorskip("diffcut_lab.pocket")
    from diffcut_lab.backbones import pocket_weights_dir
    from diffcut_lab.cli import main

    if not (pocket_weights_dir() / "unet").is_dir():
        pytest.skip("pocket weights not installed")
    assert main(["eval", "--dataset", "synthetic", "--model", "pocket", "--limit", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out.splitlines()[0] and "2 images in" in out


def _no_work(*args, **kwargs):
    raise AssertionError("the evaluation ran before its output paths were checked")


@pytest.mark.parametrize("option", ["--json", "--rows"])
def test_eval_output_paths_are_checked_before_the_work(tmp_path, tiny_dir, capsys, monkeypatch, option):
    import diffcut_lab.ablation.evaluation as evaluation
    import diffcut_lab.datasets as datasets
    from diffcut_lab.cli import main

    monkeypatch.setattr(evaluation, "evaluate", _no_work)
    monkeypatch.setattr(datasets, "load_dataset", _no_work)
    base = ["eval", "--dataset", "synthetic", "--model", str(tiny_dir), "--limit", "1", "--no-progress"]
    long = tmp_path / ("x" * 251 + ".json")  # 256 bytes: one more than the file system allows
    for target, message in ((tmp_path, "is a directory; give a file name"),
                            (long, "is 256 bytes long; this file system allows 255"),
                            (tmp_path / "missing" / "r.json", "does not exist; create it first")):  # fmt: skip
        assert main([*base, option, str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and option in err, err


def test_eval_writes_a_255_byte_name_whole(tmp_path, tiny_dir, capsys):
    from diffcut_lab.cli import main

    report = tmp_path / ("r" * 250 + ".json")  # 255 bytes: the longest name allowed
    rows = tmp_path / ("w" * 247 + ".parquet")
    argv = ["eval", "--dataset", "synthetic", "--model", str(tiny_dir), "--limit", "1", "--mask-size", "32",
            "--json", str(report), "--rows", str(rows), "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["n_images"] == 1
    import pandas as pd

    assert len(pd.read_parquet(rows)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([report.name, rows.name])  # no temporary left


def test_ablate_output_paths_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    import diffcut_lab.ablation as ablation
    from diffcut_lab.cli import main

    monkeypatch.setattr(ablation, "run_ablation", _no_work)
    grid = tmp_path / "g.yaml"
    grid.write_text("dataset: synthetic\n")
    afile = tmp_path / "a-file"
    afile.write_text("")
    for argv, message in ((["--out", str(afile)], "--out"), (["--cache-dir", str(afile)], "--cache-dir"),
                          (["--out", str(afile / "sub")], "is a file, so the folder cannot be made"),
                          (["--out", str(tmp_path / ("o" * 256))], "256 bytes long")):  # fmt: skip
        assert main(["ablate", str(grid), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_eval_refuses_a_limit_below_one_before_the_work(tmp_path, capsys, monkeypatch, limit):
    import diffcut_lab.datasets as datasets
    from diffcut_lab.cli import main

    monkeypatch.setattr(datasets, "load_dataset", _no_work)
    assert main(["eval", "--dataset", "synthetic", "--limit", limit, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--limit must be >= 1" in err
