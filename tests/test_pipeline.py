"""DiffCut pipeline: configuration, segment() on a tiny backbone, segment_features() on known features."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from _trees import TREE_KINDS, assert_same_tree, kind_features
from PIL import Image

from diffcut_lab.colors import blend_labels, label_colors
from diffcut_lab.errors import FeatureError, ParameterError, UnknownLayerError
from diffcut_lab.metrics import hungarian_miou
from diffcut_lab.pipeline import DiffCut, DiffCutConfig, Segmentation
from diffcut_lab.testing import tiny_backbone


@pytest.fixture(scope="module")
def bb():
    torch.manual_seed(0)
    return tiny_backbone("pixel")


def _scene(h: int = 48, w: int = 40) -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    img[:, w // 2 :] = (220, 210, 40)
    img[h // 5 : h // 2, w // 8 : w // 3] = (200, 30, 30)
    return img


# ----------------------------------------------------------------------------------------------------
# configuration


def test_config_defaults_round_trip_and_frozen():
    cfg = DiffCutConfig()
    d = cfg.to_dict()
    assert d["layer"] == "diffcut" and d["timestep"] == 50 and d["tau"] == 0.5 and d["alpha"] == 10.0
    assert d["refine"] == "pamr" and d["upsample"] == "concept" and d["mode"] == "fixed"
    assert d["pamr_iter"] == 10 and d["pamr_dilations"] == [1, 2, 4, 8]
    json.dumps(d)
    assert DiffCutConfig.from_dict(d) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tau = 0.3  # type: ignore[misc]
    assert cfg.replace(mask_size=128).mask_size == (128, 128)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("tau", 0.0, "tau"),
        ("tau", 2.5, "tau"),
        ("tau", float("nan"), "tau"),
        ("alpha", 0, "alpha"),
        ("alpha", -1.0, "alpha"),
        ("timestep", -1, "timestep"),
        ("timestep", 1.5, "timestep"),
        ("refine", "crf", "refine"),
        ("upsample", "bicubic", "upsample"),
        ("mode", "fast", "mode"),
        ("policy", "pad", "policy"),
        ("mask_size", (0, 4), "mask_size"),
        ("pamr_dilations", (), "pamr_dilations"),
        ("min_size", 0, "min_size"),
    ],
)
def test_config_validation(field, value, match):
    with pytest.raises(ParameterError, match=match):
        DiffCutConfig(**{field: value})


def test_config_tau_bounds_are_inclusive_at_two():
    assert DiffCutConfig(tau=2.0).tau == 2.0
    assert DiffCutConfig(tau=1e-6).tau == 1e-6
    with pytest.raises(ParameterError, match="unknown DiffCut setting"):
        DiffCutConfig().replace(tua=0.3)


# ----------------------------------------------------------------------------------------------------
# segment_features: known features, no backbone needed


def _clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(C, 8, 8) features with three clear regions, and those regions."""
    rng = np.random.default_rng(seed)
    reg = np.zeros((8, 8), int)
    reg[:, 4:] = 1
    reg[1:4, 1:3] = 2
    centres = rng.normal(size=(3, 16))
    f = centres[reg] + 0.05 * rng.normal(size=(8, 8, 16))
    return f.transpose(2, 0, 1).astype(np.float32), reg


def test_segment_features_recovers_regions_at_image_size(bb):
    feats, reg = _clustered()
    img = np.kron(reg, np.ones((6, 5), int))  # 48x40 regions, colour-coded
    colours = np.array([[30, 30, 30], [220, 210, 40], [200, 30, 30]], np.uint8)
    image = colours[img]
    for refine in ("pamr", "median", "none"):
        for upsample in ("concept", "nearest"):
            seg = DiffCut(bb, refine=refine, upsample=upsample).segment_features(feats, image)
            assert isinstance(seg, Segmentation)
            assert seg.labels.shape == (48, 40) and seg.labels.dtype == np.int64
            assert seg.image.shape == (48, 40, 3) and seg.image.dtype == np.uint8
            assert seg.tree.n_segments == 3
            assert seg.n_segments == 3
            # the colour regions, up to renaming (a 3x3 median may round a corner pixel or two)
            score = hungarian_miou(seg.labels, img, 3)
            assert score.miou > 0.95, (refine, upsample, score.iou)
            if refine == "none" and upsample == "nearest":  # integer factor: exact
                assert score.miou == 1.0


def test_segment_features_sizes_and_errors(bb):
    feats, _ = _clustered()
    dc = DiffCut(bb, refine="none")
    assert dc.segment_features(feats).labels.shape == (8, 8)  # the grid without image or size
    assert dc.segment_features(torch.from_numpy(feats)[None], size=(20, 30)).labels.shape == (20, 30)
    assert DiffCut(bb, refine="none", mask_size=16).segment_features(feats).labels.shape == (16, 16)
    with pytest.raises(ParameterError, match="needs the image"):
        DiffCut(bb).segment_features(feats)
    with pytest.raises(FeatureError):
        dc.segment_features(np.zeros((8, 8)))


