"""One switch over segmentation methods on the same features, for ablations.

:func:`segment_features` partitions a ``(C, h, w)`` feature map into ``(h, w)`` int64 labels with:

* ``"diffcut"`` -- the segmentation core's cut (:func:`diffcut_lab.segmentation.cut_tree`: the DiffCut
  affinity and the recursive normalized cut); keywords: the cut settings of
  :class:`~diffcut_lab.config.DiffCutConfig` (``alpha``, ``tau``, ``mode``, ``min_size``, ``max_depth``,
  ``solver``), or ``config=`` a whole ``DiffCutConfig``, ``attention`` (``affinity="attention"``), and
  ``seed`` (accepted and unused: the cut is deterministic, and every method takes ``seed=``);
* ``"kmeans"`` -- scikit-learn k-means on the L2-normalised feature vectors; ``n_clusters`` (required),
  ``seed``, ``n_init``;
* ``"spectral"`` -- spectral clustering of the graph DiffCut cuts
  (:func:`~diffcut_lab.segmentation.affinity_graph`, with the self-loop convention of the config's mode):
  k-means on the first ``k`` generalized eigenvectors of its normalised Laplacian, the vectors the
  eigenvector views draw (:func:`~diffcut_lab.spectrum.laplacian_spectrum`), as scikit-learn's
  ``spectral_clustering`` does; ``k`` by the eigengap rule of
  :func:`~diffcut_lab.stopping.auto_n_segments` unless ``n_clusters`` is given; keywords: the graph's
  settings (``alpha``, ``knn``, ``affinity``, ``walk_steps``, ``mode``) or ``config=``, ``attention``
  (``affinity="attention"``), ``n_clusters``, ``min_clusters``, ``max_clusters``, ``seed``;
* ``"diffseg"`` -- DiffSeg-style iterative merging of self-attention maps (Tian et al., "Diffuse, Attend,
  and Segment", CVPR 2024); ``attn`` (required: head-averaged self-attention probabilities, one ``(N, N)``
  map or a list of maps at several resolutions), ``kl_threshold``, ``n_iter``, ``anchors``,
  ``resolution_weights``, ``refine``, ``seed``. It reads only ``attn``; the features give the output grid.

Labels are compact ``0 .. K-1`` numbered in order of first appearance in raster order (the diffcut
method numbers them as :func:`~diffcut_lab.segmentation.grid_labels` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import CUT_FIELDS
from .errors import FeatureError, ParameterError
from .label_maps import relabel_raster, resize_labels
from .validation import check_features, check_int

__all__ = ["METHODS", "diffseg_segment", "eigengap_k", "segment_features"]


# ----------------------------------------------------------------------------------------------------
# helpers


def _features(features: Any) -> torch.Tensor:
    return check_features(features).cpu()


def _rows(f: torch.Tensor) -> np.ndarray:
    """(C, h, w) -> (N, C) L2-normalised rows, float64."""
    c = f.shape[0]
    return F.normalize(f.reshape(c, -1).T.double(), dim=1).numpy()


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber ids 0..K-1 in order of first appearance (raster order), keeping the shape."""
    return relabel_raster(labels).reshape(np.shape(labels))


# ----------------------------------------------------------------------------------------------------
# methods


def _diffcut(
    f: torch.Tensor, *, config: Any = None, seed: int | None = None, attention: Any = None, **cut: Any
) -> np.ndarray:
    from . import segmentation as core
    from .config import DiffCutConfig

    del seed  # deterministic; accepted so that every method takes seed=
    cfg = DiffCutConfig.build(config, **cut)
    return core.grid_labels(core.cut_tree(f, cfg, attention=attention))


def _kmeans(f: torch.Tensor, *, n_clusters: int | None = None, seed: int = 0, n_init: int = 10) -> np.ndarray:
    from sklearn.cluster import KMeans

    if n_clusters is None:
        raise ParameterError("method='kmeans' needs n_clusters=K (the number of segments).")
    x = _rows(f)
    k = check_int(n_clusters, "n_clusters", minimum=1)
    if k > x.shape[0]:
        raise ParameterError(f"n_clusters={k} exceeds the {x.shape[0]} feature vectors of the grid.")
    km = KMeans(n_clusters=k, n_init=check_int(n_init, "n_init", minimum=1), random_state=int(seed)).fit(x)
    return _first_appearance(km.labels_.reshape(f.shape[1:]))


