"""Every colour means one thing: the two sides of a cut keep their colours across the stepper's panels,
segments keep theirs across granularities (lineage), and every map of an image has the image's shape."""

from __future__ import annotations

import re
from itertools import pairwise

import numpy as np
import pytest
from _reference_ncut import clustered_features

import diffcut_lab as dl
from diffcut_lab.affinities import affinity
from diffcut_lab.viz import _step_data as sd
from diffcut_lab.viz import compare_overlays
from diffcut_lab.viz import stepper as st

H_GRID, W_GRID = 12, 20  # a non-square feature grid
IMAGE_SHAPE = (48, 120)  # and an image of another aspect ratio (a photo squashed into the network input)


def _features(seed: int = 0) -> np.ndarray:
    """(C, h, w) features of five noisy regions on the non-square grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H_GRID, :W_GRID]
    seg = (xx >= W_GRID // 3).astype(int) + (xx >= 3 * W_GRID // 4) + 2 * (yy >= 2 * H_GRID // 3)
    feats = rng.normal(size=(8, H_GRID, W_GRID)) * 0.3 + rng.normal(size=(seg.max() + 1, 8))[seg].transpose(
        2, 0, 1
    )
    return feats.astype(np.float32)


def _image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (*IMAGE_SHAPE, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def tree():
    t = dl.recursive_ncut(affinity(_features(), alpha=10.0), tau=0.6, grid=(H_GRID, W_GRID))
    assert sum(s.accepted for s in t.steps) >= 3 and not all(s.accepted for s in t.steps), t
    return t


def _rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` or ``rgba(r,g,b,a)`` -> (r, g, b)."""
    if colour.startswith("#"):
        return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    r, g, b = re.findall(r"[\d.]+", colour)[:3]
    return int(float(r)), int(float(g)), int(float(b))


def _band(scale, z: float, zmin: float, zmax: float) -> str:
    """The colour a stepped colour scale gives value ``z`` (the middle of its band)."""
    pos = (z - zmin) / (zmax - zmin)
    for (p0, c0), (p1, _c1) in pairwise(scale):
        if p0 <= pos <= p1:
            return c0
    raise AssertionError(f"{z} outside the scale")


def _extent(trace) -> tuple[float, float]:
    """(width, height) a heatmap covers on its axes."""
    h, w = np.shape(trace.z)
    return w * (trace.dx if trace.dx is not None else 1.0), h * (trace.dy if trace.dy is not None else 1.0)


def _step_colours(traces: dict[int, object], data: sd.StepData, i: int) -> dict[str, dict[str, tuple]]:
    """This side's and that side's colour in the sub-graph, Fiedler, partition and legend of step ``i``, read
    from the traces."""
    split, fiedler, part = traces[sd.T_SPLIT], traces[sd.T_FIEDLER], traces[sd.T_PARTITION]
    members, positive = data.sides(i)
    labels = np.asarray(part.z).ravel()
    out = {}
    for side, mask, z_split, end in (("this", positive, 1, -1), ("that", ~positive, 2, 0)):
        out[side] = {
            "sub-graph": _rgb(_band(split.colorscale, z_split, split.zmin, split.zmax)),
            "Fiedler": _rgb(fiedler.colorscale[end][1]),
            "partition": _rgb(_band(part.colorscale, labels[members[mask][0]], part.zmin, part.zmax)),
            "legend": _rgb(traces[sd.T_LEGEND_POS if side == "this" else sd.T_LEGEND_NEG].marker.color),
        }
    return out


def test_every_map_of_the_stepper_has_the_images_aspect_ratio(tree):
    img = _image()
    for fig in (st.cut_steps_figure(tree, img), st.cut_stepper(tree, img).figure):
        aspect = IMAGE_SHAPE[1] / IMAGE_SHAPE[0]
        extents = [_extent(fig.data[k]) for k in (sd.T_SPLIT, sd.T_FIEDLER, sd.T_PARTITION)]
        for w, h in extents:
            assert w / h == pytest.approx(aspect)
        assert extents[1] == pytest.approx(extents[0]) and extents[2] == pytest.approx(
            extents[0]
        )  # they line up
        for r, c in ((1, 1), (1, 2), (2, 1)):  # square pixels: shapes are not stretched by the panel
            sub = fig.get_subplot(r, c)
            assert sub.yaxis.scaleanchor == sub.xaxis.plotly_name.replace("axis", "")
            assert sub.yaxis.scaleratio == 1


