"""A frozen copy of :mod:`diffcut_lab.refine` as it was before its CPU speed-up (for tests and benchmarks only).

``concept_assignment``, ``pamr`` and ``median_filter`` (and their helpers) are kept verbatim, so that the
tests can check that the fast code gives bit-equal int64 labels and the benchmark can measure the ratio in
one run. Do not optimise this file: it is the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from diffcut_lab.config import parse_size
from diffcut_lab.errors import FeatureError, ImageInputError, ParameterError

__all__ = ["compact_labels", "concept_assignment", "median_filter", "pamr"]


# ----------------------------------------------------------------------------------------------------
# helpers


def _labels_tensor(labels: Any, what: str = "labels") -> tuple[torch.Tensor, bool]:
    """Labels as an int64 torch tensor, and whether the caller passed numpy (to convert back)."""
    is_numpy = not isinstance(labels, torch.Tensor)
    t = torch.as_tensor(np.asarray(labels)) if is_numpy else labels
    if t.dtype == torch.bool:
        t = t.long()
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            raise ParameterError(f"{what} must hold integer ids; got non-integer floating values.")
    elif t.dtype.is_complex:
        raise ParameterError(f"{what} must hold integer ids; got dtype {t.dtype}.")
    return t.long(), is_numpy


def _out(t: torch.Tensor, as_numpy: bool) -> Any:
    return t.cpu().numpy().astype(np.int64, copy=False) if as_numpy else t


def compact_labels(labels: Any) -> Any:
    """Renumber ids to ``0 .. K-1`` in increasing order of the original ids (int64; numpy or torch)."""
    t, as_numpy = _labels_tensor(labels)
    _, inverse = torch.unique(t, return_inverse=True)
    return _out(inverse.reshape(t.shape).long(), as_numpy)


def _features_tensor(features: Any) -> torch.Tensor:
    f = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if f.ndim != 3:
        raise FeatureError(
            f"features must be a (C, h, w) map; got shape {tuple(f.shape)}. For a batch, pass one "
            "image's features (e.g. cache['diffcut'][0])."
        )
    f = f.float()
    if not torch.isfinite(f).all():
        raise FeatureError(
            "features contain NaN or Inf values; check the backbone's precision (try float32)."
        )
    return f


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
        ``K x H x W``); ``"features"``: the ``C``-channel features are upsampled first, as published
        (memory ``C x H x W``). Equal in exact arithmetic; in float32 a few pixels move.

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
    fn = F.normalize(f, dim=0).reshape(c, h * w)
    ids, inverse = torch.unique(lab.reshape(-1), return_inverse=True)
    onehot = F.one_hot(inverse, ids.numel()).to(fn.dtype)  # (N, K)
    if order == "features":  # the published arithmetic: mask pooling, upsampled features, (HW, K) scores
        centroids = fn @ (onehot / (onehot.sum(0, keepdim=True) + 1e-8))  # (C, K)
        up = F.interpolate(fn.reshape(1, c, h, w), size=out_size, mode="bilinear", align_corners=False)
        winner = (up.reshape(c, -1).T @ centroids).argmax(1).reshape(out_size)
        return compact_labels(_out(winner, as_numpy))
    centroids = (fn @ onehot) / onehot.sum(0, keepdim=True)  # (C, K): mean normalised feature
    scores = (centroids.T @ fn).reshape(1, -1, h, w)  # (1, K, h, w)
    scores = F.interpolate(scores, size=out_size, mode="bilinear", align_corners=False)
    return compact_labels(_out(scores[0].argmax(0), as_numpy))


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


def _shifts(x: torch.Tensor, d: int, *, center: bool) -> list[torch.Tensor]:
    """The 8 (or 9 with the centre) neighbours of every pixel at dilation ``d``, replicate-padded."""
    h, w = x.shape[-2:]
    pad = F.pad(x, [d, d, d, d], mode="replicate")
    out = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0 and not center:
                continue
            out.append(pad[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w])
    return out


def _neighbour_kernel(center: bool) -> torch.Tensor:
    """One-hot 3x3 kernels picking the 8 (or 9) positions of a 3x3 window, row-major."""
    idx = [i for i in range(9) if center or i != 4]
    k = torch.zeros(len(idx), 1, 3, 3)
    for o, i in enumerate(idx):
        k[o, 0, i // 3, i % 3] = 1.0
    return k


def _window(x: torch.Tensor, d: int, kernel: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, P, H, W): the kernel's positions at dilation ``d``, replicate-padded."""
    b, c, h, w = x.shape
    pad = F.pad(x.reshape(b * c, 1, h, w), [d, d, d, d], mode="replicate")
    return F.conv2d(pad, kernel.to(x), dilation=d).reshape(b, c, -1, h, w)


