"""Hungarian-matched mIoU: hand-computed cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diffcut_lab.errors import DiffCutLabError, ParameterError
from diffcut_lab.metrics import (
    MIoUAccumulator,
    MIoUResult,
    confusion_histogram,
    hungarian_miou,
    image_counts,
    merge_background,
)


def test_two_classes_by_hand():
    # hist (rows = classes 0, 1; columns = clusters 3, 9):
    #   [[2, 0],
    #    [1, 1]]   -> match 0<->3, 1<->9 (3 pixels) rather than 0<->9, 1<->3 (1 pixel)
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[3, 3, 3, 9]])
    hist, ids = confusion_histogram(pred, gt, 2)
    assert hist.tolist() == [[2, 0], [1, 1]]
    assert ids.tolist() == [3, 9]
    r = hungarian_miou(pred, gt, num_classes=2)
    assert r.tp.tolist() == [2, 1]
    assert r.fp.tolist() == [1, 0]  # cluster 3 holds one pixel of class 1
    assert r.fn.tolist() == [0, 1]
    np.testing.assert_allclose(r.iou, [2 / 3, 1 / 2])
    assert r.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert r.accuracy == pytest.approx(3 / 4)
    assert r.n_pixels == 4 and r.n_images == 1


def test_unmatched_cluster_counts_as_false_negative_only():
    # classes: 0 x4, 1 x4 (class 2 absent); clusters a=0 (3 px of class 0), b=1 (1 px of class 0), c=2
    # hist [[3, 1, 0], [0, 0, 4], [0, 0, 0]] -> 0<->a, 1<->c; b unmatched: its pixel is FN of class 0
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])[None]
    pred = np.array([0, 0, 0, 1, 2, 2, 2, 2])[None]
    r = hungarian_miou(pred, gt, num_classes=3, match="present")
    assert r.tp.tolist() == [3, 4, 0]
    assert r.fp.tolist() == [0, 0, 0]
    assert r.fn.tolist() == [1, 0, 0]
    assert np.isnan(r.iou[2])  # never seen, never matched: left out of the mean
    assert r.miou == pytest.approx((3 / 4 + 1) / 2)
    # the published code (the default) also hands the leftover cluster b to the absent class 2 (FP = 1,
    # IoU = 0): over-segmentation costs more, and the mean takes class 2 in
    ref = hungarian_miou(pred, gt, num_classes=3)
    assert ref.fp.tolist() == [0, 0, 1]
    assert ref.iou[2] == 0.0
    assert ref.miou == pytest.approx((3 / 4 + 1 + 0) / 3)


def test_default_metric_is_the_published_protocol():
    # every mIoU the toolkit prints must compare with the paper's tables: the default is match="reference"
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 4, (16, 16)) for _ in range(5)]  # 4 of 27 classes present per image
    preds = [rng.integers(0, 12, (16, 16)) for _ in range(5)]  # over-segmented
    default = hungarian_miou(preds, gts, num_classes=27)
    published = hungarian_miou(preds, gts, num_classes=27, match="reference")
    present = hungarian_miou(preds, gts, num_classes=27, match="present")
    assert default.miou == published.miou
    assert present.miou > 2 * published.miou  # left-over clusters go to absent classes as false positives


def test_more_classes_than_clusters():
    # one cluster over three classes: it goes to the largest class, the others are all FN
    gt = np.array([[0, 0, 0, 1, 1, 2]])
    pred = np.zeros_like(gt)
    r = hungarian_miou(pred, gt, 3)
    assert r.tp.tolist() == [3, 0, 0]
    assert r.fp.tolist() == [3, 0, 0]
    assert r.fn.tolist() == [0, 2, 1]
    np.testing.assert_allclose(r.iou, [0.5, 0.0, 0.0])


def test_dataset_accumulation_is_not_a_mean_of_images():
    # image A: perfect on class 0 (4 px); image B: class 0 (1 px) and class 1 (3 px) in one cluster
    a_gt, a_pred = np.zeros((2, 2), int), np.full((2, 2), 5)
    b_gt, b_pred = np.array([[0, 1], [1, 1]]), np.zeros((2, 2), int)
    r = hungarian_miou([a_pred, b_pred], [a_gt, b_gt], 2)
    # B: hist [[1], [3]] -> cluster to class 1: tp1=3, fp1=1, fn0=1
    assert r.tp.tolist() == [4, 3]
    assert r.fp.tolist() == [0, 1]
    assert r.fn.tolist() == [1, 0]
    np.testing.assert_allclose(r.iou, [4 / 5, 3 / 4])
    assert r.n_images == 2 and r.n_pixels == 8
    lazy = hungarian_miou((p for p in [a_pred, b_pred]), [a_gt, b_gt], 2)  # any iterable of maps
    assert lazy.tp.tolist() == r.tp.tolist()


def test_background_protocol_by_hand():
    # N = 3: objects 0 and 1, background = class 2 (marked -1 here); 255 ignored
    gt = np.array([[-1, -1, -1, 0, 0, 0, 1, 1, 255]])
    pred = np.array([[5, 6, 6, 7, 7, 5, 8, 8, 9]])
    # stage 1 on object pixels: class 0 -> {7: 2, 5: 1}, class 1 -> {8: 2}: keep 7 and 8, merge 5, 6, 9
    merged, gt2 = merge_background(pred, gt, 3, match="present")
    assert merged.tolist() == [[2, 2, 2, 0, 0, 2, 1, 1, 2]]
    assert gt2.tolist() == [[2, 2, 2, 0, 0, 0, 1, 1, 255]]
    # final hist [[2, 0, 1], [0, 2, 0], [0, 0, 3]] (ignored pixel left out)
    r = hungarian_miou(pred, gt, 3, background=True, match="present")
    assert r.tp.tolist() == [2, 2, 3]
    assert r.fp.tolist() == [0, 0, 1]
    assert r.fn.tolist() == [1, 0, 0]
    assert r.miou == pytest.approx((2 / 3 + 1 + 3 / 4) / 3)
    # background may also be given as num_classes - 1; the published variant agrees here
    gt_bg = np.where(gt == -1, 2, gt)
    assert hungarian_miou(pred, gt_bg, 3, background=True, match="present").tp.tolist() == [2, 2, 3]
    ref = hungarian_miou(pred, gt, 3, background=True)
    assert ref.tp.tolist() == [2, 2, 3] and ref.fp.tolist() == [0, 0, 1]


def test_background_without_protocol_ignores_minus_one():
    gt = np.array([[-1, -1, 0, 0]])
    pred = np.array([[1, 1, 0, 0]])
    r = hungarian_miou(pred, gt, 2)
    assert r.n_pixels == 2 and r.tp.tolist() == [2, 0]


def test_accumulator_returns_per_batch_scores_and_adds():
    acc = MIoUAccumulator(2)
    r1 = acc.update(np.array([[0, 1]]), np.array([[0, 1]]))
    r2 = acc.update(torch.tensor([[[1, 1]]]), torch.tensor([[[0, 1]]]))
    total = acc.result()
    assert r1.miou == 1.0
    assert (r1 + r2).tp.tolist() == total.tp.tolist()
    assert total.n_images == 2
    other = MIoUAccumulator(2)
    other.add(r1)
    other.add(r2)
    assert other.result().to_dict() == total.to_dict()


def test_errors_are_clear():
    with pytest.raises(ParameterError, match="shape"):
        hungarian_miou(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ParameterError, match="num_classes"):
        hungarian_miou(np.zeros((2, 2), int), np.zeros((2, 2), int), 0)
    with pytest.raises(ParameterError, match="integer"):
        hungarian_miou(np.full((2, 2), 0.5), np.zeros((2, 2), int), 2)
    with pytest.raises(ParameterError, match="predictions"):
        hungarian_miou([np.zeros((2, 2), int)] * 2, [np.zeros((2, 2), int)], 2)
    with pytest.raises(DiffCutLabError, match="match"):
        MIoUAccumulator(3, match="nope")
    with pytest.raises(ParameterError, match="background"):
        MIoUAccumulator(1, background=True)
    with pytest.raises(ParameterError):
        MIoUResult.from_counts([1, 2], [1], [1, 2])


# ----------------------------------------------------------------------------------------------------
# properties

label_maps = hnp.arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 4))


@settings(max_examples=40, deadline=None)
@given(gt=label_maps, perm=st.permutations(list(range(5))), offset=st.integers(-3, 100))
def test_relabelled_perfect_prediction_scores_one(gt, perm, offset):
    pred = np.asarray(perm)[gt] * 7 + offset  # any injective relabelling
    r = hungarian_miou(pred, gt, 5)
    assert r.miou == 1.0
    assert r.fp.sum() == 0 and r.fn.sum() == 0
    present = np.isin(np.arange(5), gt)
    assert np.all(np.isnan(r.iou[~present]))


@settings(max_examples=40, deadline=None)
@given(
    gt=label_maps,
    data=st.data(),
    n_extra=st.integers(1, 8),
    match=st.sampled_from(["present", "reference"]),
)
def test_ignored_pixels_change_nothing(gt, data, n_extra, match):
    pred = data.draw(hnp.arrays(np.int64, gt.shape, elements=st.integers(0, 6)))
    base = image_counts(pred, gt, 5, match=match)
    # append a column block of ignored ground truth with arbitrary predictions
    extra_pred = data.draw(hnp.arrays(np.int64, (gt.shape[0], n_extra), elements=st.integers(0, 6)))
    gt2 = np.concatenate([gt, np.full((gt.shape[0], n_extra), 255)], axis=1)
    pred2 = np.concatenate([pred, extra_pred], axis=1)
    if match == "reference":  # the reference sizes its histogram by pred.max(): keep it equal
        pred2[pred2 > pred.max()] = pred.max()
    got = image_counts(pred2, gt2, 5, match=match)
    for a, b in zip(base[:3], got[:3]):
        assert a.tolist() == b.tolist()
    assert base[3] == got[3]


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(1, 4), background=st.booleans())
def test_accumulator_over_images_equals_totals(data, n, background):
    shape = data.draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    lo = -1 if background else 0
    gts = [data.draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, 3))) for _ in range(n)]
    preds = [data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 5))) for _ in range(n)]
    total = hungarian_miou(preds, gts, 4, background=background)
    singles = [hungarian_miou(p, g, 4, background=background) for p, g in zip(preds, gts)]
    summed = singles[0]
    for s in singles[1:]:
        summed = summed + s
    for name in ("tp", "fp", "fn"):
        assert getattr(summed, name).tolist() == getattr(total, name).tolist()
    assert (summed.n_pixels, summed.n_images) == (total.n_pixels, total.n_images)
    np.testing.assert_allclose(summed.iou, total.iou)
    # stacked (B, H, W) input gives the same as a list
    stacked = hungarian_miou(np.stack(preds), np.stack(gts), 4, background=background)
    assert stacked.tp.tolist() == total.tp.tolist()
    # invariants: every labelled pixel is TP or FN of its class; each matched pixel counted once
    g_all = np.concatenate([g.ravel() for g in gts])
    if background:
        g_all = np.where(g_all == -1, 3, g_all)
    counts = np.bincount(g_all[(g_all >= 0) & (g_all < 4)], minlength=4)
    assert (total.tp + total.fn).tolist() == counts.tolist()
    assert total.tp.sum() + total.fp.sum() <= total.n_pixels
    assert 0.0 <= np.nanmin(np.append(total.iou, 0.0)) and np.nanmax(np.append(total.iou, 0.0)) <= 1.0