def test_a_side_has_one_colour_in_every_panel_of_its_step(tree):
    img = _image()
    app = st.cut_stepper(tree, img)
    static = st.cut_steps_figure(tree, img)
    data = sd.StepData(tree)
    accepted = [i for i, s in enumerate(tree.steps) if s.accepted]
    for i in range(len(tree.steps)):
        app.show_step(i + 1)
        frame = static.frames[i]
        from_frame = dict(zip(frame.traces, frame.data))
        for traces in ({k: app.figure.data[k] for k in sd.DYNAMIC}, from_frame):
            colours = _step_colours(traces, data, i)
            for side in ("this", "that"):
                panels = colours[side]
                if i in accepted:  # the partition shows the two sides as segments, in the same colours
                    assert len(set(panels.values())) == 1, (i, side, panels)
                else:  # rejected: the sides stay one segment in the partition; elsewhere one colour
                    assert len({v for k, v in panels.items() if k != "partition"}) == 1, (i, side, panels)
            assert colours["this"]["Fiedler"] != colours["that"]["Fiedler"]


def test_the_fiedler_colour_bar_says_what_white_means(tree):
    data = sd.StepData(tree)
    for i, s in enumerate(tree.steps):
        props = data.step_props(i)[sd.T_FIEDLER]
        assert (props["zmin"] + props["zmax"]) / 2 == pytest.approx(s.threshold)  # white is the threshold
        bar = props["colorbar"]
        assert bar["tickvals"][1] == pytest.approx(s.threshold) and bar["ticktext"][1].startswith("threshold")
        assert _rgb(props["colorscale"][1][1]) == (255, 255, 255) and props["colorscale"][1][0] == 0.5
    fig = st.cut_steps_figure(tree)
    assert fig.data[sd.T_FIEDLER].colorbar.title.text == "Fiedler value"
    assert "orange" not in " ".join(a.text for a in fig.layout.annotations)


def test_the_partition_keeps_a_segments_colour_from_step_to_step(tree):
    fig = st.cut_steps_figure(tree)
    seen_split = False
    for a, b in pairwise(fig.frames):
        pa, pb = (dict(zip(f.traces, f.data))[sd.T_PARTITION] for f in (a, b))
        la, lb = np.asarray(pa.z), np.asarray(pb.z)
        for k in np.unique(la):
            ids = np.unique(lb[la == k])
            ca = _band(pa.colorscale, k, pa.zmin, pa.zmax)
            if ids.shape[0] == 1 and np.array_equal(lb == ids[0], la == k):  # the segment persists
                assert ca == _band(pb.colorscale, ids[0], pb.zmin, pb.zmax)
            else:  # it was split: both parts take colours of their own
                seen_split = True
                parts = {_band(pb.colorscale, j, pb.zmin, pb.zmax) for j in ids}
                assert len(parts) == ids.shape[0] and ca not in parts
    assert seen_split


def test_compare_overlays_of_a_pruned_tree_keeps_a_persisting_segment_in_one_colour():
    from diffcut_lab import segmentation as core

    feats = _features(3)
    taus = [0.2, 0.4, 0.6, 0.9]
    trees = core.cut_trees(feats, dl.DiffCutConfig(refine="none"), taus)
    labelings = {f"tau={t}": trees[t].labels for t in taus}
    img = _image()
    fig = compare_overlays(img, labelings, legend=True)
    swatch = {}  # (panel, segment id) -> colour of its legend entry
    for tr in fig.data:
        if getattr(tr, "mode", None) == "markers":
            swatch[tr.legendgroup, int(re.match(r"segment (\d+)", tr.name).group(1))] = tr.marker.color
    names = list(labelings)
    persisted = 0
    for na, nb in pairwise(names):
        a, b = labelings[na], labelings[nb]
        assert len({swatch[nb, k] for k in np.unique(b)}) == len(np.unique(b))  # segments told apart
        for k in np.unique(a):
            ids = np.unique(b[a == k])
            if ids.shape[0] == 1 and np.array_equal(b == ids[0], a == k):
                persisted += 1
                assert swatch[na, k] == swatch[nb, ids[0]], (na, nb, k)
    assert persisted >= 2
    # the same colours without a legend: the pictures are painted with them
    plain = compare_overlays(img, labelings)
    assert [t.source for t in plain.data if t.type == "image"] == [
        t.source for t in fig.data if t.type == "image"
    ]


