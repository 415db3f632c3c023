"""The newer methods as options of the one core: attention-walk affinity, automatic stopping, K-way cut.

Each works from ``DiffCutConfig`` through ``DiffCut`` (images and plain feature maps), the ablation grid
(every row is the pipeline's result) and the command line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _contracts import ablation_grid as _grid
from _contracts import assert_rows_are_the_pipeline as _counts_by_segment
from _reference_ncut import clustered_features

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.ablation import run_ablation
from diffcut_lab.kway import kway_ncut_value
from diffcut_lab.testing import tiny_backbone


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone("sd1")


def _feats(seed: int = 1, k: int = 4, side: int = 12) -> torch.Tensor:
    return clustered_features(seed, side, side, channels=32, k=k, noise=0.5)


def _attention(f: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Self-attention-like probabilities of features: a softmax of scaled cosines (rows sum to 1)."""
    z = torch.nn.functional.normalize(f.reshape(f.shape[0], -1), dim=0)
    return torch.softmax(z.T @ z / temperature, dim=1)


def test_new_settings_are_validated():
    with pytest.raises(dl.ParameterError, match="walk_steps"):
        dl.DiffCutConfig(walk_steps=0)
    with pytest.raises(dl.ParameterError, match="affinity"):
        dl.DiffCutConfig(affinity="euclid")
    with pytest.raises(dl.ParameterError, match="n_segments"):
        dl.DiffCutConfig(n_segments=4)  # K belongs to the K-way cut
    with pytest.raises(dl.ParameterError, match="paper"):
        dl.DiffCutConfig(partition="kway", mode="paper")
    with pytest.raises(dl.ParameterError, match="knn"):
        dl.DiffCutConfig(affinity="attention", knn=8)


def test_kway_from_plain_features_with_k_given_and_from_tau():
    f = _feats()
    seg = dl.DiffCut(None, partition="kway", n_segments=4, refine="none").segment_features(f)
    assert seg.n_segments == 4 and seg.tree.steps == [] and seg.tree.params["k_from"] == "n_segments"
    # K from the recursive cut at tau: the same number of segments, an NCut no worse than the recursion's
    cfg = dl.DiffCutConfig(tau=0.6, refine="none")
    rec = core.cut_tree(f, cfg)
    kw = core.cut_tree(f, cfg.replace(partition="kway"))
    assert kw.n_segments == rec.n_segments
    W = core.affinity_graph(core._grid_features(f), cfg)
    assert kw.params["ncut"] <= kway_ncut_value(W, rec.labels.reshape(-1)) + 1e-9
    with pytest.raises(dl.ParameterError, match="K-way"):
        kw.prune(0.3)


def test_attention_affinity_needs_the_attention_and_cuts_it():
    f = _feats(k=3)
    cfg = dl.DiffCutConfig(affinity="attention", walk_steps=2, refine="none", tau=0.6)
    with pytest.raises(dl.ParameterError, match="attention"):
        dl.DiffCut(None, cfg).segment_features(f)
    seg = dl.DiffCut(None, cfg).segment_features(f, attention=_attention(f))
    assert seg.tree.params["affinity"] == "attention" and seg.tree.params["walk_steps"] == 2
    assert seg.n_segments >= 2
    with pytest.raises(dl.FeatureError, match="144"):
        dl.DiffCut(None, cfg).segment_features(f, attention=torch.ones(10, 10) / 10)


def test_cut_trees_of_every_tau_equal_single_cuts_for_kway_and_attention():
    f = _feats(seed=3, k=5)
    attn = _attention(f)
    for cfg in (
        dl.DiffCutConfig(partition="kway"),
        dl.DiffCutConfig(affinity="attention", walk_steps=4),
        dl.DiffCutConfig(partition="kway", n_segments=3, affinity="attention"),
    ):
        trees = core.cut_trees(f, cfg, [0.4, 0.7, 0.9], attention=attn)
        for tau, tree in trees.items():
            single = core.cut_tree(f, cfg, tau=tau, attention=attn)
            np.testing.assert_array_equal(tree.labels, single.labels)


def test_pipeline_captures_the_attention_of_the_layer(bb):
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    dc = dl.DiffCut(bb, affinity="attention", walk_steps=2, refine="none")
    seg = dc.segment(img)
    cache = dl.capture(bb, dc.inputs(img)[0][1][None], layers=[f"{dc.layer_name()}.probs"], timesteps=50)
    again = dl.DiffCut(None, dc.config).segment_features(
        seg.features, attention=cache[f"{dc.layer_name()}.probs", 50][0]
    )
    np.testing.assert_array_equal(seg.tree.labels, again.tree.labels)
    with pytest.raises(dl.ParameterError, match="attn1"):
        dl.DiffCut(bb, affinity="attention", layer="down_blocks.1.resnets.0").check()


@pytest.mark.slow
def test_variant_rows_are_the_pipeline_result(tiny_dir):
    variants = [{}, {"affinity": "attention", "walk_steps": 2}, {"partition": "kway"},
                {"partition": "kway", "n_segments": 3}]  # fmt: skip
    grid = _grid(
        tiny_dir, layers=["diffcut"], timesteps=[50], alphas=[10.0], refines=["none"], variants=variants
    )
    rows = run_ablation(grid, out=None, progress=False)
    assert len(rows) == len(variants) * 2 * 2  # variants x taus x images
    assert {json.dumps(v, sort_keys=True) for v in variants} == set(rows["params"])
    _counts_by_segment(grid, rows)


