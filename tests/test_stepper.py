"""The cut stepper app driven from Python: slider, buttons, tree clicks, tau pruning, alpha recomputation."""

from __future__ import annotations

import numpy as np
import pytest
from _trees import TREE_KINDS, assert_same_tree

import diffcut_lab as dl
from diffcut_lab.affinities import affinity
from diffcut_lab.viz import _step_data as sd
from diffcut_lab.viz import stepper as st


def _blocks(h: int = 16, w: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of four noisy blocks on an (h, w) grid, and a matching RGB picture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    seg = (xx >= w // 3).astype(int) + 2 * (yy >= 2 * h // 3)
    feats = rng.normal(size=(8, h, w)) * 0.3 + rng.normal(size=(4, 8))[seg].transpose(2, 0, 1)
    img = np.kron(seg * 60, np.ones((4, 4), int)).astype(np.uint8)[..., None].repeat(3, axis=2)
    return feats.astype(np.float32), img


@pytest.fixture(scope="module")
def case():
    feats, img = _blocks()
    tree = dl.recursive_ncut(affinity(feats, alpha=10.0), tau=0.5, grid=(16, 16))
    assert len(tree.steps) >= 3, tree
    return feats, img, tree


def _z(fig, idx):
    return np.nan_to_num(np.asarray(fig.data[idx].z, dtype=float), nan=-99.0)


def test_icicle_layout_nests_children_inside_parents(case):
    _, _, tree = case
    lay = st.icicle_layout(tree)
    assert lay.parent[0] == -1 and lay.offset[0] == 0 and lay.size[0] == 256
    for i, p in enumerate(lay.parent):
        if p >= 0:
            assert lay.depth[i] == lay.depth[p] + 1
            assert lay.offset[p] <= lay.offset[i]
            assert lay.offset[i] + lay.size[i] <= lay.offset[p] + lay.size[p]
            # the parent step is the node whose children include this step's node
            assert tree.steps[p].children is not None and tree.steps[i].node in tree.steps[p].children


def test_slider_drives_the_figure(case):
    feats, img, tree = case
    app = st.cut_stepper(tree, img, features=feats)
    assert app.step == 1 and "step 1 of" in app.status.value
    fied0, part0, bars0 = (
        _z(app.figure, sd.T_FIEDLER),
        _z(app.figure, sd.T_PARTITION),
        app.figure.data[sd.T_ICICLE],
    )
    width0 = list(bars0.marker.line.width)
    app.slider.value = 2
    assert app.step == 2 and "step 2 of" in app.status.value
    assert not np.array_equal(fied0, _z(app.figure, sd.T_FIEDLER))
    assert list(app.figure.data[sd.T_ICICLE].marker.line.width) != width0
    # the partition shown is labels_at(step)
    np.testing.assert_array_equal(np.asarray(app.figure.data[sd.T_PARTITION].z), tree.labels_at(2))
    assert not np.array_equal(part0, _z(app.figure, sd.T_PARTITION)) or not tree.steps[1].accepted
    # chosen threshold and tau line match the step
    s = tree.steps[1]
    assert app.figure.data[sd.T_CHOSEN].x[0] == pytest.approx(s.threshold)
    assert list(app.figure.data[sd.T_TAU].y) == [0.5, 0.5]


def test_buttons_and_tree_click(case):
    _feats, img, tree = case
    app = st.cut_stepper(tree, img)
    app.next_button.click()
    app.next_button.click()
    assert app.step == 3
    app.prev_button.click()
    assert app.step == 2
    app.prev_button.click()
    app.prev_button.click()  # clamped at the first step
    assert app.step == 1

    class Points:
        point_inds = (len(tree.steps) - 1,)

    bars = app.figure.data[sd.T_ICICLE]
    bars._dispatch_on_click(Points(), None)  # what a click on the last node of the icicle sends
    assert app.step == len(tree.steps)


def test_tau_prunes_without_recomputation(case, monkeypatch):
    feats, img, tree = case
    app = st.cut_stepper(tree, img, features=feats)

    def boom(*a, **k):
        raise AssertionError("lowering tau must not recompute")

    monkeypatch.setattr("diffcut_lab.ncut.recursive_ncut", boom)
    low = min(s.ncut for s in tree.steps if s.accepted) + 1e-9  # rejects all but the easiest cut(s)
    app.tau_slider.value = round(max(low, 0.05), 2)
    pruned = tree.prune(app.tau_slider.value)
    assert len(app.tree.steps) == len(pruned.steps) < len(tree.steps)
    assert app.slider.max == len(pruned.steps)
    np.testing.assert_array_equal(app.tree.labels, pruned.labels)
    assert "pruned" in app.info.value
    assert list(app.figure.data[sd.T_TAU].y) == [app.tau_slider.value] * 2
    assert len(app.figure.data[sd.T_ICICLE].x) == len(pruned.steps)


def test_alpha_and_larger_tau_recompute(case):
    feats, img, tree = case
    app = st.cut_stepper(tree, img, features=feats)
    app.alpha_slider.value = 2.0
    expect = dl.recursive_ncut(affinity(feats, alpha=2.0), tau=0.5, grid=(16, 16))
    np.testing.assert_array_equal(app.tree.labels, expect.labels)
    assert "recomputed" in app.info.value and app.alpha == 2.0
    app.tau_slider.value = 0.8  # above the computed tau: recomputed, then cached for pruning
    assert app.tree.tau == pytest.approx(0.8)
    np.testing.assert_array_equal(
        app.tree.labels, dl.recursive_ncut(affinity(feats, alpha=2.0), tau=0.8, grid=(16, 16)).labels
    )
    assert app.last_update_s < 5.0


def test_tau_above_tree_without_features_is_an_error(case):
    _, img, tree = case
    app = st.cut_stepper(tree, img)
    assert app.alpha_slider is None
    assert app.tau_slider.max == pytest.approx(tree.tau)
    with pytest.raises(ValueError, match="features="):
        app.set_tau(tree.tau + 0.2)


def test_recompute_on_32x32_records_its_time():
    """An alpha change recomputes the tree and records how long it took (benchmarks/responsiveness.py
    measures it; live in the notebook means well under a second)."""
    feats, img = _blocks(32, 32, seed=1)
    tree = dl.recursive_ncut(affinity(feats, alpha=10.0), tau=0.5, grid=(32, 32))
    app = st.cut_stepper(tree, img, features=feats)
    app.set_alpha(8.0)
    assert app.tree.params["alpha"] == 8.0
    assert 0 < app.last_update_s < float("inf")


def test_paper_mode_marks_dropped_nodes():
    feats, _img = _blocks(seed=2)
    tree = dl.recursive_ncut(affinity(feats, alpha=10.0), tau=0.5, grid=(16, 16), mode="paper")
    data = sd.StepData(tree)
    for i, s in enumerate(tree.steps):
        z = data.step_props(i)[sd.T_SPLIT]["z"].ravel()
        assert (z == 3).sum() == len(s.region) - len(s.members)
        assert ((z == 1) | (z == 2)).sum() == len(s.members)


def test_static_figure_has_one_frame_per_step(case):
    _feats, img, tree = case
    fig = st.cut_steps_figure(tree, img)
    assert len(fig.frames) == len(tree.steps)
    assert len(fig.layout.sliders[0].steps) == len(tree.steps)
    # frames differ where the steps differ
    zs = [np.nan_to_num(np.asarray(f.data[sd.DYNAMIC.index(sd.T_FIEDLER)].z, float)) for f in fig.frames]
    assert not np.array_equal(zs[0], zs[1])
    capped = st.cut_steps_figure(tree, img, max_steps=2)
    assert len(capped.frames) == 2
    tree_fig = st.cut_tree_figure(tree)
    assert len(tree_fig.data[0].x) == len(tree.steps)


# ----------------------------------------------------------------------------------------------------
# a stepper over a Segmentation recomputes the same kind of tree


def _segmentation(settings: dict, seed: int = 1):
    from _trees import kind_features

    f, attn = kind_features(seed)
    return dl.DiffCut(None, refine="none", **settings).segment_features(f, attention=attn)


def _kind(tree) -> tuple:
    p = tree.params
    return (
        p["affinity"],
        p["walk_steps"],
        p.get("tau") == "auto",
        p.get("auto_rule"),
        p["partition"],
        p["knn"],
    )


STEPPABLE = [k for k in TREE_KINDS if k[1].get("partition") != "kway"]


@pytest.mark.parametrize(("name", "settings", "marks"), STEPPABLE, ids=[k[0] for k in STEPPABLE])
def test_stepper_over_a_segmentation_recomputes_the_same_kind_of_tree(name, settings, marks):
    seg = _segmentation(settings)
    app = st.cut_stepper(seg)
    assert app.tree is seg.tree and app.recomputable and app.alpha_slider is not None
    app.set_alpha(app.alpha)  # no change: the very same tree
    assert_same_tree(app.tree, seg.tree)
    assert "recomputed" in app.info.value
    app.set_alpha(4.0)
    assert app.tree.params["alpha"] == 4.0 and _kind(app.tree) == _kind(seg.tree)
    assert {k: app.tree.params.get(k) for k in marks} == marks
    assert_same_tree(app.tree, seg.recut(alpha=4.0))
    assert app.auto_box.value == (settings.get("tau") == "auto")
    assert app.tau_slider.disabled == app.auto_box.value  # an automatic tree's tau is the rule's


def test_kway_segmentations_have_no_steps_to_go_through():
    for settings in ({"partition": "kway", "n_segments": 3}, {"partition": "kway", "tau": "auto"}):
        seg = _segmentation(settings)
        with pytest.raises(dl.ParameterError, match=r"K-way.*partition='recursive'"):
            st.cut_stepper(seg)
        st.cut_stepper(seg.recut(partition="recursive", n_segments=None), features=seg.features)


def test_raising_tau_over_an_attention_walk_tree():
    seg = _segmentation({"affinity": "attention", "walk_steps": 2, "tau": 0.4}, seed=3)
    app = st.cut_stepper(seg)
    assert app.alpha_slider.disabled and "no α" in app.info.value  # the walk does not use alpha
    app.tau_slider.value = 0.9
    assert app.tree.tau == pytest.approx(0.9) and app.tree.params["affinity"] == "attention"
    assert "recomputed" in app.info.value
    assert_same_tree(app.tree, seg.recut(tau=0.9))
    assert app.tree.n_segments >= seg.tree.n_segments
    app.tau_slider.value = 0.4  # lower again: pruned from the tree just computed
    assert "pruned" in app.info.value
    assert_same_tree(app.tree, seg.tree)
    # the tree alone, without its attention probabilities: pruning only, and the error says what to pass
    bare = st.cut_stepper(seg.tree, features=seg.features)
    assert not bare.recomputable and bare.alpha_slider.disabled and bare.tau_slider.max == pytest.approx(0.4)
    with pytest.raises(dl.ParameterError, match="attention="):
        bare.set_tau(0.9)
    with_probs = st.cut_stepper(seg.tree, features=seg.features, attention=seg.attention)
    with_probs.set_tau(0.9)
    assert_same_tree(with_probs.tree, seg.recut(tau=0.9))


def test_an_automatic_tree_switches_to_a_fixed_tau_explicitly():
    seg = _segmentation({"tau": "auto"})
    app = st.cut_stepper(seg)
    assert app.auto and app.auto_box.value and app.tau_slider.disabled
    assert "τ auto" in app.status.value and "τ 1.00" not in app.status.value  # the rule decided, not tau 1
    assert "dynamic rule decided each cut" in app.info.value
    app.auto_box.value = False  # explicitly to a fixed tau, that of the slider: recomputed
    assert not app.auto and not app.tau_slider.disabled and "tau" not in app.tree.params
    assert "instead of τ auto" in app.info.value
    assert_same_tree(app.tree, seg.recut(tau=float(app.tau_slider.value)))
    app.set_tau(0.3)
    assert_same_tree(app.tree, seg.recut(tau=0.3))
    app.auto_box.value = True  # back to the rule
    assert app.auto and app.tau_slider.disabled
    assert_same_tree(app.tree, seg.tree)
    # without the features the rule's cuts cannot be redone at a fixed tau
    bare = st.cut_stepper(seg.tree)
    assert bare.auto_box.disabled and bare.tau_slider.disabled
    with pytest.raises(dl.ParameterError, match="dynamic rule"):
        bare.set_tau(0.3)


def test_the_stable_rule_prunes_to_a_fixed_tau():
    seg = _segmentation({"tau": "auto", "auto_rule": "stable"})
    app = st.cut_stepper(seg.tree)  # no features: the stable tree is the fixed-tau tree of its tau
    assert app.tau_slider.value == pytest.approx(seg.tree.tau) and "(auto)" in app.status.value
    app.set_tau(0.1)
    assert "pruned" in app.info.value and not app.auto
    assert_same_tree(app.tree, seg.recut(tau=0.1))


def _text(markup: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def test_the_status_says_the_verdict_once(case):
    _feats, img, tree = case
    app = st.cut_stepper(tree, img)
    for k, s in enumerate(tree.steps, start=1):
        app.show_step(k)
        text = _text(app.status.value)
        word, other = ("accepted", "rejected") if s.accepted else ("rejected", "accepted")
        assert text.count(word) == 1 and other not in text, text
        assert text.endswith("accepted: split" if s.accepted else "rejected: leaf")
        assert sd.step_summary(tree, k - 1) == text  # the plain summary reads the same


def test_the_note_line_says_why_the_tau_slider_starts_at_its_maximum(case):
    _feats, img, tree = case
    app = st.cut_stepper(tree, img)  # no features: tau can only be lowered
    assert app.tau_slider.value == app.tau_slider.max == pytest.approx(tree.tau)
    assert "starts at its maximum" in app.info.value and f"{tree.tau:.2f}" in app.info.value
