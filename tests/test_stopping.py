"""Automatic stopping: the per-step rule, the stable tau of a cut tree, and the automatic number of segments."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcut_lab._eigen import EIGVALS_DENSE_MAX
from diffcut_lab.affinities import affinity
from diffcut_lab.errors import FeatureError, ParameterError
from diffcut_lab.ncut import CutTree, recursive_ncut
from diffcut_lab.stopping import (
    auto_n_segments,
    auto_threshold,
    dynamic_accept,
    laplacian_eigenvalues,
    stable_tau,
)
from diffcut_lab.walks import walk_affinity

GRID = (16, 16)


def _blobs(
    k: int, *, noise: float = 0.5, seed: int = 0, channels: int = 64
) -> tuple[torch.Tensor, np.ndarray]:
    """``(C, h, w)`` features of ``k`` Gaussian blobs (one centre per blob, isotropic noise) laid out as
    vertical bands on a 16 x 16 grid, and the ``(h, w)`` true labels."""
    rng = np.random.default_rng(seed)
    h, w = GRID
    labels = np.repeat((np.arange(w) * k // w)[None, :], h, axis=0)
    centres = rng.normal(size=(k, channels))
    x = centres[labels.reshape(-1)] + noise * rng.normal(size=(h * w, channels))
    return torch.from_numpy(x.T.reshape(channels, h, w).astype(np.float32)), labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.reshape(-1), b.reshape(-1)]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


def _auto_recursion(W: torch.Tensor, tree: CutTree) -> tuple[np.ndarray, list[str]]:
    """Replay the recursion with ``dynamic_accept`` deciding every step: a node's sub-graph, Fiedler
    vector and candidates do not depend on tau, so the steps of a tree computed at tau 1 are exactly what
    the recursion would see. Returns the flat labels and the reasons, in visiting order."""
    g = W.double().numpy()
    active, codes, nxt, reasons = {0}, np.zeros(tree.n_nodes, np.int64), 1, []
    for s in tree.steps:
        if s.node not in active or s.fiedler.size == 0:
            continue
        sub = g[np.ix_(s.members, s.members)].copy()
        np.fill_diagonal(sub, 0.0)
        ok, why = dynamic_accept(
            sub,
            sub.sum(1),
            s.fiedler,
            s.thresholds,
            s.ncut_values,
            s.ncut,
            depth=s.depth,
            n_total=tree.n_nodes,
        )
        reasons.append(why)
        if ok:
            assert s.accepted, "an automatic acceptance must lie inside the tau=1 tree"
            active.update(s.children)
            codes[s.positive_members()] = nxt
            nxt += 1
    return codes, reasons


# ------------------------------------------------------------------------------------ constant features


def test_constant_features_give_one_segment_with_every_rule():
    W = affinity(torch.ones(64, *GRID), alpha=10)
    tree = recursive_ncut(W, tau=1.0, grid=GRID)
    codes, reasons = _auto_recursion(W, tree)
    assert np.unique(codes).size == 1
    assert reasons and reasons[0].startswith("stopped") and "one segment" in reasons[0]
    tau, why = stable_tau(tree)
    assert tree.prune(tau).n_segments == 1 and "1 segment" in why
    for method in ("eigengap", "tree"):
        k, why = auto_n_segments(W, method=method, grid=GRID)
        assert k == 1, why


def test_all_equal_affinity_has_threshold_at_most_one_and_one_group():
    W = np.ones((12, 12))
    np.fill_diagonal(W, 0.0)
    tau, k, vals = auto_threshold(W)
    assert k == 1 and tau <= 1.0
    assert vals[0] == pytest.approx(0.0, abs=1e-12) and vals[1] == pytest.approx(12 / 11)


# ------------------------------------------------------------------------------- separated clusters


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_per_step_rule_finds_the_true_clusters(k):
    feats, truth = _blobs(k, seed=k)
    W = affinity(feats, alpha=10)
    tree = recursive_ncut(W, tau=1.0, grid=GRID)
    codes, reasons = _auto_recursion(W, tree)
    assert _same_partition(codes, truth), reasons
    accepted = [r for r in reasons if r.startswith("accepted")]
    assert len(accepted) == k - 1
    assert all("below the automatic threshold" in r for r in accepted)
    assert sum(r.startswith("stopped") for r in reasons) >= k  # every leaf was tried and refused


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_stable_tau_and_auto_n_segments_find_the_true_count(k):
    feats, truth = _blobs(k, seed=10 + k)
    W = affinity(feats, alpha=10)
    tree = recursive_ncut(W, tau=1.0, grid=GRID)
    tau, why = stable_tau(tree)
    pruned = tree.prune(tau)
    assert pruned.n_segments == k and f"{k} segments" in why
    assert _same_partition(pruned.labels, truth)
    assert auto_n_segments(W)[0] == k
    assert auto_n_segments(W, method="tree", grid=GRID)[0] == k


@pytest.mark.parametrize("k", [2, 4, 6])
def test_rules_on_the_attention_walk_graph(k):
    """Attention of blob features (softmax of scaled cosine similarity) as a 2-step random walk."""
    feats, truth = _blobs(k, seed=20 + k)
    x = torch.nn.functional.normalize(feats.reshape(64, -1).T.double(), dim=1)
    W = walk_affinity(torch.softmax(10.0 * x @ x.T, dim=1), steps=2)
    tree = recursive_ncut(W, tau=1.0, grid=GRID)
    codes, _ = _auto_recursion(W, tree)
    assert _same_partition(codes, truth)
    assert tree.prune(stable_tau(tree)[0]).n_segments == k
    assert auto_n_segments(W)[0] == k


def test_eigengap_count_ignores_self_loops_by_default():
    """One noisy blob: the unit diagonal of the affinity dominates the small alpha=10 weights and squeezes
    the spectrum (a spurious gap among tiny eigenvalues); without self-loops the count is 1."""
    feats, _ = _blobs(1, noise=0.5, seed=0)
    W = affinity(feats, alpha=10)
    k, why = auto_n_segments(W)
    assert k == 1, why
    k_loops, why_loops = auto_n_segments(W, self_loops=True)
    assert k_loops >= 1 and why_loops.startswith(f"K = {k_loops}")


def test_kway_count_accepts_sparse_knn_graphs():
    feats, _ = _blobs(3, seed=5)
    k, why = auto_n_segments(affinity(feats, alpha=10, knn=16))
    assert k == 3, why
    assert auto_n_segments(sp.csr_matrix(affinity(feats, alpha=10).numpy()))[0] == 3


# ------------------------------------------------------------------------------------ stable tau


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), noise=st.sampled_from([0.5, 1.5, 3.0]), k=st.integers(1, 4))
def test_stable_tau_is_inside_the_range_and_its_reason_counts_right(seed, noise, k):
    feats, _ = _blobs(k, noise=noise, seed=seed, channels=16)
    tree = recursive_ncut(affinity(feats[:, :8, :8], alpha=10), tau=1.0, grid=(8, 8))
    tau, why = stable_tau(tree)
    assert 0.0 < tau < 1.0
    n = tree.prune(tau).n_segments
    assert why.startswith(f"tau {tau:.4g}: {n} segment")


def test_stable_tau_range_checks():
    feats, _ = _blobs(2)
    tree = recursive_ncut(affinity(feats, alpha=10), tau=0.5, grid=GRID)
    tau, _ = stable_tau(tree)
    assert 0.0 < tau <= 0.5
    with pytest.raises(ParameterError):
        stable_tau(tree, max_tau=0.8)
    with pytest.raises(ParameterError):
        stable_tau(tree, min_tau=0.6)
    with pytest.raises(ParameterError):
        stable_tau(tree, min_tau=-1.0)


def test_stable_tau_counts_cuts_below_min_tau_as_made():
    feats, _ = _blobs(3, seed=3)
    tree = recursive_ncut(affinity(feats, alpha=10), tau=1.0, grid=GRID)
    tau, why = stable_tau(tree, min_tau=0.2)
    assert tau > 0.2 and tree.prune(tau).n_segments == 3, why


# ----------------------------------------------------------------------------------- per-step inputs


def _two_cliques(n: int = 8, bridge: float = 0.01) -> np.ndarray:
    W = np.full((2 * n, 2 * n), bridge)
    W[:n, :n] = W[n:, n:] = 1.0
    np.fill_diagonal(W, 0.0)
    return W


def test_per_step_rule_on_a_hand_built_step():
    W = _two_cliques()
    d = W.sum(1)

    def ncut_of(side):
        cut = W[side][:, ~side].sum()
        return cut / d[side].sum() + cut / d[~side].sum()

    y = np.r_[np.ones(8), -np.ones(8)]
    ncut = ncut_of(y > 0)
    ok, why = dynamic_accept(W, d, y, np.array([0.0]), np.array([ncut]), ncut, depth=0, n_total=16)
    assert ok and why.startswith(f"accepted: ncut {ncut:.4g} below the automatic threshold")
    assert "8 + 8" in why and "below which lie 2 eigenvalues" in why
    # a poor cut of the same region (half a clique split off) is above the bulk, so it is refused
    bad = np.r_[np.ones(4), -np.ones(12)]
    value = ncut_of(bad > 0)
    ok, why = dynamic_accept(W, d, bad, np.array([0.0]), np.array([value]), value, depth=1, n_total=64)
    assert not ok and why.startswith(f"stopped: ncut {value:.4g} above the automatic threshold")
    assert "region of 16 of 64 nodes at depth 1" in why


def test_per_step_rule_edge_cases():
    W = _two_cliques(bridge=0.0)
    d, y = W.sum(1), np.r_[np.ones(8), -np.ones(8)]
    ok, why = dynamic_accept(W, d, y, [0.0], [0.0], 0.0, depth=0, n_total=16)
    assert ok and "no edge crosses" in why
    ok, why = dynamic_accept(W, d, y, [0.0], [np.nan], np.nan, depth=0, n_total=16)
    assert not ok and "undefined" in why
    ok, why = dynamic_accept(W, d, np.ones(16), [0.5], [0.3], 0.3, depth=0, n_total=16)
    assert not ok and "empty" in why
    ok, _ = dynamic_accept(sp.csr_matrix(_two_cliques()), d, y, [0.0], [0.02], 0.02, depth=0, n_total=16)
    assert ok
    with pytest.raises(ParameterError):
        dynamic_accept(W, d[:-1], y, [0.0], [0.1], 0.1, depth=0, n_total=16)
    with pytest.raises(ParameterError):
        dynamic_accept(W, d, y, [0.0, 1.0], [0.1], 0.1, depth=0, n_total=16)


def test_laplacian_eigenvalues_lanczos_matches_dense():
    feats, _ = _blobs(3, seed=7)
    W = affinity(torch.nn.functional.interpolate(feats[None], size=(25, 25))[0], alpha=10).double().numpy()
    np.fill_diagonal(W, 0.0)
    assert W.shape[0] > EIGVALS_DENSE_MAX  # 625 nodes: the Lanczos path runs
    d = W.sum(1)
    s = 1.0 / np.sqrt(d)
    dense = np.sort(1.0 - scipy.linalg.eigvalsh(s[:, None] * W * s[None, :]))[:8]
    assert np.allclose(laplacian_eigenvalues(W, d, 8), dense, atol=1e-8)
    assert np.allclose(laplacian_eigenvalues(W.astype(np.float32), d, 8), dense, atol=1e-5)
    assert np.allclose(laplacian_eigenvalues(sp.csr_matrix(W), None, 8), dense, atol=1e-8)


@pytest.mark.parametrize("kwargs", [{"max_segments": 0}, {"max_segments": True}, {"method": "silhouette"}])
def test_auto_n_segments_bad_parameters(kwargs):
    with pytest.raises(ParameterError):
        auto_n_segments(np.ones((4, 4)), **kwargs)


def test_auto_n_segments_single_node_and_shape_check():
    assert auto_n_segments(np.ones((1, 1)))[0] == 1
    with pytest.raises(ParameterError, match="square"):
        auto_n_segments(np.ones((3, 4)))
    with pytest.raises(ParameterError, match="symmetric"):
        auto_n_segments(np.triu(np.ones((3, 3))))
    with pytest.raises(FeatureError, match="empty"):
        auto_n_segments(np.ones((0, 0)))
