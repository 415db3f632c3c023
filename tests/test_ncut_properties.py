"""Property tests (hypothesis) for recursive_ncut on well-separated clustered features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference_ncut import clustered_features
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from diffcut_lab.affinities import affinity
from diffcut_lab.errors import FeatureError
from diffcut_lab.ncut import recursive_ncut

SETTINGS = settings(max_examples=12, deadline=None)


def feats(seed: int, side: int, k: int) -> torch.Tensor:
    # well separated clusters (noise small relative to the centres), so eigengaps are not degenerate
    return clustered_features(seed, side, side, channels=48, k=k, noise=0.35)


def refines(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Every segment of ``fine`` lies inside one segment of ``coarse``."""
    pairs = np.unique(np.stack([fine.ravel(), coarse.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1]


case = st.tuples(st.integers(0, 10_000), st.integers(6, 12), st.integers(2, 5))


@SETTINGS
@given(case, st.sampled_from(["fixed", "paper"]), st.floats(0.05, 1.2))
def test_labels_cover_every_pixel_and_are_deterministic(c, mode, tau) -> None:
    seed, side, k = c
    w = affinity(feats(seed, side, k))
    a = recursive_ncut(w, tau=tau, grid=(side, side), mode=mode)
    b = recursive_ncut(w, tau=tau, grid=(side, side), mode=mode)
    assert a.labels.shape == (side, side) and a.labels.dtype == np.int64
    assert set(np.unique(a.labels)) == set(range(a.n_segments))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal([s.ncut for s in a.steps], [s.ncut for s in b.steps])
    assert a.n_segments == 1 + sum(s.accepted for s in a.steps)


@SETTINGS
@given(case, st.integers(0, 2**31 - 1))
def test_permuting_pixels_permutes_labels_fixed_mode(c, pseed) -> None:
    seed, side, k = c
    f = feats(seed, side, k).reshape(48, -1)
    perm = np.random.default_rng(pseed).permutation(side * side)
    a = recursive_ncut(affinity(f.T.numpy(), dtype=torch.float64), tau=0.5).labels
    b = recursive_ncut(affinity(f.T.numpy()[perm], dtype=torch.float64), tau=0.5).labels
    assert adjusted_rand_score(a[perm], b) == 1.0


@SETTINGS
@given(case, st.sampled_from(["fixed", "paper"]), st.floats(0.05, 0.6), st.floats(0.0, 0.6))
def test_larger_tau_refines_and_prune_equals_fresh_run(c, mode, small, extra) -> None:
    seed, side, k = c
    large = small + extra
    w = affinity(feats(seed, side, k))
    big = recursive_ncut(w, tau=large, mode=mode)
    fresh = recursive_ncut(w, tau=small, mode=mode)
    assert refines(big.labels, fresh.labels)
    pruned = big.prune(small)
    np.testing.assert_array_equal(pruned.labels, fresh.labels)
    assert len(pruned.steps) == len(fresh.steps)
    for p, q in zip(pruned.steps, fresh.steps):
        assert (p.node, p.parent, p.depth, p.accepted, p.children) == (
            q.node,
            q.parent,
            q.depth,
            q.accepted,
            q.children,
        )
        np.testing.assert_array_equal(p.members, q.members)
        assert p.ncut == q.ncut or (np.isnan(p.ncut) and np.isnan(q.ncut))


@pytest.mark.parametrize("mode", ["fixed", "paper"])
def test_degenerate_inputs(mode: str) -> None:
    # constant features: all-ones affinity, no cut has NCut < 1
    assert recursive_ncut(affinity(torch.ones(8, 4, 4)), tau=0.5, grid=(4, 4), mode=mode).n_segments == 1
    # a single pixel
    one = recursive_ncut(affinity(torch.randn(8, 1, 1)), grid=(1, 1), mode=mode)
    assert one.n_segments == 1 and one.steps == [] and one.labels.shape == (1, 1)
    # two identical halves: left all one vector, right all another
    f = torch.zeros(4, 4, 6)
    f[0, :, :3] = 1.0
    f[1, :, 3:] = 1.0
    tree = recursive_ncut(affinity(f), tau=0.5, grid=(4, 6), mode=mode)
    assert tree.n_segments == 2
    np.testing.assert_array_equal(tree.labels, np.repeat([[0, 0, 0, 1, 1, 1]], 4, axis=0))
    # NaN / Inf are refused up front
    bad = torch.randn(8, 3, 3)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(FeatureError):
        affinity(bad)
    w = np.ones((4, 4))
    w[0, 1] = w[1, 0] = np.inf
    with pytest.raises(FeatureError):
        recursive_ncut(w, mode=mode)
