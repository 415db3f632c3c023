"""Tests for diffcut_lab.affinities (the public function is ``diffcut_lab.affinity``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference_ncut import clustered_features, reference_affinity

from diffcut_lab.affinities import affinity
from diffcut_lab.errors import FeatureError, ParameterError


def test_matches_published_formula_bit_for_bit() -> None:
    f = clustered_features(0, 8, 8, channels=64)
    w = affinity(f, alpha=10)
    assert w.dtype == torch.float32 and w.shape == (64, 64)
    assert torch.equal(w, reference_affinity(f, 10))


def test_hand_computed_values() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (N, C): cosines 0, 1/sqrt2, 1/sqrt2
    w = affinity(x, alpha=2, dtype=torch.float64).numpy()
    c = 1 / np.sqrt(2)
    expected = np.array([[1, 0, c**2], [0, 1, c**2], [c**2, c**2, 1]])
    np.testing.assert_allclose(w, expected, atol=1e-12)


def test_layouts_agree_and_numpy_accepted() -> None:
    f = clustered_features(1, 4, 5, channels=16)
    a = affinity(f)
    b = affinity(f.reshape(16, -1).T.numpy())
    torch.testing.assert_close(a, b)
    assert affinity(f, dtype=torch.float64).dtype == torch.float64


def test_symmetric_unit_diagonal_range() -> None:
    w = affinity(torch.randn(32, 6, 6, generator=torch.Generator().manual_seed(2)), alpha=5)
    torch.testing.assert_close(w, w.T)
    assert float(w.min()) == 0.0 and float(w.max()) == 1.0
    torch.testing.assert_close(torch.diagonal(w), torch.ones(36))


def test_constant_features_give_all_ones() -> None:
    w = affinity(torch.ones(8, 3, 3))
    assert torch.equal(w, torch.ones(9, 9))
    assert torch.equal(affinity(torch.randn(8, 1, 1)), torch.ones(1, 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_features_raise(bad: float) -> None:
    f = torch.randn(4, 3, 3)
    f[1, 2, 0] = bad
    with pytest.raises(FeatureError, match="NaN or Inf"):
        affinity(f)


@pytest.mark.parametrize("alpha", [0, -1, float("nan"), "x"])
def test_bad_alpha_raises(alpha: object) -> None:
    with pytest.raises(ParameterError, match="alpha"):
        affinity(torch.randn(4, 3, 3), alpha=alpha)  # type: ignore[arg-type]


def test_bad_layouts_raise() -> None:
    with pytest.raises(FeatureError, match="shape"):
        affinity(torch.randn(2, 4, 3, 3))
    with pytest.raises(FeatureError, match="empty"):
        affinity(torch.randn(0, 3, 3))


def test_knn_keeps_exact_weights_of_strongest_edges() -> None:
    f = clustered_features(3, 8, 8, channels=32)
    dense = affinity(f).numpy()
    sparse = affinity(f, knn=6, chunk_size=10)
    assert sparse.layout == torch.sparse_coo
    s = sparse.to_dense().numpy()
    np.testing.assert_array_equal(s, s.T)
    kept = s > 0
    np.testing.assert_allclose(s[kept], dense[kept], rtol=1e-6)
    # every node keeps at least its 6 strongest neighbours (plus itself)
    assert (kept.sum(1) >= 7).all()
    top = np.argsort(-dense, axis=1)[:, :7]
    assert kept[np.arange(64)[:, None], top].all()
