"""Hungarian-matched mean IoU for unsupervised segmentation (the DiffCut / PiCIE protocol).

An unsupervised segmenter outputs cluster ids with no meaning, so each image's clusters are first matched
one-to-one to the ground-truth classes by the Hungarian algorithm on the image's confusion histogram
(maximising the matched pixel count), and the true positives, false positives and false negatives of that
matching are accumulated over the whole dataset:

* ``TP[c]``: pixels of class ``c`` inside the cluster matched to ``c``;
* ``FN[c]``: pixels of class ``c`` outside it (this includes every pixel that falls in an *unmatched*
  predicted cluster: such pixels count as false negatives of their true class and as nothing else);
* ``FP[c]``: pixels of the cluster matched to ``c`` that belong to another class.

``mIoU = nanmean(TP / (TP + FP + FN))`` over the classes (a class that never occurs in the ground truth
and is never matched has ``0 / 0 = NaN`` and is left out of the mean).

Ground-truth pixels equal to ``ignore_index`` or outside ``[0, num_classes)`` are ignored.

Background protocol (VOC, Pascal Context, COCO-Object; ``background=True``)
---------------------------------------------------------------------------
The background class is **the last class, id ``num_classes - 1``**; object classes are ``0 ..
num_classes - 2``. In the ground truth, background pixels may be marked either ``-1`` (the convention of
the published evaluation code) or ``num_classes - 1``. Per image:

1. the predicted clusters are matched against the ``num_classes - 1`` object classes present in the
   image (background and ignored pixels left out);
2. every predicted cluster not matched to a present object class is merged into a single background
   cluster (see :func:`merge_background`);
3. ground-truth ``-1`` becomes class ``num_classes - 1``;
4. the merged prediction is scored with the ordinary ``num_classes``-class matching above.

The published evaluation optionally runs PAMR between steps 2 and 4; to reproduce that, call
:func:`merge_background`, refine its output, then call :func:`hungarian_miou` with ``background=False``
on the returned ground truth.

Matching variants
-----------------
``match="reference"`` (default) is the published protocol (PiCIE / STEGO, and DiffCut's evaluation:
``_fast_hist`` + ``linear_sum_assignment`` on the full ``num_classes x max(num_classes, pred.max() + 1)``
histogram), so every mIoU the toolkit prints compares with the paper's tables. There, classes absent from
the image also take part in the matching: a leftover predicted cluster may be assigned to an absent class,
and its pixels then count as that class's false positives (which is why over-segmentation costs more
under this protocol). ``match="present"`` matches only the ground-truth classes present in the image and
the clusters present in it -- the rule of the first paragraph without that penalty; its scores are higher
whenever predictions have more clusters than the image has classes, and are not comparable with published
numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import ParameterError
from .options import MATCHES
from .validation import check_int, check_labels

__all__ = [
    "MIoUAccumulator",
    "MIoUResult",
    "confusion_histogram",
    "hungarian_miou",
    "image_counts",
    "merge_background",
]

MatchMode = Literal["present", "reference"]
_MATCH_MODES = MATCHES


@dataclass(frozen=True)
class MIoUResult:
    """Dataset-level scores of a Hungarian-matched evaluation.

    Attributes
    ----------
    miou : float
        ``nanmean(iou)``; NaN when no class was ever seen.
    iou : numpy.ndarray
        ``(num_classes,)`` float64 ``TP / (TP + FP + FN)``, NaN for a class never seen nor matched.
    tp, fp, fn : numpy.ndarray
        ``(num_classes,)`` int64 accumulated counts.
    n_pixels : int
        Labelled (non-ignored) ground-truth pixels scored.
    n_images : int
        Images scored.
    """

    iou: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_pixels: int = 0
    n_images: int = 0
    miou: float = field(init=False)

    def __post_init__(self) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            miou = float(np.nanmean(self.iou)) if np.isfinite(self.iou).any() else float("nan")
        object.__setattr__(self, "miou", miou)

    @property
    def num_classes(self) -> int:
        """Number of classes scored."""
        return int(self.tp.shape[0])

    @property
    def accuracy(self) -> float:
        """Pixel accuracy after matching: ``TP.sum() / n_pixels`` (NaN with no pixel)."""
        return float(self.tp.sum() / self.n_pixels) if self.n_pixels else float("nan")

    @classmethod
    def from_counts(cls, tp: Any, fp: Any, fn: Any, *, n_pixels: int = 0, n_images: int = 0) -> MIoUResult:
        """Build a result from accumulated ``tp``, ``fp``, ``fn`` count vectors."""
        tp, fp, fn = (np.asarray(a, dtype=np.int64).copy() for a in (tp, fp, fn))
        if not (tp.shape == fp.shape == fn.shape) or tp.ndim != 1:
            raise ParameterError(
                f"tp, fp and fn must be 1-D vectors of one length; got shapes {tp.shape}, {fp.shape}, "
                f"{fn.shape}."
            )
        denom = tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
        return cls(iou=iou, tp=tp, fp=fp, fn=fn, n_pixels=int(n_pixels), n_images=int(n_images))

    def __add__(self, other: MIoUResult) -> MIoUResult:
        if not isinstance(other, MIoUResult):
            return NotImplemented
        if other.num_classes != self.num_classes:
            raise ParameterError(
                f"cannot add results over {self.num_classes} and {other.num_classes} classes."
            )
        return MIoUResult.from_counts(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            n_pixels=self.n_pixels + other.n_pixels,
            n_images=self.n_images + other.n_images,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view (lists and floats), e.g. for JSON or a table row."""
        return {
            "miou": self.miou,
            "accuracy": self.accuracy,
            "iou": [float(v) for v in self.iou],
            "tp": [int(v) for v in self.tp],
            "fp": [int(v) for v in self.fp],
            "fn": [int(v) for v in self.fn],
            "n_pixels": self.n_pixels,
            "n_images": self.n_images,
        }