def test_refine_max_side_bounds_the_working_size(bb):
    feats, reg = _clustered()
    image = np.kron(reg, np.ones((12, 12), int)).astype(np.uint8) * 100
    image = np.repeat(image[..., None], 3, axis=2)
    seg = DiffCut(bb, refine_max_side=32).segment_features(feats, image)
    assert seg.labels.shape == (96, 96)
    full = DiffCut(bb, refine_max_side=None).segment_features(feats, image)
    assert (seg.labels == full.labels).mean() > 0.95


# ----------------------------------------------------------------------------------------------------
# segment(): end to end on the tiny pixel-space backbone


def test_segment_single_image_at_original_size(bb):
    dc = DiffCut(bb, tau=0.5)
    seg = dc.segment(_scene())
    assert isinstance(seg, Segmentation)
    assert seg.labels.shape == (48, 40) and seg.labels.dtype == np.int64
    assert seg.image.shape == (48, 40, 3)
    np.testing.assert_array_equal(seg.image, _scene())
    side = bb.image_size // 4  # the tiny model's "diffcut" layer is 4x below the input
    assert tuple(seg.features.shape[1:]) == (side, side)
    assert seg.labels.min() == 0 and np.unique(seg.labels).size == seg.labels.max() + 1
    assert seg.config.tau == 0.5
    assert set(seg.timings) >= {"features", "ncut", "upsample", "refine"}
    assert seg.overlay().shape == (48, 40, 3)


def test_segment_is_deterministic_and_matches_segment_features(bb):
    dc = DiffCut(bb, tau=1.0, refine="median")
    a = dc.segment(_scene())
    b = dc.segment(_scene())
    np.testing.assert_array_equal(a.labels, b.labels)
    torch.testing.assert_close(a.features, b.features)
    again = dc.segment_features(a.features, a.image)
    np.testing.assert_array_equal(again.labels, a.labels)


def test_segment_batch_of_mixed_inputs(bb, tmp_path):
    scene = _scene()
    path = tmp_path / "scene.png"
    Image.fromarray(scene).save(path)
    grey16 = (np.linspace(0, 65535, 30 * 50).reshape(30, 50)).astype(np.uint16)
    rgba = Image.fromarray(np.dstack([scene, np.full(scene.shape[:2], 255, np.uint8)]), mode="RGBA")
    tensor = torch.from_numpy(scene).permute(2, 0, 1).float() / 255
    dc = DiffCut(bb, refine="pamr", pamr_iter=2)
    segs = dc.segment([str(path), path, grey16, rgba, tensor, Image.fromarray(scene).convert("L")])
    assert isinstance(segs, list) and len(segs) == 6
    assert [s.labels.shape for s in segs] == [(48, 40), (48, 40), (30, 50), (48, 40), (48, 40), (48, 40)]
    # the same picture read four ways gives the same segmentation
    for s in segs[1:2] + segs[3:5]:
        np.testing.assert_array_equal(s.labels, segs[0].labels)
    # the noise is shared across a batch: an image segments the same alone as within a batch
    np.testing.assert_array_equal(dc.segment(scene).labels, segs[0].labels)
    # a (B, 3, H, W) tensor is a batch too
    batch = dc.segment(tensor[None].repeat(2, 1, 1, 1))
    assert isinstance(batch, list) and len(batch) == 2


def test_segment_center_crop_and_mask_size(bb):
    wide = np.zeros((40, 64, 3), np.uint8)
    wide[:, 32:] = 255
    seg = DiffCut(bb, policy="center_crop", refine="none").segment(wide)
    # the published crop: side min(H, W) - 1 = 39, offsets rounded as torchvision's CenterCrop
    assert seg.labels.shape == (39, 39)
    np.testing.assert_array_equal(seg.image, wide[0:39, 12:51])
    seg = DiffCut(bb, policy="center_crop", mask_size=16).segment(wide)
    assert seg.labels.shape == (16, 16) and seg.image.shape == (16, 16, 3)


def test_tau_controls_granularity(bb):
    coarse = DiffCut(bb, tau=0.05, refine="none").segment(_scene())
    fine = DiffCut(bb, tau=2.0, refine="none", min_size=4).segment(_scene())
    assert coarse.tree.n_segments <= fine.tree.n_segments
    assert fine.tree.n_segments > 1


