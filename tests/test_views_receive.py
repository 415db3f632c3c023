"""Views receive their numbers: the layer grid draws layer_scores rows, the ablation views draw what
summary.cells chooses (one selection rule), PCA colours come from the library; the layer table, the grid
and the methods table share each image's cuts and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from _contracts import small_study

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab import viz
from diffcut_lab.ablation import summary

TAUS = [0.3, 0.5, 0.7, 0.9]


@pytest.fixture(scope="module")
def scenes_cache():
    return small_study()


def _titles(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_grid_draws_the_rows_of_the_table(scenes_cache):
    cache, scenes, _ = scenes_cache
    rows = dl.layer_scores(cache, [s.mask for s in scenes], num_classes=6, taus=[0.5, 0.9], keep_labels=True)
    from_rows = viz.layer_grid(rows, image=scenes[2].image, image_index=2, tau=0.5)
    from_cache = viz.layer_grid(cache, gt=scenes[2].mask, image_index=2, num_classes=6, tau=0.5)
    assert _titles(from_rows) == _titles(from_cache)
    assert [t.source for t in from_rows.data] == [t.source for t in from_cache.data]  # same pictures
    # every panel's numbers are the table's
    mine = rows[(rows["image"] == 2) & (rows["tau"] == 0.5)]
    expected = [f"{r.n_segments} seg · mIoU {r.miou:.2f}" for r in mine.itertuples()]
    assert sorted(t for t in _titles(from_rows) if "seg" in t) == sorted(expected)
    assert "τ=0.5" in from_rows.layout.title.text and "α=10" in from_rows.layout.title.text


def test_grid_tau_auto(scenes_cache):
    cache, scenes, _ = scenes_cache
    fig = viz.layer_grid(cache, image_index=1, timesteps=[50], tau="auto")
    assert "τ=auto" in fig.layout.title.text
    rows = dl.layer_scores(cache, timesteps=[50], images=[1], taus=[0.5, "auto"], keep_labels=True)
    again = viz.layer_grid(rows, image=scenes[1].image, image_index=1, tau="auto")
    assert "τ=auto" in again.layout.title.text and _titles(again) == _titles(fig)


def test_grid_marks_the_papers_layer(scenes_cache):
    cache, _, layer = scenes_cache
    fig = viz.layer_grid(cache, image_index=0, timesteps=[50], tau=0.5, mark=layer)
    marked = [ax for name, ax in fig.layout.to_plotly_json().items()
              if name.startswith("yaxis") and "the paper's layer" in str(ax.get("title", {}).get("text", ""))]  # fmt: skip
    assert len(marked) == 1


def test_grid_refuses_what_rows_cannot_give(scenes_cache):
    cache, scenes, _ = scenes_cache
    rows = dl.layer_scores(cache, timesteps=[50], images=[0], taus=[0.3, 0.9], keep_labels=True)
    with pytest.raises(dl.ParameterError, match="pass tau="):
        viz.layer_grid(rows, image=scenes[0].image)
    with pytest.raises(dl.ParameterError, match=r"no tau 0\.7"):
        viz.layer_grid(rows, image=scenes[0].image, tau=0.7)
    with pytest.raises(dl.ParameterError, match="alpha"):
        viz.layer_grid(rows, image=scenes[0].image, tau=0.3, alpha=3.0)
    with pytest.raises(dl.ParameterError, match="image="):
        viz.layer_grid(rows, tau=0.3)
    bare = dl.layer_scores(cache, timesteps=[50], images=[0])
    with pytest.raises(dl.ParameterError, match="keep_labels"):
        viz.layer_grid(bare, image=scenes[0].image)


def test_one_sweep_gives_each_taus_own_cut(scenes_cache):
    """The shared sweep (one recursion, pruned) labels each tau as a cut at that tau alone."""
    cache, _, layer = scenes_cache
    cfgs = [dl.DiffCutConfig(), dl.DiffCutConfig(partition="kway")]
    for cfg in cfgs:
        rows = dl.layer_scores(cache, layers=[layer], timesteps=[50], images=[0, 3], taus=TAUS, config=cfg,
                               keep_labels=True)  # fmt: skip
        for r in rows.itertuples():
            alone = core.grid_labels(core.cut_tree(cache[layer, 50][r.image], cfg, tau=r.tau))
            np.testing.assert_array_equal(r.labels, alone)


def test_methods_share_cuts_and_scores(scenes_cache, monkeypatch):
    cache, scenes, layer = scenes_cache
    gts = [s.mask for s in scenes]
    methods = {
        "cosine": dl.DiffCutConfig(refine="none"),
        "walk": dl.DiffCutConfig(affinity="attention", walk_steps=2, refine="none"),
        "kway": dl.DiffCutConfig(partition="kway", refine="none"),
    }
    kw = dict(select=[0, 1], test=[2, 3], taus=TAUS, num_classes=6, layer=layer, timestep=50)
    rows = dl.layer_scores(cache, gts, num_classes=6, taus=TAUS, refine="none", keep_labels=True)
    calls, upsampled = [], []
    cut_trees, pixel_labels = core.cut_trees, core.pixel_labels

    def counting_cut(features, config, taus, **kwargs):
        calls.append((config.partition, config.affinity, tuple(taus)))
        return cut_trees(features, config, taus, **kwargs)

    def counting_pixels(coarse, features, *args, **kwargs):
        upsampled.append((features.data_ptr(), np.asarray(coarse).tobytes()))
        return pixel_labels(coarse, features, *args, **kwargs)

    monkeypatch.setattr(core, "cut_trees", counting_cut)
    monkeypatch.setattr(core, "pixel_labels", counting_pixels)
    shared = dl.method_comparison(cache, gts, methods, scores=rows, **kw)
    # the cosine cut's numeric taus are read from the table: it is cut only for "auto"
    assert [c for c in calls if c[:2] == ("recursive", "cosine") and "auto" not in c[2]] == [
        ("recursive", "cosine", tuple(TAUS))
    ] * 4  # once per image, only to know which taus share a K-way start
    assert ("recursive", "cosine", ("auto",)) in calls
    kway = [c for c in calls if c[0] == "kway" and "auto" not in c[2]]
    assert len(kway) == 4 and all(len(c[2]) <= len(TAUS) for c in kway)
    assert upsampled and len(upsampled) == len(set(upsampled))  # each image's label map scored once
    monkeypatch.undo()
    alone = dl.method_comparison(cache, gts, methods, **kw)
    pd.testing.assert_frame_equal(shared.drop(columns="seconds"), alone.drop(columns="seconds"))
    # the table is the one the methods' own layer_scores rows give
    frames = [dl.layer_scores(cache, gts, layers=[layer], timesteps=[50], config=cfg, taus=[*TAUS, "auto"],
                              num_classes=6).assign(method=name) for name, cfg in methods.items()]  # fmt: skip
    ref = summary.tuned(pd.concat(frames, ignore_index=True), ["method"], select=[0, 1], test=[2, 3])
    order = list(methods)
    ref = ref.sort_values("method", key=lambda c: c.map(order.index), kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(shared.drop(columns="seconds"), ref.drop(columns="seconds"))


def test_rows_of_other_settings_are_not_reused(scenes_cache, monkeypatch):
    cache, scenes, layer = scenes_cache
    gts = [s.mask for s in scenes]
    kw = dict(select=[0, 1], test=[2, 3], taus=TAUS, num_classes=6, layer=layer, timestep=50)
    methods = {"cosine": dl.DiffCutConfig(refine="none")}
    others = [
        dl.layer_scores(cache, gts, layers=[layer], num_classes=6, taus=TAUS, alpha=3.0, refine="none"),
        dl.layer_scores(cache, gts, layers=[layer], num_classes=7, taus=TAUS, refine="none"),
        dl.layer_scores(cache, gts, layers=[layer], num_classes=6, taus=TAUS),  # refined: other labels
    ]
    same = dl.layer_scores(cache, gts, layers=[layer], num_classes=6, taus=TAUS, refine="none")
    cut_trees = core.cut_trees
    for scores, reused in [*((o, False) for o in others), (same, True)]:
        calls = []
        monkeypatch.setattr(
            core,
            "cut_trees",
            lambda f, c, t, _calls=calls, **k: _calls.append(tuple(t)) or cut_trees(f, c, t, **k),
        )
        dl.method_comparison(cache, gts, methods, scores=scores, **kw)
        assert (tuple(TAUS) in calls) is not reused


def test_pca_colours_come_from_the_library():
    from diffcut_lab.colors import pca_rgb

    assert viz.pca_rgb is pca_rgb
    f = np.random.default_rng(0).normal(size=(6, 8, 8))
    with pytest.raises(dl.FeatureError):
        pca_rgb(f[0])


def _rows(scores: dict[tuple[float, int], float]) -> pd.DataFrame:
    """Per-image rows of one cell: ``{(tau, image): IoU of the image's only class}``."""
    out = []
    for (tau, image), iou in scores.items():
        tp = round(100 * iou)
        out.append({"layer": "L", "timestep": 50, "method": "diffcut", "tau": tau, "image": image,
                    "tp": [tp], "fp": [100 - tp], "fn": [0], "n_pixels": 100, "n_segments": 2, "seconds": 0.1})  # fmt: skip
    return pd.DataFrame(out)


def test_one_selection_rule_chooses_on_some_images_and_scores_on_others():
    # tau 0.3 wins on images 0, 1; tau 0.9 wins on images 2, 3
    rows = _rows({(0.3, 0): 0.8, (0.3, 1): 0.8, (0.3, 2): 0.2, (0.3, 3): 0.2,
                  (0.9, 0): 0.5, (0.9, 1): 0.5, (0.9, 2): 0.7, (0.9, 3): 0.7})  # fmt: skip
    split = summary.choose(rows, ["layer"], ["tau"], select=[0, 1], test=[2, 3])
    assert split["tau"].tolist() == [0.3] and split["miou"].iloc[0] == pytest.approx(0.2)
    assert split["miou_max"].iloc[0] == pytest.approx(0.7) and not split["in_sample"].iloc[0]
    inside = summary.choose(rows, ["layer"], ["tau"])
    assert inside["tau"].tolist() == [0.9] and inside["miou"].iloc[0] == pytest.approx(
        0.6
    )  # pooled: 240 / 400
    assert inside["in_sample"].iloc[0] and inside["n_choices"].iloc[0] == 2
    tuned = summary.tuned(rows, ["layer"], select=[0, 1], test=[2, 3])
    assert tuned[["tau", "miou"]].to_numpy().tolist() == split[["tau", "miou"]].to_numpy().tolist()
    with pytest.raises(dl.ParameterError):
        summary.choose(rows, ["layer"], ["tau"], select=[0, 1], test=[1, 2])
    # the heatmap draws the same numbers, and says how they were chosen
    from diffcut_lab.viz.ablation_plots import method_bars, miou_heatmap, sensitivity

    heat = miou_heatmap(rows, tune_images=[0, 1], test_images=[2, 3])
    assert np.asarray(heat.data[0].z)[0, 0] == pytest.approx(0.2)
    assert "chosen on 2 images, scored on 2 others" in heat.layout.title.text
    optimistic = miou_heatmap(rows)
    assert np.asarray(optimistic.data[0].z)[0, 0] == pytest.approx(0.6)
    assert "optimistic" in optimistic.layout.title.text
    bars = method_bars(rows, color=None, tune_images=[0, 1], test_images=[2, 3])
    assert list(bars.data[0].y) == pytest.approx([0.2])
    curve = sensitivity(rows, x="tau", color="layer")  # one configuration per point: nothing is chosen
    assert list(curve.data[0].y) == pytest.approx([0.5, 0.6]) and "optimistic" not in curve.layout.title.text
    with pytest.raises(dl.ParameterError, match="tuned"):
        summary.cells(rows, ["layer"], select=[0], test=[1])
