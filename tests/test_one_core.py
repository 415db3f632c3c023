"""Contract tests: every path from features to labels is the one segmentation core with one config.

An ablation row must equal ``DiffCut(...).segment`` scored by ``hungarian_miou`` for the same settings;
``segment`` and ``eval`` must build the same network input; the cut stepper's recompute must keep every
setting of the tree; the DiffCut method of ``segment_features`` and the layer views must give the core's
labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _contracts import ablation_grid, assert_rows_are_the_pipeline

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab import viz
from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.datasets import load_dataset
from diffcut_lab.metrics import hungarian_miou

LAYERS = ["diffcut", "down_blocks.1.attentions.0.transformer_blocks.0.attn1"]


@pytest.mark.slow
def test_every_ablation_row_is_the_pipeline_result(tiny_dir):
    grid = ablation_grid(tiny_dir)
    rows = run_ablation(grid, out=None, progress=False)
    assert_rows_are_the_pipeline(grid, rows)
    # the min_size setting reaches the recursion: other rows, and still the pipeline's result
    sized = ablation_grid(tiny_dir, refines=["none"], method_kwargs={"diffcut": {"min_size": 24}})
    sized_rows = run_ablation(sized, out=None, progress=False)
    assert_rows_are_the_pipeline(sized, sized_rows)
    keys = ["image", "layer", "timestep", "alpha", "tau"]
    plain = rows[rows["refine"] == "none"].set_index(keys).sort_index()
    other = sized_rows.set_index(keys).sort_index()
    assert (other["n_segments"] <= plain["n_segments"]).all()
    assert (other["n_segments"] < plain["n_segments"]).any()
    assert not set(other["config_id"]) & set(plain["config_id"])


@pytest.mark.slow
def test_paper_preset_rows_are_the_pipeline_result(tiny_dir):
    grid = ablation_grid(tiny_dir, layers=["diffcut"], timesteps=[50], alphas=[10.0], modes=["paper"],
                 refines=["pamr"], preset="paper")  # fmt: skip
    rows = run_ablation(grid, out=None, progress=False)
    assert_rows_are_the_pipeline(grid, rows)
    point = grid.configs()[0].diffcut_config()
    assert point.antialias is False and point.pamr_guide == "input" and point.noise_device == "model"


def test_segment_and_eval_build_the_same_input(tiny_dir, tmp_path):
    """A non-square image: eval's cached features are exactly DiffCut's for the same settings."""
    from diffcut_lab.ablation.evaluation import evaluate
    from diffcut_lab.datasets.base import DatasetInfo, Sample, SegDataset
    from diffcut_lab.datasets.synthetic import make_scene
    from diffcut_lab.feature_cache import FeatureStore

    scene = make_scene(7, size=(40, 64))
    info = DatasetInfo("toy", 6, tuple("abcdef"))
    ds = SegDataset(info, ["wide"], lambda i: Sample("wide", scene.image, scene.mask.astype(np.int64)))
    bb = dl.load_backbone(str(tiny_dir))
    for cfg in (dl.DiffCutConfig(refine="none"), dl.DiffCutConfig.paper(refine="none")):
        cache = tmp_path / f"c{cfg.mode}"
        evaluate(ds, bb, cfg, cache_dir=str(cache), progress=False)
        store = FeatureStore(cache)
        (entry,) = list(store.root.rglob("*.safetensors"))
        from safetensors.torch import load_file

        cached = next(iter(load_file(entry).values()))
        dc = dl.DiffCut(bb, cfg.replace(policy="center_crop", mask_size=128))
        region, _ = dc.inputs(scene.image)[0]
        assert tuple(region.shape[-2:]) == (39, 39)  # the published crop, min(H, W) - 1
        torch.testing.assert_close(dc.features(scene.image)[0], cached.float(), rtol=0, atol=0)


def _random_features(seed: int = 0, c: int = 16, side: int = 12) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(c, side, side)).astype(np.float32))


def test_stepper_recompute_keeps_every_tree_setting():
    feats = _random_features()
    cfg = dl.DiffCutConfig(tau=0.9, alpha=10.0, min_size=6, max_depth=4)
    tree = core.cut_tree(feats, cfg)
    assert tree.params == {
        "alpha": 10.0, "knn": None, "min_size": 6, "max_depth": 4, "solver": "auto", "affinity": "cosine",
        "walk_steps": 1, "partition": "recursive", "n_segments": None, "auto_rule": "dynamic",
    }  # fmt: skip
    app = viz.cut_stepper(tree, features=feats)
    app.set_alpha(10.0)  # the same alpha: the same tree
    np.testing.assert_array_equal(app.tree.labels, tree.labels)
    assert app.tree.params == tree.params and len(app.tree.steps) == len(tree.steps)
    app.set_alpha(5.0)
    app.set_tau(1.2)  # above the tree's tau: recomputed, still with min_size and max_depth
    assert app.tree.params["min_size"] == 6 and app.tree.params["max_depth"] == 4
    assert min(len(leaf) for leaf in app.tree.leaves) >= 6
    assert max(s.depth for s in app.tree.steps) < 4
    np.testing.assert_array_equal(
        app.tree.labels, core.cut_tree(feats, cfg.replace(alpha=5.0, tau=1.2)).labels
    )


def test_segment_features_and_layer_views_give_the_core_labels(tiny_dir):
    feats = _random_features(1)
    cfg = dl.DiffCutConfig(tau=0.7, min_size=3)
    expected = core.grid_labels(core.cut_tree(feats, cfg))
    np.testing.assert_array_equal(dl.segment_features(feats, "diffcut", tau=0.7, min_size=3), expected)
    np.testing.assert_array_equal(dl.segment_features(feats, "diffcut", config=cfg), expected)
    bb = dl.load_backbone(str(tiny_dir))
    scenes = load_dataset("synthetic", n=1, size=64)
    cache = dl.capture(bb, [scenes[0].image], layers=LAYERS[:1], timesteps=[50])
    name = cache.layers[0]
    df = dl.layer_scores(cache, [scenes[0].label], num_classes=scenes.info.num_classes, keep_labels=True,
                         tau=0.7, refine="none")  # fmt: skip
    f = cache[name, 50][0]
    np.testing.assert_array_equal(
        df.iloc[0]["labels"], core.grid_labels(core.cut_tree(f, cfg.replace(min_size=1)))
    )
    seg = dl.DiffCut(None, refine="none", tau=0.7).segment_features(f, cache.images[0], size=(64, 64))
    score = hungarian_miou(seg.labels, scenes[0].label, num_classes=scenes.info.num_classes).miou
    assert df.iloc[0]["miou"] == pytest.approx(score)


def test_config_is_the_one_settings_object():
    from diffcut_lab.ablation.grid import AXES
    from diffcut_lab.commands.report import ReportParams

    # grid axes name config fields; a report's parameters carry the config itself
    assert set(AXES.values()) <= set(dl.DiffCutConfig.field_names())
    params = ReportParams(config=dl.DiffCutConfig(tau=0.3))
    assert dl.DiffCutConfig.from_dict(params.to_dict()["config"]) == params.config
    # bad values fail before any work, naming the field, wherever they come from
    with pytest.raises(dl.ParameterError, match="tau"):
        AblationGrid(dataset="synthetic", taus=[3.0])
    with pytest.raises(dl.ParameterError, match="min_size"):
        AblationGrid(dataset="synthetic", method_kwargs={"diffcut": {"min_size": 0}})
    with pytest.raises(dl.ParameterError, match="'tau' is set by the 'taus' axis"):
        AblationGrid(dataset="synthetic", method_kwargs={"diffcut": {"tau": 0.3}})