def test_segment_errors(bb):
    with pytest.raises(UnknownLayerError):
        DiffCut(bb, layer="down_blocks.9.nothing").segment(_scene())
    with pytest.raises(ParameterError, match="matches"):
        DiffCut(bb, layer="attn1").segment(_scene())
    n = bb.scheduler.config.num_train_timesteps
    with pytest.raises(ParameterError, match="timestep"):
        DiffCut(bb, timestep=n).segment(_scene())
    with pytest.raises(ParameterError, match="tau"):
        DiffCut(bb, tau=3)
    with pytest.raises(ParameterError, match="unknown DiffCut setting"):
        DiffCut(bb, taus=0.3)
    with pytest.raises(ParameterError, match="multiples"):
        DiffCut(bb, image_size=50).segment(_scene())
    from diffcut_lab.errors import ImageInputError

    with pytest.raises(ImageInputError):
        DiffCut(bb).segment("/no/such/image.png")
    with pytest.raises(ImageInputError):
        DiffCut(bb).segment([])


def test_colours_and_overlay():
    cols = label_colors(30)
    assert cols.shape == (30, 3) and cols.dtype == np.uint8
    assert len({tuple(c) for c in cols}) == 30 and not (cols == 0).all(1).any()
    img = np.zeros((4, 4, 3), np.uint8)
    lab = np.zeros((4, 4), int)
    lab[:, 2:] = 1
    out = blend_labels(img, lab, 0.5, edges=False)
    np.testing.assert_array_equal(out[0, 0], np.round(cols[0] * 0.5).astype(np.uint8))
    assert (blend_labels(img, lab, 0.5)[:, 1] == 255).all()  # border column drawn white
    with pytest.raises(ParameterError):
        blend_labels(img, lab[:2], 0.5)


def test_pocket_model_ships_and_segments():
    from diffcut_lab.backbones import load_backbone

    seg = DiffCut(load_backbone("pocket")).segment(_scene(64, 64))
    assert seg.labels.shape == (64, 64)


def test_features_only_pipeline_and_paper_mode():
    feats, reg = _clustered(seed=1)
    for mode in ("fixed", "paper"):
        seg = DiffCut(None, mode=mode, refine="none", upsample="nearest").segment_features(feats, size=(8, 8))
        assert hungarian_miou(seg.labels, reg, 3).miou == 1.0
        assert seg.tree.mode == mode
    with pytest.raises(ParameterError, match="no backbone"):
        DiffCut(None).segment(_scene())


# ----------------------------------------------------------------------------------------------------
# a Segmentation carries what cutting it again needs


@pytest.mark.parametrize(("name", "settings", "marks"), TREE_KINDS, ids=[k[0] for k in TREE_KINDS])
def test_segmentation_recut_keeps_every_cut_setting(name, settings, marks):
    f, attn = kind_features()
    seg = DiffCut(None, refine="none", **settings).segment_features(f, attention=attn)
    assert {k: seg.tree.params.get(k) for k in marks} == marks
    if name == "attention":
        torch.testing.assert_close(seg.attention, attn.float(), rtol=0, atol=0)
    else:
        assert seg.attention is None  # kept only when the cut walked on it
    assert_same_tree(seg.recut(), seg.tree)
    other = seg.recut(alpha=4.0)
    assert other.params["alpha"] == 4.0
    assert {k: other.params.get(k) for k in marks} == marks  # the same kind of tree
    assert (
        other.params["affinity"] == seg.tree.params["affinity"]
        and other.params["knn"] == seg.tree.params["knn"]
    )
    if seg.tree.params["affinity"] == "cosine":
        assert_same_tree(other, DiffCut(None, seg.config.replace(alpha=4.0)).segment_features(f).tree)


def test_an_attention_segmentation_is_cut_again_at_a_larger_tau():
    f, attn = kind_features(seed=3)
    cfg = DiffCutConfig(affinity="attention", walk_steps=2, tau=0.4, refine="none")
    seg = DiffCut(None, cfg).segment_features(f, attention=attn)
    higher = seg.recut(tau=0.9)
    assert higher.params["affinity"] == "attention" and higher.tau == 0.9
    expected = DiffCut(None, cfg.replace(tau=0.9)).segment_features(f, attention=attn).tree
    assert_same_tree(higher, expected)
    assert higher.n_segments >= seg.tree.n_segments
    assert_same_tree(higher.prune(0.4), seg.tree)
    with pytest.raises(ParameterError, match="cut only"):
        seg.recut(refine="median")


def test_segment_keeps_the_attention_of_its_own_forward():
    sd1 = tiny_backbone("sd1")
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    dc = DiffCut(sd1, affinity="attention", walk_steps=2, refine="none")
    seg = dc.segment(img)
    h, w = seg.features.shape[1:]
    assert seg.attention is not None and tuple(seg.attention.shape) == (h * w, h * w)
    assert seg.attention.device.type == "cpu" and seg.attention.dtype == torch.float32
    assert_same_tree(seg.recut(), seg.tree)
    assert seg.recut(tau=1.0).params["affinity"] == "attention"
    assert DiffCut(sd1, refine="none").segment(img).attention is None
