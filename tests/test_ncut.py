"""Tests for diffcut_lab.ncut: known cuts, paper mode vs the published algorithm, the CutTree API."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _reference_ncut import clustered_features, reference_affinity, reference_ncut
from sklearn.metrics import adjusted_rand_score

from diffcut_lab import _eigen
from diffcut_lab._paper_cut import published_choice
from diffcut_lab.affinities import affinity
from diffcut_lab.errors import FeatureError, ParameterError
from diffcut_lab.ncut import CutTree, recursive_ncut


def two_cliques(n: int = 10, inner: float = 1.0, bridge: float = 0.01) -> np.ndarray:
    w = np.full((2 * n, 2 * n), bridge)
    w[:n, :n] = inner
    w[n:, n:] = inner
    return w


def block_checkerboard(h: int = 8, w: int = 8, b: int = 4) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    blocks = ((yy // b) * (w // b) + xx // b).ravel()
    same = blocks[:, None] == blocks[None, :]
    wgt = np.where(same, 1.0, 1e-3)
    return wgt, blocks


@pytest.mark.parametrize("mode", ["fixed", "paper"])
def test_two_cliques_split_exactly_once(mode: str) -> None:
    w = two_cliques()
    tree = recursive_ncut(w, tau=0.5, mode=mode)
    assert tree.n_segments == 2
    np.testing.assert_array_equal(tree.labels, np.repeat([0, 1], 10))
    first = tree.steps[0]
    assert first.accepted and first.node == 0 and first.parent is None and first.children == (1, 2)
    # NCut of the clique split: cut = 100 * 0.01 = 1; vol = cut + 10 * 10 within a clique counting the unit
    # self-loops (paper), 10 * 9 without them (fixed mode ignores the diagonal)
    within = 100 if mode == "paper" else 90
    assert first.ncut == pytest.approx(2 * 1 / (within + 1), rel=1e-4)
    assert all(not s.accepted for s in tree.steps[1:])  # a clique has NCut 1 > tau everywhere


def test_fixed_threshold_is_exact_minimum_over_all_cut_points() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((12, 3))
    w = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 0.1)
    d = w.sum(1)
    y = _eigen._dense_fiedler(w, d).y
    thr, nc = _eigen.sweep(w, d, y)
    order = np.sort(y)
    for t, v in zip(thr, nc):
        a = y > t
        cut = w[a][:, ~a].sum()
        assert v == pytest.approx(cut / d[a].sum() + cut / d[~a].sum(), rel=1e-9)
    assert len(thr) == len(np.unique(order)) - 1


@pytest.mark.parametrize("mode", ["fixed", "paper"])
def test_checkerboard_of_blocks(mode: str) -> None:
    w, blocks = block_checkerboard()
    tree = recursive_ncut(w, tau=0.5, grid=(8, 8), mode=mode)
    assert tree.n_segments == 4
    assert adjusted_rand_score(blocks, tree.labels.ravel()) == 1.0
    assert tree.labels[0, 0] == 0 and tree.labels.dtype == np.int64


def test_labels_stable_raster_order() -> None:
    w, _ = block_checkerboard()
    lab = recursive_ncut(w, tau=0.5, grid=(8, 8)).labels.ravel()
    _, first = np.unique(lab, return_index=True)
    assert np.all(np.diff(first) > 0)  # label k first appears before label k + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_mode_reproduces_published_partitions_16(seed: int) -> None:
    f = clustered_features(seed, 16, 16, channels=128, k=4 + seed, noise=0.5 + 0.2 * seed)
    w = affinity(f)
    masks, ref_labels = reference_ncut(reference_affinity(f, 10), tau=0.5)
    tree = recursive_ncut(w, tau=0.5, grid=(16, 16), mode="paper")
    assert adjusted_rand_score(ref_labels, tree.labels.ravel()) == 1.0
    got = [np.isin(np.arange(256), s.positive_members()) for s in tree.accepted_steps]
    assert len(got) == len(masks)
    assert all(np.array_equal(a, b) for a, b in zip(got, masks))


def test_paper_mode_reproduces_published_partitions_32() -> None:
    f = clustered_features(7, 32, 32, channels=256, k=5, noise=0.6)
    _, ref_labels = reference_ncut(reference_affinity(f, 10), tau=0.5)
    tree = recursive_ncut(affinity(f), tau=0.5, grid=(32, 32), mode="paper")
    assert adjusted_rand_score(ref_labels, tree.labels.ravel()) == 1.0


def test_paper_mode_drops_nodes_with_zero_rows_at_depth() -> None:
    f = clustered_features(4, 12, 12, channels=64, k=3, noise=0.5)
    w = affinity(f)
    zero_rows = (w == 0).any(1).numpy()
    assert zero_rows.sum() >= 2  # the least similar pair is exactly 0 after min-max
    tree = recursive_ncut(w, tau=0.5, mode="paper")
    root = tree.steps[0]
    assert root.size == 144  # no dropping at depth 0
    for s in tree.steps[1:]:
        assert not zero_rows[s.members].any()
        np.testing.assert_array_equal(s.members, s.region[~zero_rows[s.region]])
    fixed = recursive_ncut(w, tau=0.5, mode="fixed")
    assert all(s.size == s.region.size for s in fixed.steps)


def test_published_nan_rule() -> None:
    nan = float("nan")
    assert published_choice(np.array([0.3, 0.1, 0.2]))[0] == 1
    assert published_choice(np.array([0.3, 0.1, 0.1]))[0] == 1  # first minimum
    j, v = published_choice(np.array([0.3, nan, 0.1]))
    assert j == 1 and v == 0.1  # np.argmin takes the NaN, Python min skips it
    j, v = published_choice(np.array([nan, 0.2, 0.1]))
    assert j == 0 and np.isnan(v)


def test_steps_record_everything() -> None:
    w, _ = block_checkerboard()
    tree = recursive_ncut(w, tau=0.5, grid=(8, 8), mode="paper")
    for i, s in enumerate(tree.steps):
        assert s.index == i
        assert s.fiedler.shape == s.members.shape
        assert s.thresholds.shape == (100,) and s.ncut_values.shape == (100,)
        assert s.threshold in s.thresholds
        assert s.accepted == (s.ncut < 0.5)
        np.testing.assert_array_equal(s.positive, s.fiedler > s.threshold)
    df = tree.to_frame()
    assert list(df["index"]) == list(range(len(tree.steps)))
    assert df["accepted"].sum() == tree.n_segments - 1
    assert {"node", "parent", "depth", "ncut", "threshold", "solver", "reason"} <= set(df.columns)


def test_labels_at_and_leaves() -> None:
    w, _ = block_checkerboard()
    tree = recursive_ncut(w, tau=0.5, grid=(8, 8))
    assert (tree.labels_at(0) == 0).all()
    np.testing.assert_array_equal(tree.labels_at(len(tree.steps)), tree.labels)
    counts = [len(np.unique(tree.labels_at(k))) for k in range(len(tree.steps) + 1)]
    assert counts == sorted(counts) and counts[-1] == 4
    leaves = tree.leaves
    assert len(leaves) == tree.n_segments
    assert sorted(np.concatenate(leaves).tolist()) == list(range(64))
    for k, leaf in enumerate(leaves):
        assert (tree.labels.ravel()[leaf] == k).all()
    with pytest.raises(ParameterError):
        tree.labels_at(len(tree.steps) + 1)


def test_prune_cannot_raise_tau() -> None:
    tree = recursive_ncut(two_cliques(), tau=0.3)
    with pytest.raises(ParameterError, match="lower"):
        tree.prune(0.5)
    assert isinstance(tree.prune(1e-9), CutTree) and tree.prune(1e-9).n_segments == 1
    for bad in (0.0, 5.0, float("nan")):  # the one tau rule of the settings: 0 < tau <= 2
        with pytest.raises(ParameterError, match="0 < tau <= 2"):
            recursive_ncut(two_cliques(), tau=bad)


def test_min_size_and_max_depth() -> None:
    w, _ = block_checkerboard()
    assert recursive_ncut(w, tau=0.5, max_depth=1).n_segments == 2
    assert recursive_ncut(w, tau=0.5, max_depth=0).n_segments == 1
    tree = recursive_ncut(w, tau=1.5, min_size=5)
    assert min(len(x) for x in tree.leaves) >= 5
    with pytest.raises(ParameterError):
        recursive_ncut(w, mode="paper", min_size=3)


def test_disconnected_graph_split_along_components() -> None:
    w = two_cliques(bridge=0.0)
    tree = recursive_ncut(w, tau=0.5)
    assert tree.steps[0].solver == "components" and tree.steps[0].ncut == 0.0
    assert tree.n_segments == 2


def test_all_zero_w_is_defined() -> None:
    fixed = recursive_ncut(np.zeros((6, 6)), tau=0.5)
    assert fixed.n_segments == 6  # no affinity at all: every pixel its own component
    paper = recursive_ncut(np.zeros((6, 6)), tau=0.5, mode="paper")
    assert paper.n_segments == 1 and "zero degree" in paper.steps[0].reason


def test_sparse_input_matches_dense_on_sparse_graph() -> None:
    w, _ = block_checkerboard()
    w[w < 0.5] = 0.0
    w[np.arange(64), (np.arange(64) + 1) % 64] = w[(np.arange(64) + 1) % 64, np.arange(64)] = 0.01
    a = recursive_ncut(w, tau=0.5).labels
    b = recursive_ncut(sp.csr_matrix(w), tau=0.5).labels
    c = recursive_ncut(torch.as_tensor(w).to_sparse(), tau=0.5).labels
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    with pytest.raises(ParameterError, match="dense"):
        recursive_ncut(sp.csr_matrix(w), mode="paper")


def test_large_graph_uses_iterative_solver_and_agrees_with_dense() -> None:
    f = clustered_features(5, 20, 20, channels=64, k=4, noise=1.0)
    w = affinity(f, dtype=torch.float64)
    auto = recursive_ncut(w, tau=0.5, grid=(20, 20))
    dense = recursive_ncut(w, tau=0.5, grid=(20, 20), solver="dense")
    assert auto.steps[0].solver == "eigsh"
    assert adjusted_rand_score(auto.labels.ravel(), dense.labels.ravel()) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"tau": -1}, ParameterError),
        ({"tau": float("nan")}, ParameterError),
        ({"mode": "nope"}, ParameterError),
        ({"solver": "torch32"}, ParameterError),
        ({"grid": (3, 3)}, ParameterError),
        ({"min_size": 0}, ParameterError),
        ({"max_depth": -1}, ParameterError),
    ],
)
def test_bad_parameters(kwargs: dict, err: type) -> None:
    with pytest.raises(err):
        recursive_ncut(two_cliques(2), **kwargs)


def test_bad_w() -> None:
    with pytest.raises(FeatureError):
        recursive_ncut(np.full((3, 3), np.nan))
    with pytest.raises(ParameterError, match="symmetric"):
        recursive_ncut(np.triu(np.ones((3, 3))))
    with pytest.raises(ParameterError, match="negative"):
        recursive_ncut(-np.ones((3, 3)))
    with pytest.raises(ParameterError, match="square"):
        recursive_ncut(np.ones((3, 4)))
    with pytest.raises(FeatureError, match="empty"):
        recursive_ncut(np.ones((0, 0)))


def test_fixed_mode_does_not_peel_single_pixels_off_noisy_clusters() -> None:
    """Weak off-diagonal affinity plus the unit diagonal made one-pixel cuts score NCut < 0.5."""
    rng = np.random.default_rng(0)
    centres = np.eye(32)[np.repeat([0, 1], 50)]  # two clusters of 50 pixels in 32 channels
    feats = centres + rng.normal(0, 0.6, size=(100, 32))
    w = affinity(torch.as_tensor(feats.T.reshape(32, 10, 10), dtype=torch.float32), alpha=10)
    assert float(w.sum(1).mean()) < 10  # the regime where self-loops dominate small volumes
    tree = recursive_ncut(w, tau=0.5, mode="fixed")
    sizes = np.bincount(tree.labels.ravel())
    assert sizes.min() > 1, sizes
