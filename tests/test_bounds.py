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
        dl.DiffCut(bb, image_size=512, layer="down_blocks.1.attentions.0.transformer_blocks.0.attn1").segment(
            image
        )


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


def test_a_kway_k_above_the_grid_nodes_is_refused_in_the_core_not_clamped():
    f = torch.from_numpy(np.random.default_rng(2).normal(size=(8, 6, 6)).astype(np.float32))
    cfg = dl.DiffCutConfig(partition="kway", n_segments=37)
    refusal = r"n_segments=37, more than the 36 nodes of the 6 x 6 feature grid"
    with pytest.raises(dl.ParameterError, match=refusal) as exc:
        core.cut_tree(f, cfg)
    assert "\n" not in str(exc.value) and "n_segments=36 or fewer" in str(exc.value)
    with pytest.raises(dl.ParameterError, match="6 x 6"):
        cfg.check_grid((6, 6))  # the same rule, before any work, where the grid is known
    assert core.cut_tree(f, cfg.replace(n_segments=5)).n_segments == 5


def test_a_kway_cut_that_would_not_finish_is_refused_naming_a_k_that_works():
    from diffcut_lab.config import MAX_KWAY_WORK, check_kway_segments

    f = torch.from_numpy(np.random.default_rng(3).normal(size=(8, 3, 263)).astype(np.float32))  # 789 nodes
    with pytest.raises(
        dl.ParameterError, match=r"3 x 263 feature grid \(789 nodes\).*n_segments=664 or fewer"
    ):
        core.cut_tree(f, dl.DiffCutConfig(partition="kway", n_segments=700))
    assert 664 * 789 <= MAX_KWAY_WORK < 665 * 789
    assert check_kway_segments(664, (3, 263)) == 664
    with pytest.raises(dl.ParameterError, match=r"the recursive cut at tau 0\.9 gives 700 segments"):
        check_kway_segments(700, (3, 263), source="the recursive cut at tau 0.9")
    with pytest.raises(dl.ParameterError, match="at most 724"):  # no grid takes more: K <= N, K * N bounded
        dl.DiffCutConfig(partition="kway", n_segments=100_000)


def test_check_grid_refuses_what_the_grid_cannot_take():
    dl.DiffCutConfig().check_grid((128, 128))
    with pytest.raises(dl.ParameterError, match="knn=32"):
        dl.DiffCutConfig().check_grid((256, 256))
    dl.DiffCutConfig(knn=8).check_grid((256, 256))
    walk = dl.DiffCutConfig(affinity="attention", walk_steps=64)
    walk.check_grid((64, 64))
    with pytest.raises(dl.ParameterError, match=r"128 x 128 feature grid.*walk_steps <= 2"):
        walk.check_grid((128, 128))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": 2**63}, "seed"),
        ({"seed": -1}, "seed"),
        ({"walk_steps": 10**26}, "walk_steps must be at most 1,024"),
        ({"median_size": 1_000_001}, "median_size must be at most 31"),
        ({"pamr_iter": 10**26}, "pamr_iter must be at most 1,000"),
        ({"pamr_dilations": (1, 10**6)}, "pamr_dilations must be at most 512"),
        ({"partition": "kway", "knn": 8}, "partition 'kway' cuts the dense graph"),
    ],
)
def test_settings_beyond_their_bounds_are_refused_when_the_config_is_built(settings, message):
    with pytest.raises(dl.ParameterError, match=message):
        dl.DiffCutConfig(**settings)


def test_settings_at_their_bounds_are_accepted():
    from diffcut_lab import config as c

    cfg = dl.DiffCutConfig(seed=c.MAX_SEED, walk_steps=c.MAX_WALK_STEPS, median_size=c.MAX_MEDIAN_SIZE,
                           pamr_iter=c.MAX_PAMR_ITER, pamr_dilations=(1, c.MAX_PAMR_DILATION))  # fmt: skip
    assert cfg.seed == 2**63 - 1 and cfg.walk_steps == 1024
