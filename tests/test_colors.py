"""Segment colours that mean one thing across granularities (diffcut_lab.colors.lineage_hex)."""

from __future__ import annotations

import numpy as np
import pytest
from _reference_ncut import clustered_features
from hypothesis import given, settings
from hypothesis import strategies as st

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.colors import lineage_hex


def _persisting(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """(id in a, id in b) of the segments that are the same pixel set in both labelings."""
    out = []
    for k in np.unique(a):
        mask = a == k
        ids = np.unique(b[mask])
        if ids.shape[0] == 1 and np.array_equal(b == ids[0], mask):
            out.append((int(k), int(ids[0])))
    return out


def test_a_pruned_tree_keeps_each_segments_colour_and_splits_take_distinct_colours():
    f = clustered_features(3, 16, 16, channels=32, k=6, noise=0.7)
    trees = core.cut_trees(f, dl.DiffCutConfig(refine="none"), [0.05, 0.2, 0.6, 0.9])
    labs = [trees[t].labels for t in sorted(trees)]
    cols = lineage_hex(labs)
    assert [len(c) for c in cols] == [int(lab.max()) + 1 for lab in labs]
    for (a, ca), (b, cb) in zip(zip(labs, cols), zip(labs[1:], cols[1:])):
        kept = _persisting(a, b)
        assert kept, "some segment persists between these taus"
        for ka, kb in kept:
            assert ca[ka] == cb[kb]
        assert len(set(cb)) == len(cb)  # within one labeling, every segment its own colour


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), splits=st.integers(1, 6))
def test_refining_a_labeling_never_recolours_an_untouched_segment(seed, splits):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 3, (12, 12))
    chain = [lab]
    for _ in range(splits):  # split one segment in two along a random cell mask
        cur = chain[-1].copy()
        k = rng.integers(0, cur.max() + 1)
        cur[(cur == k) & (rng.random(cur.shape) < 0.5)] = cur.max() + 1
        chain.append(cur)
    cols = lineage_hex(chain)
    for (a, ca), (b, cb) in zip(zip(chain, cols), zip(chain[1:], cols[1:])):
        for ka, kb in _persisting(a, b):
            assert ca[ka] == cb[kb]


def test_lineage_checks_its_input():
    with pytest.raises(dl.ParameterError, match="integer ids"):
        lineage_hex([np.zeros((4, 4))])
    with pytest.raises(dl.ParameterError, match="integer ids"):
        lineage_hex([-np.ones((4, 4), int)])