# ----------------------------------------------------------------------------------------------------
# input handling


def _split_images(maps: Any, what: str) -> list[np.ndarray]:
    """One (H, W) map, a (B, H, W) stack, or a sequence of (H, W) maps -> list of (H, W) int64 arrays."""
    if isinstance(maps, (list, tuple)) or (isinstance(maps, Iterable) and not hasattr(maps, "shape")):
        out: list[np.ndarray] = []
        for m in maps:
            out.extend(_split_images(m, what))
        return out
    arr = check_labels(maps, what)
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        return list(arr)
    if arr.ndim == 4 and arr.shape[1] == 1:  # (B, 1, H, W)
        return list(arr[:, 0])
    raise ParameterError(
        f"{what} must be an (H, W) label map, a (B, H, W) stack or a list of label maps; got shape "
        f"{arr.shape}."
    )


def _check_common(num_classes: int, match: str, background: bool) -> None:
    check_int(num_classes, "num_classes", minimum=1)
    if background and num_classes < 2:
        raise ParameterError(
            "background=True needs num_classes >= 2 (the object classes plus the background class "
            f"num_classes - 1); got {num_classes}."
        )
    if match not in _MATCH_MODES:
        raise ParameterError(f"match must be one of {_MATCH_MODES}; got {match!r}.")


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ParameterError(
            f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}. Resize the "
            "prediction to the label size (nearest) before scoring."
        )


# ----------------------------------------------------------------------------------------------------
# per-image pieces


