"""The segmentation core: every step from an image and its features to labels, written once.

Every path that turns features into labels -- :class:`~diffcut_lab.pipeline.DiffCut`, the DiffCut method
of :func:`~diffcut_lab.baselines.segment_features`, the ablation engine (and so ``diffcut-lab eval``), the
cut stepper's recompute, the layer views and the benchmarks -- calls these functions with one
:class:`~diffcut_lab.config.DiffCutConfig`::

    image --network_input--> (region, x) --capture--> features (C, h, w)
    features --cut_tree / cut_trees--> CutTree --grid_labels--> (h, w) ids
    (h, w) ids --upsample_labels--> (H, W) --refine_labels (guide_image)--> labels

:func:`pixel_labels` chains the last two for one output size, with an optional step between upsampling and
refinement (the published evaluation's background merge runs there).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .affinities import safe_scale
from .config import TREE_FIELDS, DiffCutConfig, parse_size
from .errors import FeatureError, ParameterError
from .images import crop_region, resize_image
from .options import AUTO, AUTO_TAU
from .threads import small_work
from .validation import as_tensor, check_features

__all__ = [
    "PUBLISHED_ORDER_MAX_BYTES",
    "affinity_graph",
    "cut_tree",
    "cut_trees",
    "grid_labels",
    "guide_image",
    "laplacian_weights",
    "network_input",
    "pixel_labels",
    "recut",
    "refine_labels",
    "tree_config",
    "upsample_labels",
    "work_size",
]

#: paper mode upsamples the C-channel features before the concept-assignment dot products (as published)
#: while they fit in this many bytes (128 x 128 x 1280 float32 is 84 MB); above, the scores are upsampled
PUBLISHED_ORDER_MAX_BYTES = 512 * 2**20


# ----------------------------------------------------------------------------------------------------
# image -> network input


def network_input(
    image: torch.Tensor, config: DiffCutConfig, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The segmented region of an image and the UNet input made from it.

    Parameters
    ----------
    image : torch.Tensor
        ``(3, H, W)`` float in [0, 1] (e.g. from :func:`~diffcut_lab.images.to_batch`).
    config : DiffCutConfig
        ``policy`` (whole image or the published centre crop) and ``antialias``.
    size : (h, w)
        UNet input size in pixels.

    Returns
    -------
    region : torch.Tensor
        ``(3, H', W')`` the part of the image that is segmented, at its own resolution.
    x : torch.Tensor
        ``(3, h, w)`` the region bilinearly resized to ``size``.
    """
    region = crop_region(image, config.policy)
    return region, resize_image(region, parse_size(tuple(size)), antialias=config.antialias).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------
# features -> cut tree


def _grid_features(features: Any) -> torch.Tensor:
    f = check_features(features, batch_of_one=True, dtype=torch.float32)
    return safe_scale(f)  # norms of 1e19 would overflow float32 and normalise to zeros


