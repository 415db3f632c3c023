"""Automatic stopping for the recursive normalized cut (``tau="auto"``) and an automatic number of segments.

Three rules, each returning its decision with the reason in words:

:func:`dynamic_accept`
    A per-step decision, for use inside the recursion: accept a cut iff its NCut is below a threshold read
    from the spectrum of the sub-graph being cut (a "dynamic" threshold, one per step, in place of one
    hand-set tau): the middle of the largest eigengap of its normalised Laplacian, and only when that gap
    shows more than one group. The paper that introduced an automatic threshold for this
    recursion (Ivanova et al., "Unsupervised Segmentation by Diffusing, Walking and Cutting", arXiv
    2412.04678) says that it determines the NCut threshold automatically, dynamically rather than as a
    constant, but its formula was not available to this implementation; the rule here is a derivation of
    that idea, not a copy (see the function).
:func:`stable_tau`
    One tau for the whole image from a :class:`~diffcut_lab.ncut.CutTree` computed once at an upper tau
    (every smaller tau is then a free ``tree.prune(tau)``): the middle of the widest range of tau over
    which the partition does not change.
:func:`auto_n_segments`
    The number of segments ``K`` for a K-way partitioner: the largest eigengap of the normalised Laplacian
    (:func:`diffcut_lab.spectrum.eigengap`; the same spectrum the per-step rule reads at the root), or the
    segment count at :func:`stable_tau`.

NCut values here are those of :mod:`diffcut_lab.ncut`: ``cut / vol(A) + cut / vol(B)``, in ``[0, 2)``.
On a graph without structure (every edge weight near the same value) every bipartition has NCut close to 1,
and a cut of NCut 1 is what a random split gives: the per-step rule never accepts a cut at or above 1,
and :func:`stable_tau` searches below 1 unless told otherwise.

Layers: the two rules the recursion applies (:func:`dynamic_accept`, :func:`stable_tau`, with
:func:`auto_threshold` and :func:`laplacian_eigenvalues`) live in the private module below
:mod:`diffcut_lab.ncut` (``_stop_rules``) and are re-exported here; :func:`auto_n_segments`, which runs the
recursive cut, lives here, above it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ._stop_rules import (
    DEFAULT_MAX_CLUSTERS,
    auto_threshold,
    dynamic_accept,
    laplacian_eigenvalues,
    stable_tau,
)
from .errors import ParameterError
from .validation import check_affinity, check_int

__all__ = [
    "DEFAULT_MAX_CLUSTERS",
    "auto_n_segments",
    "auto_threshold",
    "dynamic_accept",
    "laplacian_eigenvalues",
    "stable_tau",
]

# ------------------------------------------------------------------------------- number of segments


def _host_graph(W: Any) -> Any:
    """``W`` checked (:func:`~diffcut_lab.validation.check_affinity`), as a float64 numpy array or scipy CSR
    matrix on the host."""
    g = check_affinity(W, caller="auto_n_segments")
    return g if sp.issparse(g) else g.cpu().double().numpy()


def auto_n_segments(
    W: Any,
    *,
    max_segments: int = 20,
    method: Literal["eigengap", "tree"] = "eigengap",
    grid: tuple[int, int] | None = None,
    self_loops: bool = False,
) -> tuple[int, str]:
    """The number of segments ``K`` for a K-way partitioner, chosen from the graph alone.

    Parameters
    ----------
    W : torch.Tensor, numpy.ndarray or scipy.sparse matrix
        ``(N, N)`` symmetric non-negative affinity (e.g. :func:`~diffcut_lab.affinity`, also with
        ``knn``, or :func:`~diffcut_lab.walks.walk_affinity`).
    max_segments : int, default 20
        Largest ``K`` considered.
    method : {"eigengap", "tree"}, default "eigengap"
        ``"eigengap"``: the ``K`` (1 included) with the largest gap ``lambda_K - lambda_{K-1}`` among the
        smallest eigenvalues of the normalised Laplacian ``I - D^-1/2 W D^-1/2`` (:func:`auto_threshold`,
        i.e. :func:`~diffcut_lab.spectrum.eigengap` with ``min_clusters=1``; ``K`` eigenvalues near 0 are
        ``K`` nearly disconnected groups; an all-equal affinity has ``0, n/(n-1), ...``, so ``K = 1``).
        ``"tree"``: the segment count of the recursive cut (fixed mode, computed at tau 1) pruned at
        :func:`stable_tau`, capped at ``max_segments``.
    grid : tuple of int, optional
        ``(h, w)`` of the nodes, passed to the recursive cut (``method="tree"``); default ``(1, N)``.
    self_loops : bool, default False
        Keep the diagonal of ``W`` in the eigengap's Laplacian (the paper mode's convention). Off by
        default, as in the fixed-mode cut (:func:`~diffcut_lab.segmentation.laplacian_weights`):
        the unit diagonal of :func:`~diffcut_lab.affinity` dominates the degrees wherever the off-diagonal
        weights are small (``alpha=10`` makes most of them small), which squeezes every eigenvalue towards
        0 and hides the gap (on noisy blob features the count then goes wrong; without self-loops it is
        right). :func:`~diffcut_lab.spectrum.laplacian_spectrum` (its ``n_clusters``), the eigenvector
        views and the spectral baseline (:func:`~diffcut_lab.baselines.eigengap_k`) count with the same
        rule on the same graph.

    Returns
    -------
    (int, str)
        ``K >= 1`` and the reason.

    Raises
    ------
    ParameterError
        ``W`` not square, negative or not symmetric; a bad ``max_segments`` or ``method``.
    FeatureError
        ``W`` empty, or NaN/Inf in it.

    Examples
    --------
    >>> import numpy as np
    >>> auto_n_segments(np.ones((16, 16)))[0]
    1
    """
    max_segments = check_int(max_segments, "max_segments", minimum=1)
    if method not in ("eigengap", "tree"):
        raise ParameterError(f"method must be 'eigengap' or 'tree', got {method!r}.")
    x = _host_graph(W)
    n = int(x.shape[0])
    if n == 1:
        return 1, "K = 1: a single node"
    g = (1, n) if grid is None else (int(grid[0]), int(grid[1]))
    if method == "tree":
        from .ncut import recursive_ncut

        tree = recursive_ncut(x, tau=1.0, grid=g, mode="fixed")
        tau, why = stable_tau(tree)
        k = min(tree.prune(tau).n_segments, int(max_segments))
        return k, f"K = {k}: recursive cut at the stable tau; {why}"
    if not self_loops:  # the fixed-mode cut's graph, as every spectrum view and the spectral baseline see it
        from .segmentation import laplacian_weights

        x = laplacian_weights(x, "fixed")
    tau, k, vals = auto_threshold(x, max_clusters=int(max_segments))
    gaps = np.diff(vals)
    second = float(np.sort(gaps)[-2]) if gaps.size > 1 else 0.0
    shown = " ".join(f"{v:.3g}" for v in vals[: min(vals.size, k + 2)])
    return int(k), (
        f"K = {k}: the largest eigengap of the normalised Laplacian follows eigenvalue {k} "
        f"({vals[k - 1]:.3g} -> {vals[k]:.3g}, gap {vals[k] - vals[k - 1]:.3g}; next largest {second:.3g}; "
        f"smallest eigenvalues {shown})"
    )