def confusion_histogram(
    pred: Any, gt: Any, num_classes: int, *, ignore_index: int | None = 255
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion histogram of one image: ground-truth classes x predicted clusters.

    Parameters
    ----------
    pred : array_like
        ``(H, W)`` integer cluster ids (any values).
    gt : array_like
        ``(H, W)`` integer class ids; pixels equal to ``ignore_index`` or outside ``[0, num_classes)``
        are left out.
    num_classes : int
        Number of ground-truth classes.
    ignore_index : int or None
        Ground-truth id to ignore.

    Returns
    -------
    hist : numpy.ndarray
        ``(num_classes, K)`` int64, ``hist[c, k]`` = pixels of class ``c`` in cluster ``cluster_ids[k]``.
    cluster_ids : numpy.ndarray
        ``(K,)`` the distinct predicted ids that occur on labelled pixels, sorted.
    """
    pred = check_labels(pred, "pred")
    gt = check_labels(gt, "gt")
    _check_pair(pred, gt)
    valid = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        valid &= gt != ignore_index
    cluster_ids, inverse = np.unique(pred[valid], return_inverse=True)
    k = cluster_ids.size
    hist = np.bincount(gt[valid] * k + inverse.ravel(), minlength=num_classes * k)
    return hist.reshape(num_classes, k).astype(np.int64), cluster_ids


def _match_present(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of the present classes (rows with pixels) to the clusters (columns)."""
    rows = np.flatnonzero(hist.sum(axis=1) > 0)
    if rows.size == 0 or hist.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r, c = linear_sum_assignment(hist[rows], maximize=True)
    return rows[r].astype(np.int64), c.astype(np.int64)


_MAX_RAW_ID = 2**16


def _histogram_ids(pred: np.ndarray) -> np.ndarray:
    """Predicted ids as the published histogram's columns: as they are when they lie in ``0 .. 65536``
    (its matching depends on them), else renumbered ``0 .. K-1`` in increasing order (negative ids, which
    the published code cannot take, or ids that would make a huge histogram)."""
    if pred.size and (pred.min() < 0 or pred.max() > _MAX_RAW_ID):
        return np.unique(pred, return_inverse=True)[1].reshape(pred.shape).astype(np.int64)
    return pred


def _reference_hist(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int | None):
    """The published ``_fast_hist``: columns are the raw predicted ids 0 .. max(num_classes, max+1)-1."""
    n_cols = max(num_classes, int(pred.max()) + 1 if pred.size else 0)
    valid = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        valid &= gt != ignore_index
    hist = np.bincount(n_cols * gt[valid] + pred[valid], minlength=num_classes * n_cols)
    return hist.reshape(num_classes, n_cols).astype(np.int64)


def _counts_from_matching(hist: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    n = hist.shape[0]
    tp = np.zeros(n, np.int64)
    fp = np.zeros(n, np.int64)
    tp[rows] = hist[rows, cols]
    fn = hist.sum(axis=1) - tp
    fp[rows] = hist[:, cols].sum(axis=0) - tp[rows]
    return tp, fp, fn


def image_counts(
    pred: Any,
    gt: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    match: MatchMode = "reference",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """TP, FP, FN of one image after Hungarian matching (no background step).

    Returns
    -------
    tp, fp, fn : numpy.ndarray
        ``(num_classes,)`` int64.
    n_pixels : int
        Labelled pixels of the image.
    """
    _check_common(num_classes, match, False)
    pred = check_labels(pred, "pred")
    gt = check_labels(gt, "gt")
    _check_pair(pred, gt)
    if match == "reference":
        hist = _reference_hist(_histogram_ids(pred), gt, num_classes, ignore_index)
        rows, cols = linear_sum_assignment(hist, maximize=True)
    else:
        hist, _ = confusion_histogram(pred, gt, num_classes, ignore_index=ignore_index)
        rows, cols = _match_present(hist)
    tp, fp, fn = _counts_from_matching(hist, rows, cols)
    return tp, fp, fn, int(hist.sum())


def merge_background(
    pred: Any,
    gt: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    match: MatchMode = "reference",
) -> tuple[np.ndarray, np.ndarray]:
    """First stage of the background protocol: merge unmatched clusters into one background cluster.

    Parameters
    ----------
    pred : array_like
        ``(H, W)`` integer cluster ids.
    gt : array_like
        ``(H, W)`` class ids: objects ``0 .. num_classes - 2``, background ``-1`` or ``num_classes - 1``,
        ``ignore_index`` ignored.
    num_classes : int
        Number of classes *including* background (21 for VOC).
    ignore_index : int or None
        Ground-truth id to ignore.
    match : {"reference", "present"}
        ``"reference"`` (default): the published rule (the cluster assigned to each present object class
        is kept whatever its overlap). ``"present"``: the clusters kept are those matched, with at least
        one overlapping pixel, to an object class present in the image.

    Returns
    -------
    pred : numpy.ndarray
        ``(H, W)`` int64: the kept clusters numbered ``0 .. m-1`` (in increasing order of their original
        id) and every other cluster merged into id ``m`` (for ``match="reference"`` the published ids:
        kept ids unchanged, merged clusters set to ``pred.max() + 1``).
    gt : numpy.ndarray
        ``(H, W)`` int64, a copy of ``gt`` with ``-1`` replaced by ``num_classes - 1``.
    """
    _check_common(num_classes, match, True)
    pred = check_labels(pred, "pred").copy()
    gt = check_labels(gt, "gt").copy()
    _check_pair(pred, gt)
    n_obj = num_classes - 1
    # background (-1 or n_obj) and ignored pixels are outside [0, n_obj) and so leave the object histogram
    gt_obj = np.where(gt == n_obj, -1, gt)
    if ignore_index is not None:
        gt_obj = np.where(gt == ignore_index, -1, gt_obj)
    if match == "reference":
        pred = _histogram_ids(pred)
        hist = _reference_hist(pred, gt_obj, n_obj, None)
        rows, cols = linear_sum_assignment(hist, maximize=True)
        present = hist.max(axis=1) > 0
        kept = {int(cols[i]) for i in range(len(rows)) if present[rows[i]]}
        bg_label = int(pred.max()) + 1 if pred.size else 0
        merged = np.isin(pred, sorted(set(np.unique(pred).tolist()) - kept))
        pred[merged] = bg_label
        out = pred
    else:
        hist, cluster_ids = confusion_histogram(pred, gt_obj, n_obj, ignore_index=None)
        rows, cols = _match_present(hist)
        keep = cols[hist[rows, cols] > 0]
        kept_ids = np.sort(cluster_ids[keep])
        out = np.full(pred.shape, kept_ids.size, dtype=np.int64)
        for new, old in enumerate(kept_ids):
            out[pred == old] = new
    gt[gt == -1] = n_obj
    return out, gt


# ----------------------------------------------------------------------------------------------------
# accumulation


class MIoUAccumulator:
    """Accumulate Hungarian-matched TP/FP/FN over a dataset, one image (or batch) at a time.

    Parameters
    ----------
    num_classes : int
        Number of ground-truth classes (including background when ``background=True``).
    ignore_index : int or None
        Ground-truth id to ignore (default 255).
    background : bool
        Apply the two-stage background protocol (module docstring); background is class
        ``num_classes - 1``.
    match : {"reference", "present"}
        Matching variant (module docstring; the published one by default).

    Examples
    --------
    >>> acc = MIoUAccumulator(3)
    >>> batch = acc.update(np.array([[5, 5], [7, 7]]), np.array([[0, 0], [2, 2]]))
    >>> acc.result().miou
    1.0
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = 255,
        background: bool = False,
        match: MatchMode = "reference",
    ) -> None:
        _check_common(num_classes, match, background)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.background = bool(background)
        self.match = match
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.tp = np.zeros(self.num_classes, np.int64)
        self.fp = np.zeros(self.num_classes, np.int64)
        self.fn = np.zeros(self.num_classes, np.int64)
        self.n_pixels = 0
        self.n_images = 0

    def update(self, pred: Any, gt: Any) -> MIoUResult:
        """Score one image or a batch and add it to the totals.

        Parameters
        ----------
        pred, gt : array_like
            ``(H, W)`` maps, ``(B, H, W)`` stacks, or lists of maps (numpy or torch), paired in order.

        Returns
        -------
        MIoUResult
            The scores of just these images (their counts are also added to the totals).
        """
        preds = _split_images(pred, "pred")
        gts = _split_images(gt, "gt")
        if len(preds) != len(gts):
            raise ParameterError(
                f"got {len(preds)} predictions but {len(gts)} ground-truth maps; pass one per image."
            )
        tp = np.zeros(self.num_classes, np.int64)
        fp = np.zeros_like(tp)
        fn = np.zeros_like(tp)
        n_pix = 0
        for p, g in zip(preds, gts):
            _check_pair(p, g)
            if self.background:
                p, g = merge_background(
                    p, g, self.num_classes, ignore_index=self.ignore_index, match=self.match
                )
            t, f, n, px = image_counts(
                p, g, self.num_classes, ignore_index=self.ignore_index, match=self.match
            )
            tp += t
            fp += f
            fn += n
            n_pix += px
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.n_pixels += n_pix
        self.n_images += len(preds)
        return MIoUResult.from_counts(tp, fp, fn, n_pixels=n_pix, n_images=len(preds))

    def add(self, result: MIoUResult) -> None:
        """Add the counts of an already computed result (e.g. per-image rows read back from a table)."""
        if result.num_classes != self.num_classes:
            raise ParameterError(
                f"result has {result.num_classes} classes, the accumulator {self.num_classes}."
            )
        self.tp += result.tp
        self.fp += result.fp
        self.fn += result.fn
        self.n_pixels += result.n_pixels
        self.n_images += result.n_images

    def result(self) -> MIoUResult:
        """Dataset-level scores of everything accumulated so far."""
        return MIoUResult.from_counts(
            self.tp, self.fp, self.fn, n_pixels=self.n_pixels, n_images=self.n_images
        )


def hungarian_miou(
    preds: Any | Sequence[Any] | Iterable[Any],
    gts: Any | Sequence[Any],
    num_classes: int,
    *,
    ignore_index: int | None = 255,
    background: bool = False,
    match: MatchMode = "reference",
) -> MIoUResult:
    """Hungarian-matched mIoU: per-image matching, TP/FP/FN accumulated over all images.

    Parameters
    ----------
    preds : array_like or sequence of array_like
        Predicted cluster ids: one ``(H, W)`` map, a ``(B, H, W)`` stack, or a list of maps (sizes may
        differ between images). Ids need not be compact nor match class ids.
    gts : array_like or sequence of array_like
        Ground-truth class ids, paired with ``preds``.
    num_classes : int
        Number of classes (including background when ``background=True``).
    ignore_index : int or None
        Ground-truth id to leave out (default 255); ids outside ``[0, num_classes)`` are left out too
        (except ``-1`` = background when ``background=True``).
    background : bool
        Two-stage background protocol (VOC, Context, COCO-Object); background is class
        ``num_classes - 1`` and may be marked ``-1`` in ``gts``.
    match : {"reference", "present"}
        ``"reference"`` (default): the published full-histogram matching (see the module docstring).
        ``"present"``: only classes and clusters present in the image are matched.

    Returns
    -------
    MIoUResult
        ``.miou``, per-class ``.iou`` and the accumulated ``.tp``, ``.fp``, ``.fn``.

    Examples
    --------
    >>> gt = np.array([[0, 0, 1, 1]])
    >>> pred = np.array([[3, 3, 3, 9]])  # cluster 3 matched to class 0, cluster 9 to class 1
    >>> r = hungarian_miou(pred, gt, num_classes=2)
    >>> r.tp.tolist(), r.fp.tolist(), r.fn.tolist()
    ([2, 1], [1, 0], [0, 1])
    >>> round(r.miou, 4)  # (2/3 + 1/2) / 2
    0.5833
    """
    acc = MIoUAccumulator(num_classes, ignore_index=ignore_index, background=background, match=match)
    acc.update(preds, gts)
    return acc.result()