def cut_tree(
    features: Any,
    config: DiffCutConfig,
    *,
    tau: float | None = None,
    timings: dict[str, float] | None = None,
    attention: Any = None,
) -> Any:
    """The normalized cut of one feature map, with every setting recorded in ``tree.params``.

    The graph (:func:`affinity_graph`) is DiffCut's: the features L2-normalised over channels, then
    :func:`~diffcut_lab.affinities.affinity` (``alpha``; it normalises again, as the published code does
    twice) -- or, with ``affinity="attention"``, the ``walk_steps``-step random walk on the layer's
    self-attention (:func:`~diffcut_lab.walks.walk_affinity`). :func:`~diffcut_lab.ncut.recursive_ncut`
    (``tau``, ``mode``, ``min_size``, ``max_depth``, ``solver``) partitions it, or with
    ``partition="kway"`` one K-way cut (:func:`~diffcut_lab.kway.kway_ncut`; a tree without steps).
    Everything runs on the features' device: on an accelerator the graph never leaves it and the solver is
    chosen for it (``CutStep.solver`` records which).

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        ``(C, h, w)`` features of one image.
    config : DiffCutConfig
    tau : float, optional
        Cut at this tau instead of ``config.tau``.
    timings : dict, optional
        Filled with the seconds of ``"affinity"`` and ``"cut"``.
    attention : torch.Tensor, optional
        ``(N, N)`` self-attention probabilities of the same layer (``affinity="attention"`` needs them).

    Returns
    -------
    CutTree
        ``tree.params`` holds ``alpha``, ``knn``, ``min_size``, ``max_depth``, ``solver``, ``affinity``,
        ``walk_steps``, ``partition`` and ``n_segments`` (``tree.tau`` and ``tree.mode`` the rest):
        :func:`tree_config` rebuilds the settings from a tree.
    """
    f = _grid_features(features)
    cfg = config if tau is None else config.replace(tau=tau)
    t0 = time.perf_counter()
    W = affinity_graph(f, cfg, attention)
    t1 = time.perf_counter()
    with small_work():
        tree = _partition(W, cfg, tuple(f.shape[1:]))
    if timings is not None:
        timings.update(affinity=t1 - t0, cut=time.perf_counter() - t1)
    return tree


def _recursive(W: Any, config: DiffCutConfig, grid: tuple[int, int]) -> Any:
    from .ncut import recursive_ncut

    return recursive_ncut(
        W, tau=config.tau, grid=grid, mode=config.mode, min_size=config.min_size, max_depth=config.max_depth,
        solver=config.solver, auto_rule=config.auto_rule,
    )  # fmt: skip


def _partition(W: Any, config: DiffCutConfig, grid: tuple[int, int], recursive: Any = None) -> Any:
    """The tree of ``config`` on the graph ``W`` (``recursive``: its recursive tree, when already cut)."""
    if config.partition == "kway" and config.n_segments:
        tree = _kway_tree(W, config, grid, config.n_segments, "n_segments")
    else:
        tree = recursive if recursive is not None else _recursive(W, config, grid)
        if config.partition == "kway":
            source = "the automatic rule" if config.tau == AUTO else f"the recursive cut at tau {tree.tau:g}"
            tree = _kway_tree(W, config, grid, tree.n_segments, source, start=tree.labels)
    tree.params.update({k: getattr(config, k) for k in TREE_FIELDS if k not in tree.params})
    return tree


def affinity_graph(features: Any, config: DiffCutConfig, attention: Any = None) -> torch.Tensor:
    """The graph a cut partitions, on the features' device: DiffCut's affinity of the ``(C, h, w)``
    features (``alpha``, ``knn``), or the attention random walk (``affinity="attention"``, ``walk_steps``).

    The one builder of that graph: :func:`cut_tree`, the spectrum and eigenvector views
    (:func:`~diffcut_lab.spectrum.laplacian_spectrum`) and the spectral baseline all call it. It returns
    the graph with its self-loops (the unit diagonal of the cosine affinity, the walk's return flow);
    :func:`laplacian_weights` applies a mode's convention for them.
    """
    from .affinities import affinity

    features = _grid_features(features)  # the checks of cut_tree (a no-op on features it already checked)
    config.check_grid(features.shape[1:])  # what these settings cannot cut on this grid, before any work

    if config.affinity == "attention":
        from .walks import walk_affinity

        if attention is None:
            raise ParameterError(
                "affinity='attention' cuts the layer's self-attention: pass attention=... (the '<attn1>.probs' "
                "capture of the same layer), or segment images with a backbone (DiffCut captures it)."
            )
        n = features.shape[1] * features.shape[2]
        a = as_tensor(attention, "attention probabilities", "of shape (N, N)", error=ParameterError)
        a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
        if tuple(a.shape) != (n, n):
            raise FeatureError(
                f"attention must be ({n}, {n}) for a {features.shape[1]} x {features.shape[2]} feature grid; got "
                f"shape {tuple(a.shape)} (pass one image's probabilities of the same layer)."
            )
        return walk_affinity(a.to(features.device), config.walk_steps)
    W = affinity(F.normalize(features, dim=0), alpha=config.alpha, knn=config.knn)
    _warn_if_falling_apart(W, config.alpha)  # reads W back: the affinity's time is complete here
    return W