def test_diffseg_rows_run_on_the_captured_attention(tiny_dir):
    grid = _grid(tiny_dir, layers=["diffcut"], timesteps=[50], refines=["none"], methods=["diffseg"])
    rows = run_ablation(grid, out=None, progress=False)
    assert len(rows) == 2 and (rows["n_segments"] >= 1).all()


@pytest.mark.parametrize("rule", ["dynamic", "stable"])
def test_auto_tau_finds_the_clusters_and_says_why(rule):
    for k in (1, 4):
        f = _feats(seed=5, k=k, side=14)
        seg = dl.DiffCut(None, tau="auto", auto_rule=rule, refine="none").segment_features(f)
        assert seg.n_segments == k
        tree = seg.tree
        assert tree.params["tau"] == "auto" and core.tree_config(tree).tau == "auto"
        assert core.tree_config(tree).auto_rule == rule
        if rule == "dynamic":
            assert all("automatic" in s.reason or "one segment" in s.reason for s in tree.steps if s.ncut > 0)
        else:
            assert "unchanged for tau" in tree.params["auto_reason"]
    kw = dl.DiffCut(None, tau="auto", partition="kway", refine="none").segment_features(
        _feats(seed=5, k=4, side=14)
    )
    assert kw.n_segments == 4 and kw.tree.params["k_from"] == "the automatic rule"


def test_auto_rows_hold_nan_tau_and_equal_the_pipeline(tiny_dir):
    grid = _grid(
        tiny_dir, layers=["diffcut"], timesteps=[50], alphas=[10.0], refines=["none"], taus=["auto", 0.5]
    )
    rows = run_ablation(grid, out=None, progress=False)
    assert rows["tau"].isna().sum() == 2  # two images at tau "auto"
    assert grid.to_dict()["taus"] == ["auto", 0.5]
    _counts_by_segment(grid, rows)


def test_grid_checks_variants():
    with pytest.raises(dl.ParameterError, match="variants"):
        _grid("pocket", variants=[{"walk_steps": 0}])
    with pytest.raises(dl.ParameterError, match="tau"):
        _grid("pocket", variants=[{"tau": 0.4}])  # the taus axis sets it
    with pytest.raises(dl.ParameterError, match="paper"):
        _grid("pocket", variants=[{"partition": "kway"}], modes=["paper"])


def test_command_line_takes_the_new_settings(tiny_dir, tmp_path, capsys):
    from PIL import Image

    from diffcut_lab import cli

    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img)
    argv = ["segment", str(img), "--model", str(tiny_dir), "--refine", "none", "--tau", "auto", "--partition",
            "kway", "--affinity", "attention", "--walk-steps", "2", "--knn", "none", "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "o" / "settings.json").read_text())["config"]
    assert (config["tau"], config["partition"], config["affinity"], config["walk_steps"]) == (
        "auto",
        "kway",
        "attention",
        2,
    )
    assert cli.main(["segment", str(img), "--model", str(tiny_dir), "--n-segments", "3", "--partition", "kway",
                     "--refine", "none", "--out", str(tmp_path / "k")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "k" / "settings.json").read_text())["images"][0]["n_segments"] == 3


def test_the_stepper_says_a_kway_partition_has_no_steps():
    from diffcut_lab import viz

    f = _feats()
    with pytest.raises(ValueError, match="K-way"):
        viz.cut_stepper(core.cut_tree(f, dl.DiffCutConfig(partition="kway")), features=f)
    auto = core.cut_tree(f, dl.DiffCutConfig(tau="auto"))
    app = viz.cut_stepper(auto, features=f)  # an automatic tree steps like any other
    app.set_tau(0.3)
    assert app.tree.n_segments <= auto.n_segments


def test_spectral_rows_on_the_attention_walk_get_the_captured_attention(tiny_dir):
    """The spectral baseline on the attention graph: the engine captures the layer's probabilities for it
    and its rows are segment_features' labels on them (the graph the cut would partition)."""
    from diffcut_lab.baselines import segment_features

    grid = _grid(tiny_dir, layers=["diffcut"], timesteps=[50], refines=["none"], methods=["spectral"],
                 method_kwargs={"spectral": {"affinity": "attention", "walk_steps": 1}})  # fmt: skip
    rows = run_ablation(grid, out=None, progress=False)
    assert len(rows) == 2 and (rows["n_segments"] >= 1).all()
    bb = dl.load_backbone(str(tiny_dir))
    from diffcut_lab.datasets import load_dataset

    ds = load_dataset(grid.dataset, **grid.dataset_kwargs)
    dc = dl.DiffCut(bb, refine="none")
    name = dc.layer_name()
    for _, row in rows.iterrows():
        x = dc.inputs(ds[int(row["image_index"])].image)[0][1][None]
        cache = dl.capture(bb, x, layers=[name, f"{name}.probs"], timesteps=50, seed=grid.seed)
        labels = segment_features(cache[name, 50][0], "spectral", affinity="attention", walk_steps=1,
                                  attention=cache[f"{name}.probs", 50][0], seed=grid.seed)  # fmt: skip
        assert row["n_segments"] == len(np.unique(labels))