def _pamr_affinity(img: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, P, H, W) propagation weights (softmax over the P = 8 x len(dilations) neighbours)."""
    # local standard deviation per channel over the 3x3 windows of every dilation (the centre counted once
    # per dilation), unbiased; accumulated one dilation at a time (float64) to keep memory O(9 x B x 3 x H x W)
    k9, k8 = _neighbour_kernel(True), _neighbour_kernel(False)
    n = 9 * len(dilations)
    total = torch.zeros(img.shape, dtype=torch.float64, device=img.device)
    total_sq = torch.zeros_like(total)
    for d in dilations:
        win = _window(img, d, k9).double()
        total += win.sum(2)
        total_sq += win.square().sum(2)
    var = ((total_sq - total.square() / n) / (n - 1)).clamp_min(0.0)
    inv_scale = 1.0 / (1e-8 + 0.1 * var.sqrt().float())  # (B, 3, H, W)
    logits = torch.cat(
        [
            # -|I_i - I_j| / (1e-8 + 0.1 std_i), averaged over the colour channels
            -((img[:, :, None] - _window(img, d, k8)).abs() * inv_scale[:, :, None]).mean(1)
            for d in dilations
        ],
        dim=1,
    )
    return torch.softmax(logits, dim=1)


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
    if not isinstance(num_iter, (int, np.integer)) or isinstance(num_iter, bool) or num_iter < 0:
        raise ParameterError(f"num_iter must be a non-negative integer; got {num_iter!r}.")
    dil = tuple(dilations)
    if not dil or any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1 for d in dil):
        raise ParameterError(
            f"dilations must be a non-empty sequence of positive integers; got {dilations!r}."
        )
    img = _image_batch(image)
    lab, as_numpy = _labels_tensor(labels)
    single = lab.ndim == 2
    if single:
        lab = lab[None]
    if lab.ndim != 3:
        raise ParameterError(f"labels must be (H, W) or (B, H, W); got shape {tuple(lab.shape)}.")
    if lab.shape[0] != img.shape[0]:
        raise ParameterError(
            f"got {img.shape[0]} image(s) but {lab.shape[0]} label map(s); pass one label map per image."
        )
    device = img.device
    lab = lab.to(device)
    b = lab.shape[0]
    inverse = [torch.unique(lab[i], return_inverse=True)[1] for i in range(b)]
    k = max(int(inv.max()) + 1 for inv in inverse)
    mask = torch.stack([F.one_hot(inv, k) for inv in inverse]).permute(0, 3, 1, 2).float()
    size = tuple(img.shape[-2:])
    if tuple(mask.shape[-2:]) != size:
        mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=True)
    with torch.no_grad():
        aff = _pamr_affinity(img, dil)  # (B, P, H, W)
        for _ in range(int(num_iter)):
            new = torch.zeros_like(mask)
            p = 0
            for d in dil:
                for s in _shifts(mask, d, center=False):
                    new += s * aff[:, p : p + 1]
                    p += 1
            mask = new
    out = torch.stack([compact_labels(m) for m in mask.argmax(1)])
    return _out(out[0] if single else out, as_numpy)


def median_filter(labels: Any, size: int = 3) -> Any:
    """``size x size`` median filter of ``(H, W)`` or ``(B, H, W)`` labels (each image alone).

    ``scipy.ndimage.median_filter`` with its default reflect border, as in the DiffCut evaluation. The
    median of an odd window is one of its values, so no new id appears; ids are compacted afterwards.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ParameterError(f"size must be a positive integer; got {size!r}.")
    lab, as_numpy = _labels_tensor(labels)
    if lab.ndim not in (2, 3):
        raise ParameterError(f"labels must be (H, W) or (B, H, W); got shape {tuple(lab.shape)}.")
    arr = lab.cpu().numpy()
    footprint = (size, size) if arr.ndim == 2 else (1, size, size)
    filtered = torch.from_numpy(ndimage.median_filter(arr, size=footprint))
    if filtered.ndim == 3:
        filtered = torch.stack([compact_labels(f) for f in filtered])
    else:
        filtered = compact_labels(filtered)
    return _out(filtered.to(lab.device), as_numpy)