def _kway_tree(W: torch.Tensor, config: DiffCutConfig, grid: tuple[int, int], k: int, k_from: str,
               start: Any = None) -> Any:  # fmt: skip
    """One K-way cut of ``W`` as a tree without steps (``params`` says where K came from).

    ``start``: labels to improve (the recursive cut's partition, which the K-way cut then never makes
    worse); else seeded restarts. A K the grid cannot take (more segments than nodes, or beyond
    :data:`~diffcut_lab.config.MAX_KWAY_WORK`) raises ParameterError before the cut, naming one it can."""
    from .config import check_kway_segments
    from .kway import kway_ncut
    from .ncut import CutTree

    k = check_kway_segments(int(k), grid, source=k_from)  # refused, never clamped: K means what it says
    init = "spectral" if start is None else np.asarray(start).reshape(-1)  # kway_ncut's default start
    res = kway_ncut(W, k, seed=0, init=init)
    params = {
        "ncut": float(res.ncut),
        "k_from": k_from,
        "n_iter": int(res.n_iter),
        "converged": bool(res.converged),
    }
    if config.tau == AUTO:
        params["tau"] = AUTO
    tau = AUTO_TAU if config.tau == AUTO else config.tau
    return CutTree.from_partition(res.labels, grid=grid, tau=tau, mode=config.mode, params=params)


def _warn_if_falling_apart(W: torch.Tensor, alpha: float) -> None:
    """Warn when ``alpha`` underflows every edge of some nodes: each becomes a segment of its own."""
    if W.is_sparse:
        return
    alone = int(((W > 0).sum(1) <= 1).sum())  # only the node's own (diagonal) weight is left
    if alone:
        warnings.warn(
            f"alpha={alpha:g} underflows every edge of {alone} of {W.shape[0]} nodes (their affinities are 0 "
            "in float32): the graph falls apart into single nodes; lower alpha.",
            RuntimeWarning,
            stacklevel=3,
        )


def cut_trees(
    features: Any, config: DiffCutConfig, taus: Iterable[float | str], *, attention: Any = None
) -> dict[float | str, Any]:
    """The trees of several taus from one graph and one recursion: cut at the largest, prune for the others.

    Returns ``{tau: CutTree}``; each tree equals ``cut_tree(features, config, tau=tau)`` (a node's cut
    never depends on tau, :meth:`~diffcut_lab.ncut.CutTree.prune`). ``"auto"`` among the taus is cut on
    its own (same graph). With ``partition="kway"`` each tau's K-way cut starts from that recursive
    partition (or from ``n_segments``).
    """
    from .config import check_tau

    asked = {check_tau(t, auto=True) for t in taus}
    if not asked:
        raise ParameterError("cut_trees needs at least one tau.")
    values = sorted((t for t in asked if t != AUTO), reverse=True)
    f = _grid_features(features)
    grid = tuple(f.shape[1:])
    W = affinity_graph(f, config, attention)
    out: dict[float | str, Any] = {}
    with small_work():
        if AUTO in asked:
            out[AUTO] = _partition(W, config.replace(tau=AUTO), grid)
        if values:
            top_cfg = config.replace(tau=values[0])
            top = None if config.partition == "kway" and config.n_segments else _recursive(W, top_cfg, grid)
            for t in values:
                rec = None if top is None else (top if t == values[0] else top.prune(t))
                out[t] = _partition(W, top_cfg.replace(tau=t), grid, rec)
    return out


