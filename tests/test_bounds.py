"""Bounded memory and safe arithmetic: what would exhaust memory or silently degenerate is refused or
warned about before any work, with a way out named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.config import MAX_DENSE_NODES, MAX_IMAGE_PIXELS
from diffcut_lab.testing import tiny_backbone


def test_a_dense_affinity_too_large_is_refused_before_allocating():
    feats = torch.randn(4, 256, 256)  # 65,536 nodes: 16 GiB dense
    with pytest.raises(dl.ParameterError, match="knn=K"):
        dl.affinity(feats)
    w = dl.affinity(feats[:, :64, :64], knn=4)  # the way out works
    assert w.is_sparse and w.shape == (4096, 4096)
    assert MAX_DENSE_NODES == 128 * 128


def test_diffcut_refuses_a_grid_too_large_before_running_the_unet(monkeypatch):
    import diffcut_lab.capturing as hooks

    def no_forward(*a, **k):
        raise AssertionError("the UNet must not run when the grid cannot be cut")

    monkeypatch.setattr(hooks, "capture", no_forward)
    bb = tiny_backbone("pixel", image_size=64)
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(dl.ParameterError, match="knn=32"):  # 32x32 at 64 px -> 256x256 at 512 px
        dl.DiffCut(bb, image_size=512, layer="down_blocks.1.attentions.0.transformer_blocks.0.attn1").segment(image)


def test_the_knn_setting_cuts_a_sparse_graph():
    bb = tiny_backbone("pixel")
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    seg = dl.DiffCut(bb, knn=8, refine="none", tau=0.7).segment(image)
    assert seg.tree.params["knn"] == 8 and seg.labels.shape == (64, 64)
    with pytest.raises(dl.ParameterError, match="knn"):
        dl.DiffCutConfig(knn=8, mode="paper")


def test_an_output_size_too_large_is_refused():
    with pytest.raises(dl.ParameterError, match="above the limit"):
        dl.DiffCutConfig(mask_size=100_000)
    side = int(MAX_IMAGE_PIXELS**0.5)
    assert dl.DiffCutConfig(mask_size=side).mask_size == (side, side)


def test_huge_feature_norms_do_not_collapse_into_one_segment():
    rng = np.random.default_rng(0)
    f = torch.from_numpy(rng.normal(size=(16, 8, 8)).astype(np.float32))
    f[:, :, 4:] += 3.0
    cfg = dl.DiffCutConfig(tau=0.5)
    expected = core.cut_tree(f, cfg).labels
    assert core.cut_tree(f * 1e19, cfg).n_segments == len(np.unique(expected)) > 1
    np.testing.assert_array_equal(core.cut_tree(f * 1e19, cfg).labels, expected)
    np.testing.assert_array_equal(core.cut_tree(f * 1e-25, cfg).labels, expected)


def test_an_alpha_that_underflows_every_edge_warns():
    f = torch.from_numpy(np.random.default_rng(1).normal(size=(16, 6, 6)).astype(np.float32))
    with pytest.warns(RuntimeWarning, match="falls apart"):
        core.cut_tree(f, dl.DiffCutConfig(alpha=2000.0))
