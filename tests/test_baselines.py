"""Baselines on the same features: k-means, spectral clustering, DiffSeg-style merging, DiffCut."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from diffcut_lab.baselines import diffseg_segment, eigengap_k, segment_features
from diffcut_lab.errors import FeatureError, ParameterError


def _regions(h: int = 8, w: int = 8) -> np.ndarray:
    """Three regions: left third, a top-right block, the rest."""
    reg = np.full((h, w), 2)
    reg[:, : w // 3] = 0
    reg[: h // 2, w // 2 :] = 1
    return reg


def _clustered_features(regions: np.ndarray, c: int = 16, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(regions.max() + 1, c))
    f = centres[regions] + noise * rng.normal(size=(*regions.shape, c))
    return f.transpose(2, 0, 1) * rng.uniform(0.5, 3.0, size=regions.shape)  # norms vary; directions matter


def _block_attention(regions: np.ndarray, inside: float = 1.0, outside: float = 0.01, seed: int = 0):
    """Query x key probabilities: each query attends to its own region, with a little noise."""
    rng = np.random.default_rng(seed)
    flat = regions.ravel()
    a = np.where(flat[:, None] == flat[None, :], inside, outside) * rng.uniform(0.8, 1.2, (flat.size,) * 2)
    return a / a.sum(1, keepdims=True)


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    return adjusted_rand_score(a.ravel(), b.ravel())


def test_kmeans_recovers_clusters_and_is_seeded():
    reg = _regions()
    f = _clustered_features(reg)
    lab = segment_features(f, "kmeans", n_clusters=3, seed=1)
    assert lab.shape == reg.shape and lab.dtype == np.int64
    assert _ari(lab, reg) == 1.0
    assert lab[0, 0] == 0  # numbered by first appearance
    np.testing.assert_array_equal(lab, segment_features(torch.from_numpy(f), "kmeans", n_clusters=3, seed=1))


def test_spectral_finds_k_by_eigengap():
    reg = _regions()
    f = _clustered_features(reg, noise=0.1)
    lab = segment_features(f, "spectral", alpha=10.0, seed=0)
    assert lab.max() + 1 == 3
    assert _ari(lab, reg) == 1.0
    lab2 = segment_features(f, "spectral", n_clusters=2, seed=0)
    assert lab2.max() + 1 == 2


def test_eigengap_on_block_diagonal_affinity():
    sizes = [5, 7, 4, 6]
    W = np.zeros((22, 22))
    start = 0
    for s in sizes:
        W[start : start + s, start : start + s] = 1.0
        start += s
    W += 1e-3
    assert eigengap_k(W, max_clusters=10) == 4


def test_diffseg_recovers_blocks_from_one_map():
    reg = _regions()
    attn = _block_attention(reg)
    lab = segment_features(np.zeros((1, 8, 8)), "diffseg", attn=attn, kl_threshold=1.1)
    assert _ari(lab, reg) == 1.0
    # a tiny threshold merges nothing beyond the anchors' own maps: more segments than regions
    fine = diffseg_segment(attn, (8, 8), kl_threshold=1e-6, n_iter=1, anchors=8)
    assert fine.max() + 1 > 3


def test_diffseg_aggregates_resolutions():
    reg = np.zeros((8, 8), int)
    reg[:, 4:] = 1
    reg[4:, :4] = 2  # regions aligned with 2x2 blocks, so the 4x4 map sees them too
    coarse = reg[::2, ::2]
    attn = [_block_attention(reg, seed=1), _block_attention(coarse, seed=2)]
    lab = diffseg_segment(attn, kl_threshold=1.1, n_iter=3, anchors=4)
    assert lab.shape == (8, 8)
    assert _ari(lab, reg) == 1.0
    refined = diffseg_segment(attn, kl_threshold=1.1, refine=True)
    assert _ari(refined, reg) == 1.0
    # (heads, N, N) is averaged; attention on a finer grid than the features is resized to them
    heads = np.stack([attn[0], attn[0]])
    lab4 = segment_features(np.zeros((3, 4, 4)), "diffseg", attn=heads)
    assert lab4.shape == (4, 4)
    assert _ari(lab4, coarse) == 1.0


def test_diffcut_method():
    reg = _regions()
    f = _clustered_features(reg, noise=0.1)
    lab = segment_features(f, "diffcut", alpha=10.0, tau=0.5, seed=3)
    assert lab.shape == reg.shape and lab.dtype == np.int64
    assert _ari(lab, reg) == 1.0


def test_errors():
    f = _clustered_features(_regions())
    with pytest.raises(ParameterError, match="unknown method"):
        segment_features(f, "watershed")
    with pytest.raises(ParameterError, match="n_clusters"):
        segment_features(f, "kmeans")
    with pytest.raises(ParameterError, match="exceeds"):
        segment_features(f, "kmeans", n_clusters=65)
    with pytest.raises(ParameterError, match="takes no keyword"):
        segment_features(f, "kmeans", n_clusters=2, tau=0.3)
    with pytest.raises(ParameterError, match="attn"):
        segment_features(f, "diffseg")
    with pytest.raises(FeatureError, match="NaN"):
        segment_features(np.full((2, 3, 3), np.nan), "kmeans", n_clusters=2)
    with pytest.raises(FeatureError, match=r"\(C, h, w\)"):
        segment_features(np.zeros((3, 3)), "kmeans", n_clusters=2)
    with pytest.raises(FeatureError, match="integer factor"):
        diffseg_segment([np.full((64, 64), 1 / 64), np.full((9, 9), 1 / 9)])
    with pytest.raises(FeatureError, match=r"\(N, N\)"):
        diffseg_segment(np.ones((4, 5)))
    with pytest.raises(ParameterError, match="kl_threshold"):
        diffseg_segment(np.full((16, 16), 1 / 16), kl_threshold=-1.0)


def _bands(
    k: int, *, noise: float = 0.5, seed: int = 0, channels: int = 64
) -> tuple[torch.Tensor, np.ndarray]:
    """``(C, 16, 16)`` features of ``k`` Gaussian blobs laid out as vertical bands (one blob: pure noise
    around one centre), and the ``(16, 16)`` true labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat((np.arange(16) * k // 16)[None, :], 16, axis=0)
    centres = rng.normal(size=(k, channels))
    x = centres[labels.reshape(-1)] + noise * rng.normal(size=(256, channels))
    return torch.from_numpy(x.T.reshape(channels, 16, 16).astype(np.float32)), labels


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("mode", ["fixed", "paper"])
def test_spectral_counts_clusters_as_auto_n_segments(k, mode):
    """One graph and one eigengap rule: the spectral baseline, eigengap_k, the eigenvector view and
    auto_n_segments agree, on one noisy blob (1 cluster, where the old count with self-loops and at least
    two clusters said 2 to 4) and on k clear clusters."""
    from diffcut_lab.config import DiffCutConfig
    from diffcut_lab.segmentation import affinity_graph
    from diffcut_lab.spectrum import laplacian_spectrum
    from diffcut_lab.stopping import auto_n_segments

    cfg = DiffCutConfig(mode=mode)
    for seed in range(3):
        f, truth = _bands(k, seed=seed + 10 * k)
        W = affinity_graph(f, cfg)
        auto, why = auto_n_segments(W, self_loops=mode == "paper")
        assert auto == k, why
        assert eigengap_k(W, mode=mode) == k
        assert laplacian_spectrum(f, config=cfg).n_clusters == k
        lab = segment_features(f, "spectral", config=cfg, seed=0)
        assert lab.max() + 1 == k and _ari(lab, truth) == 1.0


def test_spectral_cuts_the_configs_graph():
    """kNN and attention-walk graphs, as the cut builds them."""
    reg = _regions(12, 12)
    f = _clustered_features(reg, noise=0.1)
    lab = segment_features(f, "spectral", knn=8, seed=0)
    assert _ari(lab, reg) == 1.0
    attn = _block_attention(reg)
    lab = segment_features(f, "spectral", affinity="attention", attention=attn, seed=0)
    assert _ari(lab, reg) == 1.0
    assert _ari(segment_features(f, "diffcut", affinity="attention", attention=attn), reg) == 1.0
    with pytest.raises(ParameterError, match="attention"):
        segment_features(f, "spectral", affinity="attention")