def tree_config(tree: Any, base: DiffCutConfig | None = None) -> DiffCutConfig:
    """The settings a tree was cut with (its ``tau``, ``mode`` and ``params``) over ``base``'s others.

    Parameters
    ----------
    tree : CutTree
        ``tree.params`` holds what :func:`cut_tree` records (``TREE_FIELDS``); ``params["tau"] == "auto"``
        marks a ``tau="auto"`` tree (whose ``tree.tau`` is the rule's upper bound or the stable tau).
    base : DiffCutConfig, optional
        The settings the tree does not record (default: the defaults), e.g. a
        :class:`~diffcut_lab.pipeline.Segmentation`'s ``config``.

    Returns
    -------
    DiffCutConfig
        With every :data:`~diffcut_lab.config.CUT_FIELDS` setting of the tree; a pruned automatic tree is a
        tree of its numeric tau (:meth:`~diffcut_lab.ncut.CutTree.prune`).
    """
    base = base or DiffCutConfig()
    known = {k: v for k, v in tree.params.items() if k in TREE_FIELDS}
    tau = AUTO if tree.params.get("tau") == AUTO else float(tree.tau)
    return base.replace(tau=tau, mode=tree.mode, **known)


def recut(tree: Any, features: Any, *, attention: Any = None, **changes: Any) -> Any:
    """Cut ``features`` again with every setting of ``tree``, some changed (``alpha=...``, ``tau=...``).

    The settings are :func:`tree_config`'s: all of :data:`~diffcut_lab.config.CUT_FIELDS` that the tree
    recorded, so an attention-walk tree is cut again on the attention walk (``walk_steps``), a
    ``tau="auto"`` tree by its ``auto_rule``, a K-way tree K-way (``n_segments``) and a kNN tree on its
    sparse graph, unless ``changes`` say otherwise. With no change, the result equals ``tree`` when
    ``tree`` was cut from ``features`` (and ``attention``) by :func:`cut_tree` on the same device: this is
    what the cut stepper's alpha and tau sliders and :meth:`~diffcut_lab.pipeline.Segmentation.recut` call.

    Parameters
    ----------
    tree : CutTree
        A tree from :func:`cut_tree` (a bare :func:`~diffcut_lab.ncut.recursive_ncut` tree records only
        ``tau``, ``mode``, ``min_size``, ``max_depth`` and ``solver``: the rest are the defaults).
    features : torch.Tensor or numpy.ndarray
        ``(C, h, w)`` features ``tree`` was cut from.
    attention : torch.Tensor, optional
        ``(N, N)`` self-attention probabilities of the same layer and image; needed when the cut is
        ``affinity="attention"`` (:attr:`~diffcut_lab.pipeline.Segmentation.attention` keeps them).
    **changes
        New values of cut settings (:data:`~diffcut_lab.config.CUT_FIELDS`); ``tau`` may be ``"auto"``.

    Returns
    -------
    CutTree

    Raises
    ------
    ParameterError
        A change that is not a cut setting, or an attention-walk cut without ``attention``.
    """
    from .config import CUT_FIELDS

    other = sorted(set(changes) - set(CUT_FIELDS))
    if other:
        raise ParameterError(
            f"recut changes the settings of the cut only ({', '.join(CUT_FIELDS)}); got {', '.join(other)}. "
            "The label settings (refine, upsample, ...) act after the cut: segment again with DiffCut."
        )
    return cut_tree(features, tree_config(tree).replace(**changes), attention=attention)


def grid_labels(tree: Any) -> np.ndarray:
    """``(h, w)`` int64 segment ids of a tree, numbered as its mode numbers them.

    Fixed mode: the tree's own raster order (:attr:`~diffcut_lab.ncut.CutTree.labels`); paper mode: the
    published numbering (:meth:`~diffcut_lab.ncut.CutTree.published_labels`), which the median filter
    after PAMR sees.
    """
    labels = tree.published_labels() if tree.mode == "paper" else tree.labels
    return np.asarray(labels, dtype=np.int64)


