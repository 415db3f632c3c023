"""From a coarse cut on the feature grid to a sharp label map at image resolution.

* :func:`concept_assignment` -- DiffCut's "high-resolution concept assignment": each segment of the
  feature grid gets an embedding (mean of its L2-normalised features, not renormalised), the normalised
  features are bilinearly upsampled, and every pixel takes the segment whose embedding has the largest dot
  product with its upsampled feature.
* :func:`nearest_upsample` -- the plain alternative (paper Table 8: 61.2 vs 62.0 mIoU on VOC).
* :func:`pamr` -- Pixel-Adaptive Mask Refinement (Araslanov & Roth, CVPR 2020, "1-stage-wseg"), as used
  by the DiffCut evaluation: label probabilities are propagated for ``num_iter`` steps along an affinity
  built from local colour differences (8 neighbours at each dilation, scaled by 0.1 x the local colour
  standard deviation, softmax over all neighbours).
* :func:`median_filter` -- the 3 x 3 median the DiffCut evaluation applies after PAMR.

Every function returns int64 labels with compact ids ``0 .. K-1`` numbered in increasing order of the input
ids (a segment that disappears, e.g. smaller than a pixel after upsampling, frees its id). numpy in gives
numpy out, torch in gives torch out (on the input's device).

Speed without changing a label: every float is computed by the same operations, in the same order, as the
plain formulation each docstring describes (``tests/_reference_refine.py`` keeps that formulation, and the
tests compare bit for bit). What is saved is work that cannot change a value: PAMR computes each segment's
channel only in the rows its probability can have reached (elsewhere it is exactly 0), in bands of rows
that stay in cache, with neighbours as views of one padded buffer; argmax runs plane by plane (the first
maximum wins, as in ``torch.argmax``); ids are compacted by counting; the 3 x 3 median is a min/max network
on a small integer dtype. ``benchmarks/postprocess.py`` measures it against the plain code. Concept
assignment in the published order (``order="features"``, paper mode) is instead the published arithmetic
itself, operation for operation, tested against a frozen copy of the published code
(``tests/_published_concept.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .config import parse_size
from .errors import ImageInputError, ParameterError
from .label_maps import resize_labels
from .validation import check_features, check_int, check_labels, is_int

__all__ = ["compact_labels", "concept_assignment", "median_filter", "nearest_upsample", "pamr"]


# ----------------------------------------------------------------------------------------------------
# helpers


def _labels_tensor(
    labels: Any, what: str = "labels", ndim: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, bool]:
    """Labels as an int64 torch tensor, and whether the caller passed numpy (to convert back)."""
    is_numpy = not isinstance(labels, torch.Tensor)
    t = check_labels(labels, what, ndim=ndim, keep_tensor=True)
    return (torch.from_numpy(np.ascontiguousarray(t)) if is_numpy else t), is_numpy


def _out(t: torch.Tensor, as_numpy: bool) -> Any:
    return t.cpu().numpy().astype(np.int64, copy=False) if as_numpy else t


def _compact_ids(t: torch.Tensor) -> torch.Tensor:
    """``torch.unique(t, return_inverse=True)[1]`` (int64, ``t``'s shape), by counting when ids span little."""
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return torch.unique(t, return_inverse=True)[1].reshape(t.shape).long()
    lo, hi = (int(v) for v in torch.aminmax(flat))
    span = hi - lo + 1
    if span > max(4 * flat.numel(), 4096):  # sparse huge ids: sorting is cheaper than counting
        return torch.unique(t, return_inverse=True)[1].reshape(t.shape).long()
    shifted = flat - lo if lo else flat
    present = torch.zeros(span, dtype=torch.bool, device=t.device)
    present[shifted] = True  # (not bincount: CUDA has no deterministic one)
    return (present.cumsum(0) - 1)[shifted].reshape(t.shape)


def compact_labels(labels: Any) -> Any:
    """Renumber ids to ``0 .. K-1`` in increasing order of the original ids (int64; numpy or torch)."""
    t, as_numpy = _labels_tensor(labels)
    return _out(_compact_ids(t), as_numpy)


def _first_argmax(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Index of the largest of ``K`` equally shaped planes, the first on ties (``torch.argmax(stack, 0)``).

    One pass per plane instead of a strided reduction over the stacked dimension: several times faster on
    the CPU for ``(K, H, W)`` scores. The planes must be finite (``torch.argmax`` would rank NaN first).
    """
    best = planes[0].clone()
    dtype = torch.uint8 if len(planes) <= 256 else torch.long
    index = torch.zeros(best.shape, dtype=dtype, device=best.device)
    for k, plane in enumerate(planes[1:], start=1):
        index.masked_fill_(plane > best, k)
        torch.maximum(best, plane, out=best)
    return index.long()


def _features_tensor(features: Any) -> torch.Tensor:
    return check_features(features, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------
# upsampling


def concept_assignment(
    labels: Any, features: Any, size: int | Sequence[int], *, order: str = "scores"
) -> Any:
    """Upsample a segmentation of the feature grid by DiffCut's concept assignment.

    Parameters
    ----------
    labels : array_like or torch.Tensor
        ``(h, w)`` integer segment ids on the feature grid.
    features : array_like or torch.Tensor
        ``(C, h, w)`` features the segmentation was computed from (any scale: they are L2-normalised
        over channels here).
    size : int or (H, W)
        Output size.
    order : {"scores", "features"}
        ``"scores"``: the ``K`` dot-product maps are computed on the grid and upsampled (memory
        ``K x H x W``); ``"features"``: the published arithmetic to the bit -- the ``C``-channel
        features upsampled first, each segment pooled by ODISE's ``MaskPooling`` in float32 (memory
        ``2 x C x H x W``). Equal in exact arithmetic; in float32 a few pixels move.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``(H, W)`` int64 compact ids; id ``k`` is the ``k``-th smallest input id (unless a segment lost
        every pixel).

    Notes
    -----
    Segment embeddings are means of the normalised features and are not renormalised, nor are the
    upsampled features (as in the published code). Because bilinear interpolation is linear and acts on
    each channel alike, computing the dot products on the grid and interpolating them (``order="scores"``)
    gives the same scores as interpolating the ``C``-channel features first at ``K / C`` of the memory.

    Examples
    --------
    >>> lab = np.array([[0, 1], [0, 1]])
    >>> feats = np.stack([1 - lab, lab]).astype(float)  # two orthogonal concepts
    >>> concept_assignment(lab, feats, 4)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [0, 0, 1, 1],
           [0, 0, 1, 1]])
    """
    out_size = parse_size(size)
    lab, as_numpy = _labels_tensor(labels)
    f = _features_tensor(features)
    if lab.ndim != 2 or tuple(lab.shape) != tuple(f.shape[1:]):
        raise ParameterError(
            f"labels must be (h, w) on the features' grid {tuple(f.shape[1:])}; got {tuple(lab.shape)}."
        )
    if order not in ("scores", "features"):
        raise ParameterError(f"order must be 'scores' or 'features'; got {order!r}.")
    lab = lab.to(f.device)
    c, h, w = f.shape
    if order == "features":
        return _out(_compact_ids(_published_assignment(lab, f, out_size)), as_numpy)
    fn = F.normalize(f, dim=0).reshape(c, h * w)
    ids, inverse = torch.unique(lab.reshape(-1), return_inverse=True)
    onehot = F.one_hot(inverse, ids.numel()).to(fn.dtype)  # (N, K)
    centroids = (fn @ onehot) / onehot.sum(0, keepdim=True)  # (C, K): mean normalised feature
    scores = (centroids.T @ fn).reshape(1, -1, h, w)  # (1, K, h, w)
    scores = F.interpolate(scores, size=out_size, mode="bilinear", align_corners=False)
    return _out(_compact_ids(_first_argmax(scores[0])), as_numpy)


def _published_assignment(
    labels: torch.Tensor, features: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """``(H, W)`` indices into the sorted ids of ``(h, w)`` ``labels``: the published concept assignment's
    float32 arithmetic, operation for operation (DiffCut's ``generate_masks``, steps 2 and 3).

    The ``(C, h, w)`` features are laid out as the published code holds them (a ``(1, C, h, w)`` view of
    ``(1, h, w, C)`` storage: the attention output reshaped and permuted), L2-normalised over channels;
    each segment's embedding is ODISE's ``MaskPooling`` of one ``(1, 1, h, w)`` mask at a time (an einsum
    over ``(b, q, h, w)`` with the mask divided by its pixel count ``+ 1e-8``) written into row ``k`` of a
    ``(K, C)`` matrix; the features are upsampled bilinearly and the ``(H W, C) @ (C, K)`` scores are
    reduced by ``torch.argmax``. Layout, reduction order and grouping all change float32 bits, and with
    them the pixels near a tie between two segments.
    """
    c, h, w = features.shape
    x = features.permute(1, 2, 0).contiguous().reshape(1, h, w, c).permute(0, 3, 1, 2)  # (1, C, h, w)
    feats_norm = F.normalize(x, dim=1)
    masks = labels.reshape(1, 1, h, w)
    ids = torch.unique(masks)
    embeddings = torch.zeros(ids.numel(), c, dtype=feats_norm.dtype, device=feats_norm.device)  # (K, C)
    for k, cls in enumerate(ids):
        mask = (masks == cls) > 0  # MaskPooling: a boolean (1, 1, h, w) mask
        denorm = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
        embeddings[k, :] = torch.einsum("bchw,bqhw->bqc", feats_norm, mask / denorm)[0]
    up = F.interpolate(feats_norm, size=size, mode="bilinear", align_corners=False)  # nn.Upsample's default
    scores = torch.t(up.reshape(c, size[0] * size[1])) @ torch.t(embeddings)  # (H W, K)
    return torch.argmax(scores, dim=1).reshape(size)


def nearest_upsample(labels: Any, size: int | Sequence[int]) -> Any:
    """Resize ``(h, w)`` (or ``(B, h, w)``) labels to ``size`` by nearest neighbour (pixel centres aligned).

    Returns int64 compact ids (numpy or torch like the input).
    """
    lab, as_numpy = _labels_tensor(labels, ndim=(2, 3))
    up = resize_labels(lab, parse_size(size))
    if up.ndim == 3:
        return _out(torch.stack([compact_labels(u) for u in up]), as_numpy)
    return _out(compact_labels(up), as_numpy)


# ----------------------------------------------------------------------------------------------------
# PAMR


def _image_batch(image: Any) -> torch.Tensor:
    """(3, H, W) / (B, 3, H, W) float in [0, 1], or numpy uint8 (H, W, 3) / (B, H, W, 3) -> (B, 3, H, W)."""
    if isinstance(image, torch.Tensor):
        x = image
    else:
        arr = np.asarray(image)
        if arr.dtype == np.uint8:
            if arr.ndim in (3, 4) and arr.shape[-1] == 3:
                arr = np.moveaxis(arr, -1, -3)
            x = torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
        else:
            x = torch.as_tensor(arr)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageInputError(
            f"image must be (3, H, W) or (B, 3, H, W) (float in [0, 1]) or uint8 (H, W, 3); got shape "
            f"{tuple(x.shape)}."
        )
    x = x.float()
    if not torch.isfinite(x).all():
        raise ImageInputError("image contains NaN or Inf values.")
    return x


_OFFSETS_9 = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # a 3x3 window, row-major
_OFFSETS_8 = tuple(o for o in _OFFSETS_9 if o != (0, 0))
# elements per torch thread of one band (live channels x rows x width) the CPU propagates per operation:
# few enough that each thread's share of a band's accumulator and products stays in cache, enough that
# per-operation overhead (and the threads' hand-offs on a busy machine) stay small
_BAND_ELEMENTS = 2**19


def _taps(padded: torch.Tensor, margin: int, d: int, size: tuple[int, int],
          offsets: Sequence[tuple[int, int]]) -> list[torch.Tensor]:  # fmt: skip
    """Views of ``padded`` (replicate-padded by ``margin`` >= ``d``) at the ``offsets`` x ``d`` neighbours."""
    h, w = size
    return [
        padded[..., margin + dy * d : margin + dy * d + h, margin + dx * d : margin + dx * d + w]
        for dy, dx in offsets
    ]


def _window_sums(
    values: torch.Tensor, margin: int, dilations: Sequence[int], size: tuple[int, int]
) -> torch.Tensor:
    """The sum of the 3x3 window values at every dilation, as ``torch.sum`` over each stacked window and
    then across the dilations: ``((t0 + t1) + t2) + ...`` per window, windows added in order."""
    window = torch.empty(values.shape[:-2] + size, dtype=values.dtype, device=values.device)
    total = None
    for d in dilations:
        taps = _taps(values, margin, d, size, _OFFSETS_9)
        torch.add(taps[0], taps[1], out=window)
        for t in taps[2:]:
            window.add_(t)
        total = window.clone() if total is None else total.add_(window)
    return total


def _pamr_affinity(img: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, P, H, W) propagation weights (softmax over the P = 8 x len(dilations) neighbours)."""
    # local standard deviation per channel over the 3x3 windows of every dilation (the centre counted once
    # per dilation), unbiased, in float64
    b, _, h, w = img.shape
    margin = max(dilations)
    padded = F.pad(img, [margin] * 4, mode="replicate")
    values = padded.double()
    n = 9 * len(dilations)
    total = _window_sums(values, margin, dilations, (h, w))
    total_sq = _window_sums(values.square_(), margin, dilations, (h, w))
    var = ((total_sq - total.square() / n) / (n - 1)).clamp_min(0.0)
    inv_scale = 1.0 / (1e-8 + 0.1 * var.sqrt().float())  # (B, 3, H, W)
    # -|I_i - I_j| / (1e-8 + 0.1 std_i), averaged over the colour channels (summed in order, then divided,
    # as torch's CPU mean does), one neighbour j at a time
    logits = torch.empty(b, 8 * len(dilations), h, w, device=img.device)
    term = torch.empty_like(img)
    neighbours = (t for d in dilations for t in _taps(padded, margin, d, (h, w), _OFFSETS_8))
    for p, nb in enumerate(neighbours):
        torch.sub(img, nb, out=term).abs_().mul_(inv_scale)
        torch.add(term[:, 0], term[:, 1], out=logits[:, p]).add_(term[:, 2]).div_(3).neg_()
    return torch.softmax(logits, dim=1)


def _support_rows(mask: torch.Tensor) -> list[tuple[int, int] | None]:
    """Rows ``[y0, y1)`` holding each channel's non-zero values in ``(K, H, W)`` (``None``: all zero)."""
    rows: list[tuple[int, int] | None] = []
    for r in (mask != 0).any(2).cpu():  # (K, H)
        ys = torch.nonzero(r).flatten()
        rows.append(None if ys.numel() == 0 else (int(ys[0]), int(ys[-1]) + 1))
    return rows


def _bands(spans: Sequence[tuple[int, int]], h: int, rows: int) -> list[tuple[int, int, int, int]]:
    """``(c0, c1, r0, r1)`` per band of ``rows`` rows that some channel's span reaches: the channel range
    ``[c0, c1)`` from the first to the last such channel (spans sorted, so ranges stay short)."""
    out = []
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        active = [i for i, (y0, y1) in enumerate(spans) if y0 < r1 and y1 > r0]
        if active:
            out.append((active[0], active[-1] + 1, r0, r1))
    return out


def _fill_border(buf: torch.Tensor, margin: int) -> None:
    """Replicate the interior's edge into the ``margin``-wide border of ``(K, H + 2m, W + 2m)``, in place."""
    m = margin
    buf[:, :m, m:-m] = buf[:, m : m + 1, m:-m]
    buf[:, -m:, m:-m] = buf[:, -m - 1 : -m, m:-m]
    buf[:, :, :m] = buf[:, :, m : m + 1]
    buf[:, :, -m:] = buf[:, :, -m - 1 : -m]


def _propagate_band(src: torch.Tensor, dst: torch.Tensor, aff: torch.Tensor, dilations: Sequence[int],
                    band: tuple[int, int, int, int], scratch: torch.Tensor) -> None:  # fmt: skip
    """One PAMR step on one band: ``dst = sum_p neighbour_p(src) * aff_p``, summed in neighbour order.

    ``src`` and ``dst`` are ``(K, H + 2m, W + 2m)`` replicate-padded buffers (``m = max(dilations)``);
    ``aff`` is ``(P, H, W)``. Each product is rounded to float32 and then added, as ``new += s * a`` does.
    """
    c0, c1, r0, r1 = band
    m = max(dilations)
    w = aff.shape[-1]
    acc = dst[c0:c1, m + r0 : m + r1, m : m + w]
    product = scratch[: acc.numel()].view(acc.shape)
    window = src[c0:c1, r0 : r1 + 2 * m]
    neighbours = (t for d in dilations for t in _taps(window, m, d, (r1 - r0, w), _OFFSETS_8))
    for p, nb in enumerate(neighbours):
        if p == 0:
            torch.mul(nb, aff[p, r0:r1], out=acc)  # 0 + x == x: the zero start needs no pass
        else:
            torch.mul(nb, aff[p, r0:r1], out=product)
            acc.add_(product)


def _propagate(
    mask: torch.Tensor,
    aff: torch.Tensor,
    dilations: Sequence[int],
    num_iter: int,
    *,
    band_elements: int | None = None,
) -> list[torch.Tensor | None]:
    """``num_iter`` PAMR steps on one image's ``(K, H, W)`` label probabilities: one ``(H, W)`` plane per
    channel, ``None`` for a channel that is exactly 0 everywhere.

    A step moves probability at most ``m = max(dilations)`` rows, so a channel is exactly 0 outside the
    rows of its initial support grown by ``m`` per step. Channels are sorted by those rows and the image is
    cut into bands of rows; each band computes only the range of channels whose rows reach it, and every
    other value stays the exact 0 the full computation gives. On the CPU a band holds about
    ``band_elements`` values (default: ``_BAND_ELEMENTS`` per torch thread); elsewhere one band spans the
    image (fewest kernel launches).
    """
    k, h, w = mask.shape
    spans = _support_rows(mask)
    live = sorted((c for c in range(k) if spans[c] is not None), key=lambda c: spans[c])
    live_spans = [spans[c] for c in live]
    m = max(dilations)
    cur = F.pad(mask[live][None], [m] * 4, mode="replicate")[0].contiguous()  # (L, H + 2m, W + 2m)
    if num_iter:
        # bands and channel ranges only grow, so after the first step every stale value is overwritten
        nxt = torch.zeros_like(cur)
        band_elements = band_elements or _BAND_ELEMENTS * torch.get_num_threads()
        rows = h if mask.device.type != "cpu" else max(1, min(h, band_elements // (len(live) * w)))
        scratch = torch.empty(len(live) * rows * w, dtype=cur.dtype, device=cur.device)
    for _ in range(num_iter):
        live_spans = [(max(0, y0 - m), min(h, y1 + m)) for y0, y1 in live_spans]
        for band in _bands(live_spans, h, rows):
            _propagate_band(cur, nxt, aff, dilations, band, scratch)
        _fill_border(nxt, m)
        cur, nxt = nxt, cur
    planes: list[torch.Tensor | None] = [None] * k
    for c, plane in zip(live, cur[:, m : m + h, m : m + w]):
        planes[c] = plane
    return planes


def _pamr_labels(planes: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """``(H, W)`` compact ids of the most probable channel (the first on ties; ``None`` planes are 0)."""
    some = next(p for p in planes if p is not None)
    zero = torch.zeros_like(some)
    return _compact_ids(_first_argmax([zero if p is None else p for p in planes]))


def _initial_masks(inverse: torch.Tensor, k: int, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` compact ids -> ``(B, K, H, W)`` float one-hot masks, bilinearly resized to ``size``."""
    if tuple(inverse.shape[-2:]) == size:
        mask = torch.zeros((inverse.shape[0], k, *size), device=inverse.device)
        return mask.scatter_(1, inverse[:, None], 1.0)
    mask = F.one_hot(inverse, k).permute(0, 3, 1, 2).float()
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=True)


def pamr(
    image: Any,
    labels: Any,
    *,
    num_iter: int = 10,
    dilations: Sequence[int] = (1, 2, 4, 8),
) -> Any:
    """Pixel-Adaptive Mask Refinement of label maps along image colour edges.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1] (numpy ``uint8`` ``(H, W, 3)`` /
        ``(B, H, W, 3)`` is accepted too).
    labels : array_like or torch.Tensor
        ``(H, W)`` or ``(B, H, W)`` integer ids. At another size than the image, the one-hot masks are
        bilinearly resized to it first (as the original PAMR does).
    num_iter : int
        Propagation steps (DiffCut eval: 10; its notebook: 30).
    dilations : sequence of int
        Neighbourhood dilations (DiffCut eval: 1, 2, 4, 8; notebook: 1, 2, 4, 8, 12, 24, 32, 64).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Labels at the image size, ``(H, W)`` or ``(B, H, W)`` like ``labels``; int64, compact per image
        (id ``k`` = the ``k``-th smallest input id of that image, unless it vanished).

    Notes
    -----
    Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020. Affinity:
    ``-|I_i - I_j| / (1e-8 + 0.1 * std_i)`` averaged over colour channels, softmax over the
    ``8 x len(dilations)`` neighbours ``j`` of pixel ``i``; each step replaces a pixel's label
    probabilities by the affinity-weighted sum of its neighbours'. Memory is ``O(B x (K + P) x H x W)``
    (neighbours are visited one at a time, never stacked with the labels).
    """
    num_iter = check_int(num_iter, "num_iter", minimum=0)
    dil = tuple(dilations)
    if not dil or not all(is_int(d) and d >= 1 for d in dil):
        raise ParameterError(
            f"dilations must be a non-empty sequence of positive integers; got {dilations!r}."
        )
    img = _image_batch(image)
    lab, as_numpy = _labels_tensor(labels, ndim=(2, 3))
    single = lab.ndim == 2
    if single:
        lab = lab[None]
    if lab.shape[0] != img.shape[0]:
        raise ParameterError(
            f"got {img.shape[0]} image(s) but {lab.shape[0]} label map(s); pass one label map per image."
        )
    inverse = torch.stack([_compact_ids(one) for one in lab.to(img.device)])
    mask = _initial_masks(inverse, int(inverse.max()) + 1, tuple(img.shape[-2:]))
    with torch.no_grad():
        aff = _pamr_affinity(img, dil)  # (B, P, H, W)
        out = torch.stack(
            [_pamr_labels(_propagate(mask[i], aff[i], dil, int(num_iter))) for i in range(len(mask))]
        )
    return _out(out[0] if single else out, as_numpy)


def _median_3x3(x: torch.Tensor) -> torch.Tensor:
    """Exact 3 x 3 median of ``(..., H, W)`` integers, borders reflected (``scipy.ndimage``'s default).

    Each column triple is sorted once (``lo <= mid <= hi``); the median of a window is then the median of
    (the largest ``lo``, the median ``mid``, the smallest ``hi``) of its three columns (Paeth's identity).
    """
    x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)  # reflecting one pixel repeats the edge
    x = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    top, mid, bottom = x[..., :-2, :], x[..., 1:-1, :], x[..., 2:, :]
    lo, hi = torch.minimum(top, mid), torch.maximum(top, mid)
    lo, upper = torch.minimum(lo, bottom), torch.maximum(lo, bottom)
    mid, hi = torch.minimum(hi, upper), torch.maximum(hi, upper)
    left, centre, right = (slice(None, -2), slice(1, -1), slice(2, None))
    max_lo = torch.maximum(torch.maximum(lo[..., left], lo[..., centre]), lo[..., right])
    min_hi = torch.minimum(torch.minimum(hi[..., left], hi[..., centre]), hi[..., right])
    return _median_of_3(max_lo, _median_of_3(mid[..., left], mid[..., centre], mid[..., right]), min_hi)


def _median_of_3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def _small_int(ids: torch.Tensor) -> torch.Tensor:
    """Compact ids ``0 .. K-1`` in the smallest integer dtype that holds them (medians run faster)."""
    k = int(ids.max()) + 1 if ids.numel() else 0
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if k <= torch.iinfo(dtype).max + 1:
            return ids.to(dtype)
    return ids


def median_filter(labels: Any, size: int = 3) -> Any:
    """``size x size`` median filter of ``(H, W)`` or ``(B, H, W)`` labels (each image alone).

    ``scipy.ndimage.median_filter`` with its default reflect border, as in the DiffCut evaluation. The
    median of an odd window is one of its values, so no new id appears; ids are compacted afterwards.
    Renumbering ids in order does not move a median, so the filter runs on compact ids in a small dtype
    (an exact min/max network for ``size=3``, scipy otherwise).
    """
    size = check_int(size, "size", minimum=1)
    lab, as_numpy = _labels_tensor(labels, ndim=(2, 3))
    ids = _small_int(_compact_ids(lab))
    if size == 3 and ids.numel():
        filtered = _median_3x3(ids).long()
    else:
        footprint = (size, size) if ids.ndim == 2 else (1, size, size)
        filtered = torch.from_numpy(ndimage.median_filter(ids.cpu().numpy(), size=footprint)).long()
    if filtered.ndim == 3:
        filtered = torch.stack([_compact_ids(f) for f in filtered])
    else:
        filtered = _compact_ids(filtered)
    return _out(filtered.to(lab.device), as_numpy)