def test_blend_labels_paints_given_colours():
    from diffcut_lab.colors import blend_labels, label_hex, lineage_hex

    img = _image()
    lab = np.zeros((6, 10), np.int64)
    lab[:, 5:] = 1
    lab[4:, 5:] = 2
    big = np.repeat(np.repeat(lab, 8, 0), 12, 1)  # the labels at the image's size
    np.testing.assert_array_equal(
        blend_labels(img, big, 0.4, colors=label_hex(3)), blend_labels(img, big, 0.4)
    )
    colours = lineage_hex([lab])[0]
    painted = blend_labels(img, big, 1.0, edges=False, colors=colours)
    for k, c in enumerate(colours):
        assert {tuple(p) for p in painted[big == k]} == {_rgb(c)}
    assert not np.array_equal(painted, blend_labels(img, big, 1.0, edges=False))
    with pytest.raises(dl.ParameterError, match="one per id"):
        blend_labels(img, big, colors=colours[:2])


def test_the_tree_of_cuts_shows_each_node_in_its_segments_colour(tree):
    fig = st.cut_steps_figure(tree)
    data = sd.StepData(tree)
    bars, hatch = fig.data[sd.T_ICICLE], fig.data[sd.T_HATCH]
    step_of = {s.node: j for j, s in enumerate(tree.steps)}
    for i, s in enumerate(tree.steps):
        if s.accepted:  # the two children are drawn in the colours of the two sides of their parent's cut
            for child, colour in zip(s.children, data.side_colors(i)):  # (positive child, negative child)
                if child in step_of:
                    assert bars.marker.color[step_of[child]] == colour
    final = np.asarray(tree.labels).ravel()
    leaf_colours = data.partition_colors(len(tree.steps))
    for j, s in enumerate(tree.steps):
        assert (hatch.marker.pattern.shape[j] == "/") == (not s.accepted)  # a final segment is hatched
        if not s.accepted:  # and in that segment's colour in the final partition
            assert bars.marker.color[j] == leaf_colours[final[s.members[0]]]


@pytest.mark.parametrize("mode", ["fixed", "paper"])
def test_a_rejected_cut_shows_the_colours_that_cut_alone_would_give(mode):
    """The stepper colours every rejected cut at once; each must equal the lineage of the partitions up to
    that step followed by the partition with that one cut made."""
    from diffcut_lab.colors import lineage_hex

    t = dl.recursive_ncut(affinity(_features(5), alpha=10.0), tau=0.7, grid=(H_GRID, W_GRID), mode=mode)
    data = sd.StepData(t)
    rejected = 0
    for i, s in enumerate(t.steps):
        members, positive = data.sides(i)
        if s.accepted or not positive.any() or positive.all():
            continue
        rejected += 1
        before = t.labels_at(i).ravel()
        codes = before.copy()
        codes[members[positive]] = before.max() + 1
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        after = np.argsort(np.argsort(first))[inverse.ravel()]  # numbered by first pixel, as the tree numbers
        colours = lineage_hex([t.labels_at(j) for j in range(i + 1)] + [after.reshape(H_GRID, W_GRID)])[-1]
        expect = (colours[after[members[positive][0]]], colours[after[members[~positive][0]]])
        assert data.side_colors(i) == expect, i
    assert rejected >= 2


def test_a_segmentation_is_coloured_as_the_steppers_last_partition():
    """Segmentation.colors (the overlay, the CLI's PNG, the report) = the stepper's partition colours after
    the last step, for segments that survive upsampling unchanged."""
    from diffcut_lab.colors import lineage_hex

    f = clustered_features(5, 12, 12, channels=16, k=4, noise=0.6)
    seg = dl.DiffCut(None, refine="none", upsample="nearest", tau=0.6).segment_features(f, size=(24, 24))
    chain = [seg.tree.labels_at(k) for k in range(len(seg.tree.steps) + 1)]
    last = lineage_hex(chain)[-1]
    assert seg.n_segments > 2
    assert seg.colors[: seg.n_segments] == last[: seg.n_segments]  # nearest upsampling keeps every id
    img = seg.colorize()
    assert img.shape == (24, 24, 3)
    assert "#{:02x}{:02x}{:02x}".format(*img[0, 0]) == last[int(seg.labels[0, 0])].lower()
