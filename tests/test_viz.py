"""Static views: overlays, PCA colours, layer grid and scores, eigenvectors and the eigenvector explorer."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

import diffcut_lab as dl
from diffcut_lab import viz
from diffcut_lab.affinities import affinity
from diffcut_lab.hook_points import forward_order


def _blocks(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    seg = (xx >= w // 3).astype(int) + 2 * (yy >= 2 * h // 3)
    return (rng.normal(size=(8, h, w)) * 0.2 + rng.normal(size=(4, 8))[seg].transpose(2, 0, 1)).astype(
        np.float32
    )


def test_overlay_legend_and_hover_sizes():
    img = np.full((60, 90, 3), 128, np.uint8)
    lab = np.zeros((6, 9), np.int64)
    lab[:, 3:] = 1
    lab[4:, 6:] = 2
    fig = viz.overlay(img, lab)
    legend = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert [t.name.split(":")[0] for t in legend] == ["segment 0", "segment 1", "segment 2"]
    # sizes in input pixels: each of the 54 label cells covers 100 pixels
    assert "1,800 px" in legend[0].name and "3,000 px" in legend[1].name and ": 600 px" in legend[2].name
    hover = next(t for t in fig.data if isinstance(t, go.Heatmap))
    assert hover.customdata[0][0][0] == 1800 and "segment %{z}" in hover.hovertemplate
    assert fig.layout.title.text == "3 segments"
    json.loads(fig.to_json())  # serialisable for HTML reports
    named = viz.overlay(img, lab, names=["sky", "sea", "boat"])
    assert [t.name.split(":")[0] for t in named.data if isinstance(t, go.Scatter)] == ["sky", "sea", "boat"]


def test_overlay_stays_small_for_reports():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    img = np.dstack([xx // 2, yy // 2, (xx + yy) // 4]).astype(np.uint8)  # a smooth photo-like picture
    lab = np.kron(rng.integers(0, 12, (32, 32)), np.ones((16, 16), int))  # labels at the input size
    fig = viz.overlay(img, lab)
    assert len(fig.to_json()) < 300_000
    hover = next(t for t in fig.data if isinstance(t, go.Heatmap))
    assert max(np.shape(hover.z)) <= 96


def test_overlay_rejects_bad_labels():
    with pytest.raises(ValueError, match="grid"):
        viz.overlay(np.zeros((8, 8, 3), np.uint8), np.zeros(16, np.int64))


def test_compare_overlays_panels():
    img = np.zeros((32, 32, 3), np.uint8)
    a = np.zeros((4, 4), np.int64)
    b = a.copy()
    b[:, 2:] = 1
    fig = viz.compare_overlays(img, {"paper": a, "fixed": b})
    titles = [ann.text for ann in fig.layout.annotations]
    assert titles == ["paper: 1 segment", "fixed: 2 segments"]


def test_pca_rgb_is_deterministic_and_in_range():
    f = _blocks()
    a, b = viz.pca_rgb(f), viz.pca_rgb(f)
    assert a.shape == (16, 16, 3) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(viz.pca_rgb(-f), a, atol=1e-6)  # sign fixed


def test_label_palette_distinct():
    colors = viz.label_palette(80)
    assert len(set(colors)) == 80


def test_layer_sort_key_forward_order():
    names = ["up_blocks.1.attentions.0.x", "mid_block.attentions.0.x", "down_blocks.10.a", "down_blocks.2.a"]
    assert sorted(names, key=forward_order) == [
        "down_blocks.2.a",
        "down_blocks.10.a",
        "mid_block.attentions.0.x",
        "up_blocks.1.attentions.0.x",
    ]


@pytest.fixture(scope="module")
def tiny_cache():
    from diffcut_lab.datasets.synthetic import make_scene
    from diffcut_lab.testing import tiny_backbone

    bb = tiny_backbone("sd1", image_size=64)
    scenes = [make_scene(s, size=64) for s in (0, 1)]
    cache = dl.capture(bb, [s.image for s in scenes], layers="attn1", timesteps=[10, 50])
    return cache, scenes


def test_layer_scores_and_sorting(tiny_cache):
    cache, scenes = tiny_cache
    df = dl.layer_scores(cache, [s.mask for s in scenes], num_classes=6)
    assert len(df) == len(cache.layers) * 2 * 2
    assert df["miou"].between(0, 1).all() and (df["n_segments"] >= 1).all()
    stages = df.drop_duplicates("layer")["stage"].tolist()
    assert stages == sorted(stages, key=["down", "mid", "up"].index)
    by_miou = dl.layer_scores(cache, [s.mask for s in scenes], num_classes=6, sort_by="miou")
    means = by_miou.groupby("layer", sort=False)["miou"].mean().tolist()
    assert means == sorted(means, reverse=True)
    no_gt = dl.layer_scores(cache, images=[0], timesteps=[50])
    assert no_gt["miou"].isna().all() and len(no_gt) == len(cache.layers)
    with pytest.raises(dl.ParameterError):
        dl.layer_scores(cache, sort_by="colour")
    with pytest.raises(dl.UnknownLayerError):
        dl.layer_scores(cache, layers=["nope"])


def test_layer_grid_tiles_and_titles(tiny_cache):
    cache, scenes = tiny_cache
    fig = viz.layer_grid(cache, gt=scenes[0].mask, num_classes=6, timesteps=[50])
    images = [t for t in fig.data if isinstance(t, go.Image)]
    assert len(images) == 2 * len(cache.layers)  # PCA + segmentation per layer
    assert sum("mIoU" in (a.text or "") for a in fig.layout.annotations) == len(cache.layers)
    assert "sorted by stage" in fig.layout.title.text
    fig2 = viz.layer_grid(cache, image=scenes[1].image, image_index=1, timesteps=[10, 50], sort_by="name")
    assert len([t for t in fig2.data if isinstance(t, go.Image)]) == 4 * len(cache.layers)


def test_eigenvectors_spectrum_and_gap():
    f = _blocks()
    spec = dl.laplacian_spectrum(f, 10, alpha=10.0)
    assert spec.values[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(spec.values) >= -1e-9)
    assert spec.largest_gap == 3  # four blocks: four near-zero eigenvalues
    fig = viz.eigenvectors(f, k=8, image=np.zeros((64, 64, 3), np.uint8))
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 9  # 8 eigenvectors + the affinity row
    assert any("largest gap after λ3" in (a.text or "") for a in fig.layout.annotations)
    # an affinity matrix works too, with its grid; the row is the pixel's edges in the graph the cut
    # partitions: fixed mode ignores the self-loop (0 in the panel), paper mode counts it
    W = affinity(f, alpha=10.0)
    fig_w = viz.eigenvectors(W, k=4, grid=(16, 16), pixel=(0, 0))
    row = next(t for t in fig_w.data if t.name == "affinity row")
    expected = np.asarray(W)[0].copy()
    expected[0] = 0.0
    np.testing.assert_allclose(np.asarray(row.z).ravel(), expected, atol=1e-4)
    assert "no self-loops" in fig_w.layout.title.text
    fig_p = viz.eigenvectors(W, k=4, grid=(16, 16), pixel=(0, 0), config=dl.DiffCutConfig.paper())
    row_p = next(t for t in fig_p.data if t.name == "affinity row")
    np.testing.assert_allclose(np.asarray(row_p.z).ravel(), np.asarray(W)[0], atol=1e-4)
    assert "self-loops kept" in fig_p.layout.title.text
    with pytest.raises(ValueError, match="grid"):
        viz.eigenvectors(np.eye(10), k=2)


def test_eigenvector_explorer_click_and_alpha():
    f = _blocks()
    app = viz.eigenvector_explorer(f, k=4)
    row = next(t for t in app.figure.data if t.name == "affinity row")
    before = np.asarray(row.z).copy()

    class Points:
        xs, ys = [1], [14]

    app.figure.data[0]._dispatch_on_click(Points(), None)
    assert app.pixel == (14, 1)
    assert not np.array_equal(before, np.asarray(row.z))
    mark = next(t for t in app.figure.data if t.name == "pixel")
    assert (mark.x[0], mark.y[0]) == (1, 14)
    vals = app.spectrum.values.copy()
    app.alpha_slider.value = 2.0
    assert app.alpha == 2.0 and not np.allclose(vals, app.spectrum.values)


def test_one_palette_and_legends_show_the_colour_seen():
    """The CLI's PNGs (Segmentation.overlay) and the plotly views colour a label alike, and a legend
    swatch is the colour the eye sees in the blended picture, not the bare palette colour."""
    from diffcut_lab.colors import blend_labels, label_colors
    from diffcut_lab.viz._common import png_data_uri
    from diffcut_lab.viz.overlays import overlay_traces

    assert [c.lower() for c in viz.label_palette(60)] == [
        "#{:02x}{:02x}{:02x}".format(*c) for c in label_colors(60)
    ]
    img = np.full((40, 40, 3), 200, np.uint8)
    lab = np.zeros((40, 40), np.int64)
    lab[:, 20:] = 1
    picture = next(t for t in overlay_traces(img, lab, opacity=0.4, legend=False) if t.type == "image")
    assert picture.source == png_data_uri(blend_labels(img, lab, 0.4))  # the figure shows the one overlay
    traces = overlay_traces(img, lab, opacity=0.4, legend=True)
    swatches = [t.marker.color for t in traces if getattr(t, "mode", None) == "markers"]
    painted = blend_labels(img, lab, 0.4, edges=False)
    for k, colour in enumerate(swatches):
        seen = painted[lab == k].mean(0).round().astype(int)
        assert colour.lower() == "#{:02x}{:02x}{:02x}".format(*seen)
        assert colour.lower() != viz.label_palette(2)[k].lower()  # not the bare palette colour


def test_layer_scores_need_the_class_count_with_ground_truth(tiny_cache):
    """The published matching counts absent classes: the class count cannot be guessed from the ids."""
    cache, scenes = tiny_cache
    with pytest.raises(dl.ParameterError, match="num_classes"):
        dl.layer_scores(cache, [s.mask for s in scenes])
    few = dl.layer_scores(
        cache, [s.mask for s in scenes], num_classes=int(scenes[0].mask.max()) + 1, images=[0]
    )
    many = dl.layer_scores(cache, [s.mask for s in scenes], num_classes=40, images=[0])
    assert (many["miou"] <= few["miou"] + 1e-12).all()  # more (absent) classes to match: never higher
