"""Upsampling and refinement: concept assignment, nearest upsampling, PAMR, median filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcut_lab.errors import FeatureError, ImageInputError, ParameterError
from diffcut_lab.refine import compact_labels, concept_assignment, median_filter, nearest_upsample, pamr


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _disc(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2


# ----------------------------------------------------------------------------------------------------
# upsampling


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), value=st.integers(-5, 50), big=st.integers(1, 40))
def test_constant_label_map_stays_constant(h, w, value, big):
    lab = np.full((h, w), value)
    feats = np.random.default_rng(0).normal(size=(4, h, w))
    for out in (nearest_upsample(lab, (big, big + 1)), concept_assignment(lab, feats, (big, big + 1))):
        assert out.shape == (big, big + 1)
        assert out.dtype == np.int64
        assert np.all(out == 0)  # compact: the one id becomes 0


def test_nearest_upsample_integer_factor_and_batch():
    lab = np.array([[3, 7], [7, 9]])
    up = nearest_upsample(lab, 4)
    assert up.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 2, 2], [1, 1, 2, 2]]
    batch = torch.stack([torch.tensor(lab), torch.tensor(lab[::-1].copy())])
    upb = nearest_upsample(batch, (4, 6))
    assert isinstance(upb, torch.Tensor) and upb.shape == (2, 4, 6) and upb.dtype == torch.int64


def test_concept_assignment_recovers_clusters_at_high_resolution():
    # ground truth at 64x64: a disc on a background; features = 8x8 area averages of two concept
    # directions plus noise, as a patch encoder would give
    rng = np.random.default_rng(0)
    size, grid = 64, 8
    gt = _disc(size, 30, 36, 17)
    concepts = rng.normal(size=(2, 16))
    hi = concepts[gt.astype(int)].transpose(2, 0, 1)  # (16, 64, 64)
    feats = hi.reshape(16, grid, 8, grid, 8).mean((2, 4)) + 0.05 * rng.normal(size=(16, grid, grid))
    coarse = gt.reshape(grid, 8, grid, 8).mean((1, 3)) > 0.5
    out = concept_assignment(coarse.astype(int), feats, size)
    near = nearest_upsample(coarse.astype(int), size)
    acc_concept = (out == gt).mean()
    acc_nearest = (near == gt).mean()
    assert acc_concept > 0.97
    assert acc_concept > acc_nearest  # sub-patch boundaries come from the features


def test_concept_assignment_torch_and_ids():
    lab = torch.tensor([[5, 5, 2], [5, 2, 2]])
    feats = torch.stack([(lab == 5).float(), (lab == 2).float(), torch.zeros(2, 3)])
    out = concept_assignment(lab, feats, (4, 6))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    # id 0 is the smaller input id (2), id 1 is 5
    assert out[0, 0] == 1 and out[-1, -1] == 0


def test_concept_assignment_errors():
    with pytest.raises(ParameterError, match="grid"):
        concept_assignment(np.zeros((3, 3), int), np.ones((2, 4, 4)), 8)
    with pytest.raises(FeatureError, match="NaN"):
        concept_assignment(np.zeros((2, 2), int), np.full((2, 2, 2), np.nan), 8)
    with pytest.raises(FeatureError, match=r"\(C, h, w\)"):
        concept_assignment(np.zeros((2, 2), int), np.ones((2, 2)), 8)
    with pytest.raises(ParameterError, match="size"):
        nearest_upsample(np.zeros((2, 2), int), (0, 3))
    with pytest.raises(ParameterError, match="integer"):
        nearest_upsample(np.full((2, 2), 0.5), 4)


# ----------------------------------------------------------------------------------------------------
# PAMR


def _naive_pamr(img: np.ndarray, lab: np.ndarray, num_iter: int, dilations) -> np.ndarray:
    """Loop-by-pixel transcription of the PAMR definition (for a tiny image)."""
    _, h, w = img.shape
    k = lab.max() + 1
    mask = np.eye(k)[lab].transpose(2, 0, 1).astype(np.float64)
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]

    def at(a, y, x):
        return a[..., min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    weights = np.zeros((h, w, 8 * len(dilations)))
    for y in range(h):
        for x in range(w):
            window = [
                at(img, y + dy * d, x + dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            ]
            std = np.std(np.stack(window), axis=0, ddof=1)  # per colour channel
            logits = [
                np.mean(-np.abs(img[:, y, x] - at(img, y + dy * d, x + dx * d)) / (1e-8 + 0.1 * std))
                for d in dilations
                for dy, dx in offs
            ]
            e = np.exp(np.array(logits) - max(logits))
            weights[y, x] = e / e.sum()
    for _ in range(num_iter):
        new = np.zeros_like(mask)
        for y in range(h):
            for x in range(w):
                nb = [at(mask, y + dy * d, x + dx * d) for d in dilations for dy, dx in offs]
                new[:, y, x] = np.stack(nb, 1) @ weights[y, x]
        mask = new
    return mask.argmax(0)


def test_pamr_matches_a_naive_transcription():
    rng = np.random.default_rng(3)
    img = rng.random((3, 9, 11)).astype(np.float32)
    img[:, :, 5:] += 0.6
    img /= img.max()
    lab = rng.integers(0, 3, size=(9, 11))
    got = pamr(torch.from_numpy(img), lab, num_iter=3, dilations=(1, 2))
    want = compact_labels(_naive_pamr(img.astype(np.float64), lab, 3, (1, 2)))
    assert (got == want).mean() >= 0.98  # float32 vs float64 ties at most


def _edge_scene(size: int = 64, edge: int = 22, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = np.full((3, size, size), 0.2, np.float32)
    img[:, :, edge:] = np.array([0.9, 0.7, 0.3], np.float32)[:, None, None]
    img += rng.normal(scale=0.01, size=img.shape).astype(np.float32)
    truth = np.zeros((size, size), bool)
    truth[:, edge:] = True
    return np.clip(img, 0, 1), truth


def test_pamr_snaps_a_misaligned_mask_to_the_colour_edge():
    img, truth = _edge_scene()
    coarse = np.zeros((8, 8), int)
    coarse[:, 3:] = 1  # boundary at 24 px after 8x nearest upsampling, the true edge is at 22
    start = nearest_upsample(coarse, 64).astype(bool)
    coarse2 = np.zeros((8, 8), int)
    coarse2[:, 2:] = 1  # boundary at 16 px: 6 px too far left
    start2 = nearest_upsample(coarse2, 64).astype(bool)
    for s in (start, start2):
        out = pamr(img, s.astype(int), num_iter=10, dilations=(1, 2, 4, 8)).astype(bool)
        before, after = _iou(s, truth), _iou(out, truth)
        assert after > before + 0.03
        assert after > 0.97


def test_pamr_batched_matches_single_and_keeps_types():
    img1, _ = _edge_scene(seed=1)
    img2, _ = _edge_scene(edge=30, seed=2)
    lab1 = np.zeros((64, 64), int)
    lab1[:, 24:] = 4
    lab2 = np.zeros((64, 64), int)
    lab2[:, 28:] = 1
    lab2[:5, :5] = 2
    batch = pamr(torch.from_numpy(np.stack([img1, img2])), torch.from_numpy(np.stack([lab1, lab2])))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 64, 64) and batch.dtype == torch.int64
    single = pamr(img2, lab2)
    assert isinstance(single, np.ndarray) and single.dtype == np.int64
    np.testing.assert_array_equal(batch[1].numpy(), single)
    assert set(np.unique(batch[0].numpy())) <= {0, 1}  # compact ids


def test_pamr_accepts_uint8_and_resizes_labels():
    img, _ = _edge_scene()
    u8 = (img.transpose(1, 2, 0) * 255).astype(np.uint8)
    coarse = np.zeros((16, 16), int)
    coarse[:, 6:] = 1
    out = pamr(u8, coarse, num_iter=2)
    assert out.shape == (64, 64)


def test_pamr_zero_iterations_is_argmax_of_the_masks():
    img, _ = _edge_scene()
    lab = np.random.default_rng(0).integers(3, 6, size=(64, 64))
    np.testing.assert_array_equal(pamr(img, lab, num_iter=0), compact_labels(lab))


def test_pamr_errors():
    img, _ = _edge_scene()
    lab = np.zeros((64, 64), int)
    with pytest.raises(ParameterError, match="num_iter"):
        pamr(img, lab, num_iter=-1)
    with pytest.raises(ParameterError, match="dilations"):
        pamr(img, lab, dilations=(0, 2))
    with pytest.raises(ParameterError, match="dilations"):
        pamr(img, lab, dilations=())
    with pytest.raises(ImageInputError, match="image"):
        pamr(np.zeros((4, 8, 8), np.float32), lab)
    with pytest.raises(ParameterError, match="one label map per image"):
        pamr(np.stack([img, img]), np.zeros((3, 64, 64), int))
    with pytest.raises(ImageInputError, match="NaN"):
        pamr(np.full((3, 8, 8), np.nan, np.float32), np.zeros((8, 8), int))


# ----------------------------------------------------------------------------------------------------
# median filter


def test_median_filter_removes_isolated_pixels_and_compacts():
    lab = np.zeros((7, 7), int)
    lab[3, 3] = 9
    lab[:, 5:] = 4
    out = median_filter(lab)
    assert out[3, 3] == 0
    assert out.dtype == np.int64
    assert np.unique(out).tolist() == [0, 1]
    batch = median_filter(torch.from_numpy(np.stack([lab, lab.T])))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 7, 7)
    np.testing.assert_array_equal(batch[0].numpy(), out)
    with pytest.raises(ParameterError, match="size"):
        median_filter(lab, size=0)
