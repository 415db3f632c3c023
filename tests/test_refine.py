"""Upsampling and refinement: concept assignment, nearest upsampling, PAMR, median filter."""

from __future__ import annotations

import _reference_refine as ref
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _published_concept import published_concept_assignment
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcut_lab.errors import FeatureError, ImageInputError, ParameterError
from diffcut_lab.refine import (
    _first_argmax,
    _initial_masks,
    _pamr_affinity,
    _propagate,
    compact_labels,
    concept_assignment,
    median_filter,
    nearest_upsample,
    pamr,
)


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


# ----------------------------------------------------------------------------------------------------
# bit-equality with the plain implementation (tests/_reference_refine.py, frozen before the speed-up)


def _photo(h: int, w: int, k: int, seed: int, *, noise: float = 0.03, quantize: bool = False):
    """A photo-like (3, h, w) float32 guide (k warped Voronoi regions, a shading gradient, noise, a
    3x3 blur) and its (h, w) region ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    pts = np.stack([yy / h, xx / w], -1)
    warp = 0.04 * np.sin(pts[..., ::-1] * rng.uniform(4, 14, 2) * np.pi)
    truth = (((pts + warp)[:, :, None, :] - rng.random((k, 2))) ** 2).sum(-1).argmin(-1)
    img = rng.random((k, 3))[truth].transpose(2, 0, 1)
    img = img + 0.2 * rng.random((3, 1, 1)) * np.sin(3 * yy / h + rng.uniform(0, 6))
    img = img + rng.normal(scale=noise, size=img.shape)
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    img = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    img = np.clip(img, 0, 1).astype(np.float32)
    if quantize:
        img = (np.round(img * 255) / 255).astype(np.float32)
    return img, truth


def _coarse_guess(truth: np.ndarray, seed: int, flip: float = 0.0) -> np.ndarray:
    """``truth`` with its boundaries shifted by a few pixels and sprinkled errors (arbitrary id values)."""
    rng = np.random.default_rng(seed)
    h, w = truth.shape
    dy, dx = rng.integers(-3, 4, 2)
    lab = truth[np.clip(np.arange(h) + dy, 0, h - 1)][:, np.clip(np.arange(w) + dx, 0, w - 1)]
    noisy = rng.random(lab.shape) < flip
    lab = np.where(noisy, rng.integers(0, lab.max() + 1, lab.shape), lab)
    return 7 * lab - 3  # non-compact, negative ids


def _assert_same(got, want) -> None:
    assert type(got) is type(want)
    got_np = got.numpy() if isinstance(got, torch.Tensor) else got
    want_np = want.numpy() if isinstance(want, torch.Tensor) else want
    assert got_np.dtype == want_np.dtype == np.int64 and got_np.shape == want_np.shape
    np.testing.assert_array_equal(got_np, want_np)


@pytest.mark.parametrize(
    ("h", "w", "k", "dilations", "num_iter", "kind"),
    [
        (97, 131, 12, (1, 2, 4, 8), 10, "noisy"),
        (256, 200, 20, (1, 2, 4, 8), 10, "flat"),  # several bands of rows
        (64, 96, 2, (1,), 5, "uint8"),
        (50, 31, 6, (1, 2, 4, 8, 12, 24), 3, "noisy"),
        (1, 40, 3, (1, 2), 4, "flat"),
        (9, 1, 2, (3,), 2, "noisy"),
    ],
)
def test_pamr_equals_the_reference_bit_for_bit(h, w, k, dilations, num_iter, kind):
    img, truth = _photo(h, w, k, seed=h * w + k, noise=0.0 if kind == "flat" else 0.03)
    lab = _coarse_guess(truth, seed=k)
    guide = (img.transpose(1, 2, 0) * 255).round().astype(np.uint8) if kind == "uint8" else img
    args = {"num_iter": num_iter, "dilations": dilations}
    _assert_same(pamr(guide, lab, **args), ref.pamr(guide, lab, **args))
    t = torch.from_numpy(lab)
    _assert_same(pamr(torch.from_numpy(img), t, **args), ref.pamr(torch.from_numpy(img), t, **args))


def test_pamr_equals_the_reference_on_a_batch_and_resized_labels():
    img1, truth1 = _photo(72, 88, 9, seed=1)
    img2, truth2 = _photo(72, 88, 3, seed=2, noise=0.0)
    imgs = torch.from_numpy(np.stack([img1, img2]))
    labs = torch.from_numpy(np.stack([_coarse_guess(truth1, 1), _coarse_guess(truth2, 2)]))
    _assert_same(pamr(imgs, labs), ref.pamr(imgs, labs))
    coarse = labs[:, ::8, ::8]  # (2, 9, 11): one-hot masks bilinearly resized first
    _assert_same(pamr(imgs, coarse, num_iter=6), ref.pamr(imgs, coarse, num_iter=6))
    _assert_same(pamr(img1, coarse[0].numpy(), num_iter=0), ref.pamr(img1, coarse[0].numpy(), num_iter=0))


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    k=st.integers(1, 20),
    dilations=st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True),
    num_iter=st.integers(0, 6),
    seed=st.integers(0, 2**16),
    flat=st.booleans(),
    flip=st.sampled_from([0.0, 0.0, 0.003, 0.1]),
)
def test_pamr_equals_the_reference_property(h, w, k, dilations, num_iter, seed, flat, flip):
    img, truth = _photo(h, w, k, seed, noise=0.0 if flat else 0.05, quantize=flat)
    lab = _coarse_guess(truth, seed, flip=flip)
    args = {"num_iter": num_iter, "dilations": tuple(dilations)}
    _assert_same(pamr(img, lab, **args), ref.pamr(img, lab, **args))


def _grid_features(truth: np.ndarray, grid: tuple[int, int], channels: int, seed: int):
    """(channels, *grid) features: each region's concept vector, area-pooled to the grid, plus noise."""
    rng = np.random.default_rng(seed)
    coarse = truth[:: -(-truth.shape[0] // grid[0]), :: -(-truth.shape[1] // grid[1])][: grid[0], : grid[1]]
    concepts = rng.normal(size=(int(truth.max()) + 1, channels))
    feats = concepts[coarse].transpose(2, 0, 1) + 0.7 * rng.normal(size=(channels, *coarse.shape))
    return coarse, feats.astype(np.float32)


@pytest.mark.parametrize(
    ("size", "grid", "k"), [((97, 131), (12, 16), 8), ((128, 128), (16, 16), 20), ((33, 20), (5, 4), 2)]
)
def test_concept_assignment_equals_the_reference_bit_for_bit(size, grid, k):
    _, truth = _photo(*size, k, seed=k)
    coarse, feats = _grid_features(truth, grid, 64, seed=k)
    lab = 5 * coarse + 11
    _assert_same(
        concept_assignment(lab, feats, size, order="scores"),
        ref.concept_assignment(lab, feats, size, order="scores"),
    )
    # order="features" is the published arithmetic (MaskPooling), frozen in tests/_published_concept.py
    published = np.unique(
        published_concept_assignment(lab, torch.from_numpy(feats), size), return_inverse=True
    )[1]
    _assert_same(concept_assignment(lab, feats, size, order="features"), published.reshape(size))
    t_lab, t_feats = torch.from_numpy(lab), torch.from_numpy(feats)
    _assert_same(concept_assignment(t_lab, t_feats, size), ref.concept_assignment(t_lab, t_feats, size))


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    k=st.integers(1, 40),
    size=st.sampled_from([1, 2, 3, 3, 3, 4, 5]),
    batch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_median_filter_equals_the_reference_property(h, w, k, size, batch, seed):
    rng = np.random.default_rng(seed)
    ids = rng.choice(
        np.array([-(2**40), -3, 0, 1, 2, 7, 255, 256, 300, 2**33]), size=min(k, 10), replace=False
    )
    lab = ids[rng.integers(0, len(ids), (2, h, w) if batch else (h, w))]
    _assert_same(median_filter(lab, size), ref.median_filter(lab, size))
    t = torch.from_numpy(lab)
    _assert_same(median_filter(t, size), ref.median_filter(t, size))


def test_median_filter_equals_the_reference_on_many_ids():
    rng = np.random.default_rng(0)
    for k in (2, 200, 300, 40000):  # uint8, int16 and int32 working dtypes
        lab = rng.integers(0, k, (61, 67))
        _assert_same(median_filter(lab), ref.median_filter(lab))


def test_compact_labels_and_first_argmax_equal_torch():
    rng = np.random.default_rng(0)
    for lab in (rng.integers(-5, 5, (7, 9)), np.array([[2**40, -(2**40)], [3, 3]]), np.zeros((0, 3), int)):
        _assert_same(compact_labels(lab), ref.compact_labels(lab))
    scores = torch.from_numpy(rng.integers(0, 3, (6, 40, 50)).astype(np.float32))  # many ties
    scores[2, :5] = -0.0
    assert torch.equal(_first_argmax(list(scores)), scores.argmax(0))
    many = torch.from_numpy(rng.integers(0, 4, (300, 4, 5)).astype(np.float32))  # more than uint8 holds
    assert torch.equal(_first_argmax(list(many)), many.argmax(0))


def _reference_propagation(img: torch.Tensor, lab: np.ndarray, num_iter: int, dilations) -> torch.Tensor:
    """The frozen implementation's (K, H, W) probabilities after ``num_iter`` steps (its own loop)."""
    inv = torch.unique(torch.from_numpy(lab), return_inverse=True)[1]
    mask = F.one_hot(inv, int(inv.max()) + 1).permute(2, 0, 1)[None].float()
    aff = ref._pamr_affinity(img[None], dilations)
    for _ in range(num_iter):
        new = torch.zeros_like(mask)
        p = 0
        for d in dilations:
            for s in ref._shifts(mask, d, center=False):
                new += s * aff[:, p : p + 1]
                p += 1
        mask = new
    return mask[0]


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    k=st.integers(1, 12),
    dilations=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True),
    num_iter=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    flat=st.booleans(),
    flip=st.sampled_from([0.0, 0.0, 0.003]),
    band_elements=st.sampled_from([1, 40, 700, 2**18]),
)
def test_pamr_probabilities_equal_the_reference_bit_for_bit(
    h, w, k, dilations, num_iter, seed, flat, flip, band_elements
):
    # labels alone hide small float differences (the argmax is robust): compare every probability, with
    # tight support boxes (few flipped pixels) and bands of a few rows as large images get them
    img_np, truth = _photo(h, w, k, seed, noise=0.0 if flat else 0.05, quantize=flat)
    img, lab = torch.from_numpy(img_np), _coarse_guess(truth, seed, flip=flip)
    dil = tuple(dilations)
    aff = _pamr_affinity(img[None], dil)
    assert torch.equal(aff, ref._pamr_affinity(img[None], dil))
    inv = compact_labels(torch.from_numpy(lab))
    mask = _initial_masks(inv[None], int(inv.max()) + 1, (h, w))[0]
    planes = _propagate(mask, aff[0], dil, num_iter, band_elements=band_elements)
    want = _reference_propagation(img, lab, num_iter, dil)
    for plane, expected in zip(planes, want, strict=True):
        if plane is None:
            assert not expected.any()
        else:
            assert torch.equal(plane, expected)