def eigengap_k(W: Any, *, min_clusters: int = 1, max_clusters: int = 20, mode: str = "fixed") -> int:
    """Number of clusters by the eigengap rule (:func:`diffcut_lab.spectrum.eigengap`) on the normalised
    Laplacian of the graph ``W`` as the cut of ``mode`` sees it (fixed: without self-loops; paper: with):
    the ``k`` in ``[min_clusters, max_clusters]`` after which the gap between consecutive eigenvalues is
    largest. With the defaults it is :func:`~diffcut_lab.stopping.auto_n_segments`'s count (1 on a graph
    without structure).

    Examples
    --------
    >>> W = np.kron(np.eye(2), np.ones((4, 4))) + 1e-3
    >>> eigengap_k(W)
    2
    """
    from .config import DiffCutConfig

    lo = check_int(min_clusters, "min_clusters", minimum=1)
    hi = check_int(max_clusters, "max_clusters", minimum=lo)
    n = int(np.shape(W)[0])
    spec = _spectrum(W, DiffCutConfig(mode=mode), hi + 1, grid=(n, 1))
    return _eigengap_count(spec, lo, hi)


def _spectrum(
    source: Any, config: Any, m: int, *, grid: tuple[int, int] | None = None, attention: Any = None
) -> Any:
    from .spectrum import laplacian_spectrum

    return laplacian_spectrum(source, m, grid, config=config, attention=attention)


def _eigengap_count(spec: Any, lo: int, hi: int) -> int:
    from .spectrum import eigengap

    return 1 if spec.values.size < 2 else eigengap(spec.values, min_clusters=lo, max_clusters=hi)


def _spectral(
    f: torch.Tensor,
    *,
    n_clusters: int | None = None,
    config: Any = None,
    attention: Any = None,
    min_clusters: int = 1,
    max_clusters: int = 20,
    seed: int = 0,
    **graph: Any,
) -> np.ndarray:
    from sklearn.cluster import KMeans

    from .config import DiffCutConfig

    cfg = DiffCutConfig.build(config, **graph)
    n = int(f.shape[1] * f.shape[2])
    if n == 1:
        return np.zeros(f.shape[1:], np.int64)
    lo = check_int(min_clusters, "min_clusters", minimum=1)
    hi = check_int(max_clusters, "max_clusters", minimum=lo)
    k = None
    if n_clusters is not None:
        k = check_int(n_clusters, "n_clusters", minimum=1)
        if k > n:
            raise ParameterError(f"n_clusters={k} exceeds the {n} feature vectors of the grid.")
    spec = _spectrum(f, cfg, max(hi + 1, k or 0), attention=attention)
    if k is None:
        k = _eigengap_count(spec, lo, hi)
    if k == 1:
        return np.zeros(f.shape[1:], np.int64)
    # the spectral embedding of scikit-learn's spectral_clustering (y = D^-1/2 v, the first k, the
    # constant one included), on the cut's graph
    km = KMeans(n_clusters=k, n_init=10, random_state=int(seed)).fit(spec.vectors[:, :k])
    return _first_appearance(km.labels_.reshape(f.shape[1:]))


# ----------------------------------------------------------------------------------------------------
# DiffSeg


def _attn_list(attn: Any) -> list[torch.Tensor]:
    items = list(attn) if isinstance(attn, (list, tuple)) else [attn]
    if not items:
        raise ParameterError("attn is empty; pass at least one (N, N) attention-probability map.")
    out = []
    for a in items:
        t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
        t = t.detach().cpu().double()
        while t.ndim > 2 and t.shape[0] == 1:  # (1, N, N) from a captured batch of one
            t = t[0]
        if t.ndim == 3:  # (heads, N, N)
            t = t.mean(0)
        if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] == 0:
            raise FeatureError(
                f"each attention map must be (N, N) query x key probabilities (or (heads, N, N)); got "
                f"shape {tuple(t.shape)}."
            )
        if not torch.isfinite(t).all() or (t < 0).any():
            raise FeatureError("attention probabilities must be finite and non-negative.")
        out.append(t)
    return out


