"""Linear CKA checked against an independent form: HSIC of centred Gram matrices (Kornblith et al. 2019,
eq. 4 with linear kernels), and the layer-similarity matrix entry by entry against it."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import diffcut_lab as dl
from diffcut_lab.layer_comparison import linear_cka
from diffcut_lab.testing import tiny_backbone


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = X X^T``, ``L = Y Y^T`` and ``H = I - 11^T / n``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h  # noqa: E741
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 30),
    p=st.integers(1, 8),
    q=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    mix=st.floats(0.0, 1.0),
)
def test_linear_cka_is_the_hsic_of_centred_gram_matrices(n, p, q, seed, mix):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) + rng.normal(size=p)  # an offset the centring must remove
    y = mix * x @ rng.normal(size=(p, q)) + (1 - mix) * rng.normal(size=(n, q))
    if np.linalg.norm(y - y.mean(0)) < 1e-9:
        return
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-9, abs=1e-12)


def test_layer_similarity_entries_are_the_cka_of_the_pooled_maps():
    bb = tiny_backbone("sd1")
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    cache = dl.capture(bb, images, layers="attn1", timesteps=[10, 500])
    sim = dl.layer_similarity(cache)
    maps = {f"{layer}@{t}": cache[layer, t].float() for layer in cache.layers for t in (10, 500)}
    h = min(m.shape[2] for m in maps.values())
    w = min(m.shape[3] for m in maps.values())
    reps = {
        k: F.adaptive_avg_pool2d(m, (h, w)).permute(0, 2, 3, 1).reshape(-1, m.shape[1]).numpy()
        for k, m in maps.items()
    }
    for a in sim.index:
        for b in sim.columns:
            assert sim.loc[a, b] == pytest.approx(_hsic_cka(reps[a], reps[b]), rel=1e-6, abs=1e-9), (a, b)
    assert (sim.to_numpy() < 0.999).any()  # the layers differ: the test is not of a constant matrix