def laplacian_weights(W: Any, mode: str = "fixed") -> Any:
    """The weights whose normalised Laplacian the first cut of ``mode`` solves, on the host in float64.

    ``mode="fixed"``: ``W`` without self-loops (the diagonal is ignored, as in every fixed-mode
    sub-graph, ``_cut_attempt.subgraph``); a sparse (kNN) graph stays a scipy CSR matrix.
    ``mode="paper"``: ``W`` rounded to float32 as the paper cut holds it, self-loops kept (the published
    degrees count them); dense only, as in :func:`~diffcut_lab.ncut.recursive_ncut`.

    Parameters
    ----------
    W : torch.Tensor, numpy.ndarray or scipy.sparse matrix
        ``(N, N)`` graph, e.g. :func:`affinity_graph`.
    mode : {"fixed", "paper"}

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        ``(N, N)`` float64 weights (a copy).
    """
    import scipy.sparse as sp

    from .options import MODES

    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, got {mode!r}.")
    if isinstance(W, torch.Tensor) and W.layout != torch.strided:
        t = W.detach().to_sparse_coo().coalesce().cpu()
        idx = t.indices().numpy()
        W = sp.csr_matrix((t.values().double().numpy(), (idx[0], idx[1])), shape=tuple(t.shape))
    if sp.issparse(W):
        if mode == "paper":
            raise ParameterError(
                "mode='paper' cuts a dense affinity; a sparse (kNN) graph is cut in mode='fixed'."
            )
        g = sp.csr_matrix(W, dtype=np.float64, copy=True)
        g.setdiag(0.0)
        g.eliminate_zeros()
        return g
    a = W.detach().cpu() if isinstance(W, torch.Tensor) else torch.as_tensor(np.asarray(W))
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ParameterError(f"W must be a square (N, N) affinity matrix, got shape {tuple(a.shape)}.")
    if mode == "paper":
        a = a.to(torch.float32)
    out = a.to(torch.float64).numpy().copy()
    if mode == "fixed":
        np.fill_diagonal(out, 0.0)
    return out


# ----------------------------------------------------------------------------------------------------
# grid labels -> pixel labels


def work_size(out_size: Sequence[int], config: DiffCutConfig) -> tuple[int, int]:
    """The size labels are upsampled and refined at: ``out_size`` with its longer side capped at
    ``config.refine_max_side`` (PAMR's memory grows with the pixel count)."""
    h, w = parse_size(tuple(out_size), "output size")
    cap = config.refine_max_side
    if cap is None or max(h, w) <= cap:
        return h, w
    s = cap / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def upsample_labels(coarse: Any, features: Any, size: Sequence[int], config: DiffCutConfig) -> np.ndarray:
    """``(h, w)`` grid ids -> ``(H, W)`` int64 compact ids (order kept): concept assignment or nearest.

    Paper mode computes the concept-assignment scores in the published order (features upsampled first)
    while they fit in :data:`PUBLISHED_ORDER_MAX_BYTES`.
    """
    from .refine import concept_assignment, nearest_upsample

    size = parse_size(tuple(size), "size")
    if config.upsample == "nearest":
        return np.asarray(nearest_upsample(coarse, size), dtype=np.int64)
    f = _grid_features(features)
    published = config.mode == "paper" and f.shape[0] * size[0] * size[1] * 4 <= PUBLISHED_ORDER_MAX_BYTES
    labels = concept_assignment(coarse, f, size, order="features" if published else "scores")
    return np.asarray(labels, dtype=np.int64)