def _grid_of(n: int, finest: tuple[int, int], n_finest: int) -> tuple[int, int]:
    """Grid of an N-node map given the finest grid (same aspect ratio, integer downsampling factor)."""
    r = math.isqrt(n_finest // n) if n_finest % n == 0 else 0
    h, w = finest
    if r < 1 or r * r * n != n_finest or h % r or w % r:
        raise FeatureError(
            f"an attention map with {n} nodes does not tile the finest grid {finest} by an integer factor; "
            "pass maps whose grids divide the finest one (e.g. 64x64, 32x32, 16x16, 8x8)."
        )
    return h // r, w // r


def _aggregate(
    maps: list[torch.Tensor], grid: tuple[int, int], weights: Sequence[float] | None
) -> torch.Tensor:
    """Multi-resolution attention -> (h*w, h*w): row q is query q's attention over the finest grid."""
    h, w = grid
    n_fine = h * w
    grids = [_grid_of(m.shape[0], grid, n_fine) for m in maps]
    if weights is None:  # proportional to the grid side, as in DiffSeg
        sides = np.array([g[0] for g in grids], np.float64)
        weights = sides / sides.sum()
    elif len(weights) != len(maps):
        raise ParameterError(f"resolution_weights has {len(weights)} entries for {len(maps)} attention maps.")
    total = torch.zeros(n_fine, n_fine, dtype=torch.float64)
    for m, (gh, gw), wt in zip(maps, grids, weights):
        keys = m.reshape(gh * gw, 1, gh, gw)
        if (gh, gw) != (h, w):
            keys = F.interpolate(keys, size=(h, w), mode="bilinear", align_corners=False)
        keys = keys.reshape(gh, gw, n_fine)
        keys = keys / keys.sum(-1, keepdim=True).clamp_min(1e-30)
        r = h // gh
        keys = keys.repeat_interleave(r, 0).repeat_interleave(r, 1).reshape(n_fine, n_fine)
        total += float(wt) * keys
    return total / total.sum(-1, keepdim=True).clamp_min(1e-30)


def _anchor_points(h: int, w: int, m: int) -> np.ndarray:
    """Flat indices of an evenly spaced, centred ``m x m`` grid of anchors (fewer on small grids)."""

    def axis(n: int) -> np.ndarray:
        k = min(m, n)
        if k == 1:
            return np.array([(n - 1) // 2])
        step = (n - 1) // (k - 1)
        start = ((n - 1) - step * (k - 1)) // 2
        return start + step * np.arange(k)

    ys, xs = np.meshgrid(axis(h), axis(w), indexing="ij")
    return (ys * w + xs).ravel()


def _sym_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Pairwise symmetric KL ``(KL(p||q) + KL(q||p)) / 2`` between rows of p (A, N) and q (B, N)."""
    lp, lq = p.clamp_min(1e-12).log(), q.clamp_min(1e-12).log()
    ep, eq = (p * lp).sum(1), (q * lq).sum(1)
    return 0.5 * (ep[:, None] + eq[None, :] - p @ lq.T - lp @ q.T)


def diffseg_segment(
    attn: Any,
    grid: tuple[int, int] | None = None,
    *,
    kl_threshold: float | Sequence[float] = 1.1,
    n_iter: int = 3,
    anchors: int = 16,
    resolution_weights: Sequence[float] | None = None,
    refine: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """DiffSeg: aggregate self-attention, merge it iteratively by KL distance, label by arg-max.

    Parameters
    ----------
    attn : array_like or list of array_like
        Self-attention probabilities, query x key, ``(N, N)`` (or ``(heads, N, N)``, averaged), or a
        list at several resolutions whose grids divide the finest one.
    grid : (h, w), optional
        The finest grid (default: square ``sqrt(N)``).
    kl_threshold : float or sequence of float
        Merge threshold on the symmetric KL divergence; one value per iteration, or one for all.
    n_iter : int
        Merging iterations when ``kl_threshold`` is a single value (DiffSeg: 3).
    anchors : int
        Anchors per side of the sampling grid of the first iteration (DiffSeg: 16).
    resolution_weights : sequence of float, optional
        Aggregation weight per map (default proportional to each map's grid side).
    refine : bool
        DiffSeg's optional k-means refinement (initialised at the merged proposals).
    seed : int
        k-means seed for ``refine``.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int64 labels, compact, in order of first appearance.

    Notes
    -----
    1. Aggregation: each map's key dimensions are bilinearly upsampled to the finest grid and
       renormalised, its query dimensions repeated to the finest grid, and the maps summed with the
       resolution weights. 2. First iteration: each anchor's map is replaced by the mean of all maps within
       ``kl_threshold`` of it. 3. Later iterations: proposals are visited in order; each unvisited one
       takes the mean of every proposal within the threshold, which are then marked visited.
       4. Non-maximum suppression: every location takes the proposal with the largest probability there.
    """
    maps = _attn_list(attn)
    n_fine = max(m.shape[0] for m in maps)
    if grid is None:
        side = math.isqrt(n_fine)
        if side * side != n_fine:
            raise FeatureError(f"cannot infer a square grid from {n_fine} nodes; pass grid=(h, w).")
        grid = (side, side)
    h, w = (int(g) for g in grid)
    if h * w != n_fine:
        raise FeatureError(f"the finest attention map has {n_fine} nodes but grid {grid} has {h * w}.")
    if isinstance(kl_threshold, (int, float, np.floating, np.integer)):
        thresholds = [float(kl_threshold)] * check_int(n_iter, "n_iter", minimum=1)
    else:
        thresholds = [float(t) for t in kl_threshold]
    if not thresholds or any(not np.isfinite(t) or t <= 0 for t in thresholds):
        raise ParameterError(f"kl_threshold must be positive and finite; got {kl_threshold!r}.")
    agg = _aggregate(maps, (h, w), resolution_weights)  # (N, N)

    anchor_idx = _anchor_points(h, w, check_int(anchors, "anchors", minimum=1))
    anchor_maps = agg[anchor_idx]
    close = (_sym_kl(anchor_maps, agg) < thresholds[0]).double()
    close[np.arange(anchor_idx.size), anchor_idx] = 1.0  # an anchor always merges with itself
    proposals = (close @ agg) / close.sum(1, keepdim=True)
    for thr in thresholds[1:]:
        dist = _sym_kl(proposals, proposals)
        visited = np.zeros(proposals.shape[0], bool)
        merged = []
        for i in range(proposals.shape[0]):
            if visited[i]:
                continue
            group = (dist[i] < thr).numpy()
            group[i] = True
            visited |= group
            merged.append(proposals[torch.from_numpy(group)].mean(0))
        proposals = torch.stack(merged)
    if refine and proposals.shape[0] > 1:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=proposals.shape[0], init=proposals.numpy(), n_init=1, random_state=int(seed))
        labels = km.fit(agg.numpy()).labels_
        proposals = torch.stack([agg[torch.from_numpy(labels == k)].mean(0) for k in np.unique(labels)])
    labels = proposals.argmax(0).reshape(h, w).numpy()
    return _first_appearance(labels)


def _diffseg(f: torch.Tensor, *, attn: Any = None, **kw: Any) -> np.ndarray:
    if attn is None:
        raise ParameterError(
            "method='diffseg' needs attn=: head-averaged self-attention probabilities (N, N), or a list of "
            "them at several resolutions; capture them with hooks.capture(..., layers='<attn1 name>.probs')."
        )
    h, w = f.shape[1:]
    maps = _attn_list(attn)
    n_fine = max(m.shape[0] for m in maps)
    if n_fine == h * w:
        return diffseg_segment(maps, (h, w), **kw)
    # attention on another grid than the features: segment there, then resize the labels to the features
    labels = diffseg_segment(maps, None, **kw)
    return _first_appearance(resize_labels(labels, (h, w)))


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "diffcut": _diffcut,
    "kmeans": _kmeans,
    "spectral": _spectral,
    "diffseg": _diffseg,
}

_KEYWORDS = {
    "diffcut": (*CUT_FIELDS, "config", "attention", "seed"),
    "kmeans": ("n_clusters", "seed", "n_init"),
    "spectral": (
        "n_clusters",
        "config",
        "attention",
        "alpha",
        "knn",
        "affinity",
        "walk_steps",
        "mode",
        "min_clusters",
        "max_clusters",
        "seed",
    ),
    "diffseg": ("attn", "kl_threshold", "n_iter", "anchors", "resolution_weights", "refine", "seed"),
}


def segment_features(features: Any, method: str = "diffcut", **kw: Any) -> np.ndarray:
    """Segment one ``(C, h, w)`` feature map with the chosen method.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        ``(C, h, w)`` features (e.g. ``cache["diffcut"][0]``).
    method : {"diffcut", "kmeans", "spectral", "diffseg"}
        Segmentation method (module docstring lists each one's keywords).
    **kw
        Keywords of the method.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int64 labels ``0 .. K-1``.

    Raises
    ------
    ParameterError
        Unknown method or keyword, missing required keyword, out-of-range value.
    FeatureError
        Features or attention maps with a bad layout or NaN/Inf.

    Examples
    --------
    >>> f = np.zeros((2, 4, 4)); f[0, :, :2] = 1; f[1, :, 2:] = 1
    >>> segment_features(f, "kmeans", n_clusters=2)[0].tolist()
    [0, 0, 1, 1]
    """
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; expected one of {sorted(METHODS)}.")
    unknown = sorted(set(kw) - set(_KEYWORDS[method]))
    if unknown:
        raise ParameterError(
            f"method={method!r} takes no keyword(s) {unknown}; its keywords are {list(_KEYWORDS[method])}."
        )
    f = _features(features)
    return METHODS[method](f, **kw)
