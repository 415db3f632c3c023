"""The spectrum behind the cuts: the smallest eigenpairs of the normalised Laplacian of the graph a cut
partitions, and the eigengap rule for a number of clusters.

:func:`laplacian_spectrum` computes what the eigenvector views draw (:mod:`diffcut_lab.viz.eigen`) on the
graph :func:`~diffcut_lab.segmentation.affinity_graph` builds for a
:class:`~diffcut_lab.config.DiffCutConfig` (``alpha``, ``knn``, the attention walk), with the self-loop
convention of the config's mode (:func:`~diffcut_lab.segmentation.laplacian_weights`): its ``y1`` is the
Fiedler vector of the first cut of :func:`~diffcut_lab.segmentation.cut_tree`. :func:`eigengap` is the
one rule that picks a number of clusters from it (:func:`~diffcut_lab.stopping.auto_n_segments`, the
automatic stopping rule and the spectral baseline of :func:`~diffcut_lab.baselines.segment_features` use
it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._eigen import eigengap  # the one eigengap rule; public here
from .errors import ParameterError
from .validation import check_int

__all__ = ["DEFAULT_EIGENPAIRS", "Spectrum", "describe_graph", "eigengap", "laplacian_spectrum"]


#: eigenpairs computed by default: enough for the eigengap rule's largest count (20 clusters, as in
#: :data:`~diffcut_lab.stopping.DEFAULT_MAX_CLUSTERS`) and the eigenvalue after it
DEFAULT_EIGENPAIRS = 21

_DENSE_MAX = 4096  # dense eigen solve up to this many nodes, Lanczos (ARPACK) above


@dataclass(frozen=True)
class Spectrum:
    """Smallest eigenpairs of the symmetric normalised Laplacian ``I - D^{-1/2} W D^{-1/2}`` of the graph
    a cut partitions.

    Attributes
    ----------
    values : numpy.ndarray
        ``(m,)`` eigenvalues, ascending.
    vectors : numpy.ndarray
        ``(N, m)`` generalized eigenvectors ``y = D^{-1/2} v``, sign fixed (largest magnitude entry
        positive, as the cut fixes it); ``vectors[:, 1]`` is the first cut's Fiedler vector.
    W : numpy.ndarray or scipy.sparse.csr_matrix
        ``(N, N)`` float64 weights of the Laplacian: the config's graph in its mode's self-loop convention
        (:func:`~diffcut_lab.segmentation.laplacian_weights`; CSR for a kNN graph).
    grid : tuple of int
        ``(h, w)`` of the nodes (node ``i`` is cell ``(i // w, i % w)``).
    mode : str
        The cut's mode whose convention ``W`` follows (``"fixed"``: no self-loops; ``"paper"``: kept).
    graph : str
        Which graph this is, in words (for titles), e.g. ``"cosine affinity, alpha 10, no self-loops"``.
    """

    values: np.ndarray
    vectors: np.ndarray
    W: Any
    grid: tuple[int, int]
    mode: str = "fixed"
    graph: str = ""

    @property
    def n_clusters(self) -> int:
        """Number of clusters by :func:`eigengap` (``min_clusters=1``, at most
        :data:`~diffcut_lab.stopping.DEFAULT_MAX_CLUSTERS`): what
        :func:`~diffcut_lab.stopping.auto_n_segments` says for the same graph."""
        from ._stop_rules import DEFAULT_MAX_CLUSTERS

        if self.values.size < 2:
            return 1
        return eigengap(self.values, min_clusters=1, max_clusters=DEFAULT_MAX_CLUSTERS)

    @property
    def largest_gap(self) -> int:
        """Index ``j >= 0`` of the eigenvalue after which the gap is largest: ``j + 1`` clusters
        (:attr:`n_clusters`; ``j = 0`` is one cluster)."""
        return self.n_clusters - 1

    def row(self, i: int) -> np.ndarray:
        """``(N,)`` weights of node ``i`` to every node (dense, float64)."""
        r = self.W[int(i)]
        return np.asarray(r.toarray() if sp.issparse(r) else r, dtype=np.float64).reshape(-1)

    def dense_W(self) -> np.ndarray:
        """``W`` as a dense ``(N, N)`` float64 array."""
        return self.W.toarray() if sp.issparse(self.W) else np.asarray(self.W, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values.tolist(), "grid": list(self.grid), "mode": self.mode, "graph": self.graph,
                "n_clusters": self.n_clusters, "largest_gap": self.largest_gap}  # fmt: skip


def describe_graph(config: Any, *, from_features: bool = True) -> str:
    """The graph ``config`` cuts, in words: what it is built from and its self-loop convention."""
    loops = "self-loops kept (paper mode)" if config.mode == "paper" else "no self-loops"
    if not from_features:
        return f"the given graph, {loops}"
    if config.affinity == "attention":
        what = f"attention walk, {config.walk_steps} step{'s' if config.walk_steps != 1 else ''}"
    else:
        what = f"cosine affinity, alpha {config.alpha:g}"
        if config.knn:
            what += f", kNN {config.knn}"
    return f"{what}, {loops}"


def _is_graph(x: Any) -> bool:
    return sp.issparse(x) or len(np.shape(x)) == 2


def _weights_and_grid(
    W_or_features: Any, grid: tuple[int, int] | None, config: Any, attention: Any
) -> tuple[Any, tuple[int, int]]:
    from . import segmentation as core

    x = W_or_features
    if not _is_graph(x):  # (C, h, w) features -> the graph the config cuts
        W = core.affinity_graph(x, config, attention)
        shape = np.shape(x)
        return core.laplacian_weights(W, config.mode), (int(shape[-2]), int(shape[-1]))
    weights = core.laplacian_weights(x, config.mode)
    n = weights.shape[0]
    if grid is None:
        side = int(np.sqrt(n))
        if side * side != n:
            raise ParameterError(f"an affinity of {n} nodes is not square: pass grid=(h, w)")
        grid = (side, side)
    if len(tuple(grid)) != 2 or int(grid[0]) * int(grid[1]) != n:
        raise ParameterError(f"grid {grid} does not have {n} cells")
    return weights, (int(grid[0]), int(grid[1]))


def _eigenpairs(weights: Any, d: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` smallest eigenpairs ``(values, v)`` of ``I - D^-1/2 W D^-1/2``, ascending."""
    import scipy.linalg
    import scipy.sparse.linalg

    from .threads import blas_threads

    n = weights.shape[0]
    s = np.divide(1.0, np.sqrt(d), out=np.zeros(n), where=d > 0)
    if n > _DENSE_MAX and m < n - 1:
        op = scipy.sparse.linalg.LinearOperator(
            (n, n), matvec=lambda v: s * np.asarray(weights @ (s * v)).reshape(-1), dtype=np.float64
        )
        v0 = np.cos(np.arange(n) * 0.7) + 1.1  # deterministic (ARPACK's default start is random)
        try:
            with blas_threads(1):
                mu, vecs = scipy.sparse.linalg.eigsh(
                    op, k=m, which="LA", v0=v0, tol=1e-10, maxiter=max(1000, 20 * n)
                )
            order = np.argsort(-mu)
            return 1.0 - mu[order], vecs[:, order]
        except (scipy.sparse.linalg.ArpackNoConvergence, scipy.sparse.linalg.ArpackError):
            pass
    dense = weights.toarray() if sp.issparse(weights) else weights
    lap = -(s[:, None] * dense * s[None, :])
    lap[np.diag_indices_from(lap)] += 1.0
    with blas_threads(1 if n <= 1024 else None):
        vals, vecs = scipy.linalg.eigh(lap, subset_by_index=[0, m - 1], driver="evr", check_finite=False)
    return vals, vecs


def _published_pairs(weights: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Paper mode: the ``m`` smallest eigenpairs ``(values, y)`` in the published numerics, the arithmetic
    of the paper cut's solve (``_paper_cut.published_eigh``: float32 ``eigh`` of
    ``D^-1/2 (D - W) D^-1/2``, ``y = D^-1/2 v``, sign fixed), for every eigenvector. Near-degenerate
    eigenvalues (several groups of about the same strength) make float32 and float64 eigenvectors differ,
    and the paper cut thresholds the float32 ones. ``None`` where ``eigh`` fails or a degree is 0."""
    import torch

    from .threads import small_work

    a = torch.as_tensor(np.ascontiguousarray(weights, dtype=np.float32))
    # the cut's thread settings: float32 results depend on them where eigenvalues nearly tie
    with small_work():
        d = torch.sum(a, dim=1)
        if bool((d <= 0).any()):
            return None
        s = 1 / d**0.5
        lap = torch.diag(d) - a
        try:
            vals, vecs = torch.linalg.eigh((s[:, None] * lap) * s[None, :])
        except RuntimeError:  # torch.linalg.LinAlgError
            return None
    ys = s[:, None] * vecs[:, :m]
    top = torch.argmax(torch.abs(ys), dim=0)
    ys = ys * torch.sign(ys[top, torch.arange(m)])[None, :]
    return vals[:m].double().numpy(), ys.double().numpy()


def _components_basis(weights: Any, d: np.ndarray, vecs: np.ndarray, vals: np.ndarray) -> None:
    """On a disconnected graph (fixed mode), make the eigenvalue-0 eigenvectors the basis the cut uses.

    Eigenvalue 0 repeats once per component and any basis of its eigenvectors is valid; the fixed-mode
    cut splits off the component of the largest volume (then size), so ``v1`` is chosen to be that
    component against the rest (``v0`` stays ``D^{1/2} 1``), then the other components in order.
    In place."""
    from ._eigen import components

    comp = components(weights)
    ncomp = int(comp.max()) + 1
    if ncomp < 2:
        return
    vol = np.bincount(comp, weights=d, minlength=ncomp)
    size = np.bincount(comp, minlength=ncomp)
    big = int(np.lexsort((-size, -vol))[0])  # the rule of _cut_attempt.fixed_attempt
    others = [c for c in range(ncomp) if c != big and vol[c] > 0]
    if vol[big] <= 0 or not others:
        return
    root = np.sqrt(d)
    cols = [root, root * (comp == big)] + [root * (comp == c) for c in others[:-1]]
    q, _ = np.linalg.qr(np.stack(cols, axis=1))
    r = min(q.shape[1], vecs.shape[1])
    vecs[:, :r] = q[:, :r]
    vals[:r] = 0.0


def laplacian_spectrum(
    W_or_features: Any,
    m: int = DEFAULT_EIGENPAIRS,
    grid: tuple[int, int] | None = None,
    *,
    config: Any = None,
    alpha: float | None = None,
    attention: Any = None,
) -> Spectrum:
    """The ``m`` smallest eigenpairs of the normalised Laplacian of the graph a cut partitions.

    Parameters
    ----------
    W_or_features : torch.Tensor, numpy.ndarray or scipy.sparse matrix
        ``(C, h, w)`` features: the graph is :func:`~diffcut_lab.segmentation.affinity_graph` of them for
        ``config``. Or an ``(N, N)`` graph (then ``grid`` gives its ``(h, w)`` layout; a square grid is
        assumed otherwise). Either way ``config.mode``'s self-loop convention applies
        (:func:`~diffcut_lab.segmentation.laplacian_weights`: fixed mode drops them, paper mode keeps them).
    m : int
        Number of eigenpairs (at least 2, at most ``N``).
    grid : (h, w), optional
        Layout of a graph's nodes.
    config : DiffCutConfig, optional
        The cut's settings (``alpha``, ``knn``, ``affinity``, ``walk_steps``, ``mode``); default
        ``DiffCutConfig()``.
    alpha : float, optional
        Shortcut for ``config.replace(alpha=alpha)``.
    attention : torch.Tensor, optional
        ``(N, N)`` self-attention probabilities of the layer (``affinity="attention"`` needs them).

    Returns
    -------
    Spectrum
        ``vectors[:, 1]`` is the Fiedler vector of the first cut of
        ``segmentation.cut_tree(features, config)`` (``tree.steps[0].fiedler``), up to its normalisation
        (and to float32 rounding in paper mode). On a disconnected graph (a kNN graph can be) the
        eigenvalue-0 eigenvectors are chosen as the fixed-mode cut splits: ``y1`` separates the component
        of the largest volume from the rest (unless ``min_size`` forbids that split: the cut then cuts the
        largest component spectrally, which no eigenvector of the whole graph shows). In paper mode the
        vectors are computed on the CPU in the published float32 numerics; a paper cut run on a GPU
        solves in float32 there, which can rotate ``y1`` where eigenvalues nearly tie.

    Examples
    --------
    >>> import torch
    >>> from diffcut_lab.config import DiffCutConfig
    >>> spec = laplacian_spectrum(torch.randn(16, 6, 6), 5, config=DiffCutConfig(alpha=5.0))
    >>> spec.vectors.shape, spec.grid
    ((36, 5), (6, 6))
    """
    from .config import DiffCutConfig

    cfg = config if config is not None else DiffCutConfig()
    if not isinstance(cfg, DiffCutConfig):
        raise ParameterError(f"config must be a DiffCutConfig, got {type(cfg).__name__}.")
    if alpha is not None:
        cfg = cfg.replace(alpha=alpha)
    check_int(m, "m", minimum=1)
    weights, grid = _weights_and_grid(W_or_features, grid, cfg, attention)
    graph = describe_graph(cfg, from_features=not _is_graph(W_or_features))
    n = weights.shape[0]
    m = int(min(max(m, 2), n))
    d = np.asarray(weights.sum(axis=1), dtype=np.float64).reshape(-1)
    if cfg.mode == "paper" and n <= _DENSE_MAX:
        pairs = _published_pairs(weights, m)
        if pairs is not None:
            vals, ys = pairs
            return Spectrum(np.clip(vals, 0, None), ys, weights, grid, cfg.mode, graph)
    vals, vecs = _eigenpairs(weights, d, m)
    vals, vecs = np.array(vals, dtype=np.float64), np.array(vecs, dtype=np.float64)
    if cfg.mode == "fixed":
        _components_basis(weights, d, vecs, vals)
    s = np.divide(1.0, np.sqrt(d), out=np.zeros(n), where=d > 0)
    ys = vecs * s[:, None]
    idx = np.abs(ys).argmax(axis=0)
    sign = np.sign(ys[idx, np.arange(m)])
    ys = ys * np.where(sign == 0, 1.0, sign)[None, :]
    return Spectrum(np.clip(vals, 0, None), ys, weights, grid, cfg.mode, graph)