def guide_image(region: torch.Tensor | None, x: torch.Tensor | None, size: Sequence[int],
                config: DiffCutConfig) -> torch.Tensor:  # fmt: skip
    """The ``(3, H, W)`` image PAMR follows at ``size``: the region (``pamr_guide="image"``) or the UNet
    input (``"input"``, as published), bilinearly resized (antialiased as ``config.antialias``)."""
    source = region if config.pamr_guide == "image" else x
    if source is None:
        raise ParameterError(
            f"refine='pamr' with pamr_guide={config.pamr_guide!r} needs the "
            f"{'image' if config.pamr_guide == 'image' else 'UNet input'}; pass it, or use refine='median' "
            "or 'none'."
        )
    return resize_image(source, parse_size(tuple(size)), antialias=config.antialias).clamp(0.0, 1.0)


def refine_labels(labels: Any, guide: torch.Tensor | None, config: DiffCutConfig) -> np.ndarray:
    """Refine ``(H, W)`` labels: PAMR along ``guide``'s colour edges then the median filter
    (``refine="pamr"``), the median alone (``"median"``) or nothing (``"none"``).

    PAMR runs on ``guide``'s device (a GPU makes it nearly free); the labels come back as numpy int64.
    """
    from .refine import median_filter, pamr

    out = np.asarray(labels, dtype=np.int64)
    if config.refine == "pamr":
        if guide is None:
            raise ParameterError("refine='pamr' needs a guide image (guide_image(...)).")
        lab = torch.as_tensor(out, device=guide.device)
        out = pamr(guide, lab, num_iter=config.pamr_iter, dilations=config.pamr_dilations).cpu().numpy()
    if config.refine in ("pamr", "median"):
        out = median_filter(out, config.median_size)
    return np.asarray(out, dtype=np.int64)


@small_work()  # many small ops: one thread (diffcut_lab.threads)
def pixel_labels(
    coarse: Any,
    features: Any,
    out_size: Sequence[int],
    config: DiffCutConfig,
    *,
    region: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    before_refine: Callable[[np.ndarray], np.ndarray] | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Grid labels to ``(H, W)`` int64 labels at ``out_size``: upsampling, then refinement.

    Parameters
    ----------
    coarse : array_like
        ``(h, w)`` ids on the feature grid (:func:`grid_labels` of a tree, or another method's labels).
    features : torch.Tensor
        ``(C, h, w)`` features of the grid (concept assignment reads them).
    out_size : (H, W)
        Output size; upsampling and refinement run at :func:`work_size`, then nearest resize.
    config : DiffCutConfig
    region, x : torch.Tensor, optional
        The segmented region and the UNet input (:func:`network_input`); PAMR's guide is made from one of
        them (``config.pamr_guide``).
    device : torch.device or str, optional
        Where PAMR runs (default the CPU); concept assignment runs on the features' device.
    before_refine : callable, optional
        Applied to the upsampled labels before refinement (the published evaluation's background merge);
        only where the work size is the output size.
    timings : dict, optional
        Filled with the seconds of ``"upsample"`` and ``"refine"``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int64 ids (compact after each step, order kept).
    """
    from .refine import nearest_upsample

    out_size = parse_size(tuple(out_size), "output size")
    work = work_size(out_size, config)
    t0 = time.perf_counter()
    labels = upsample_labels(coarse, features, work, config)
    t1 = time.perf_counter()
    if before_refine is not None:
        if work != out_size:
            raise ParameterError(
                f"a step before refinement needs labels at the output size {out_size}, but refine_max_side "
                f"caps them at {work}; raise refine_max_side."
            )
        labels = np.asarray(before_refine(labels), dtype=np.int64)
    guide = None
    if config.refine == "pamr":  # made on the device PAMR runs on
        dev = torch.device(device or "cpu")
        guide = guide_image(*(None if t is None else t.to(dev) for t in (region, x)), work, config)
    labels = refine_labels(labels, guide, config)
    if work != out_size:
        labels = np.asarray(nearest_upsample(labels, out_size), dtype=np.int64)
    if timings is not None:
        timings.update(upsample=t1 - t0, refine=time.perf_counter() - t1)
    return labels
