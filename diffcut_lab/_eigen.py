"""Fiedler vectors and threshold sweeps for :mod:`diffcut_lab.ncut` (private helpers).

Graphs are given as a dense ``numpy`` array or a ``scipy.sparse`` CSR matrix (the sub-graph of one node).
The Fiedler vector is the generalised one, ``y = D^-1/2 v`` with ``v`` the eigenvector of the second
smallest eigenvalue of ``D^-1/2 (D - W) D^-1/2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.csgraph
import scipy.sparse.linalg

from .threads import blas_threads
from .validation import check_int

#: ``solver="auto"`` (fixed mode, and the K-way spectral start): a dense float64 ``eigh`` up to this many
#: nodes, Lanczos (ARPACK) above
DENSE_MAX = 256
#: paper mode's ``solver="auto"`` on the host: the published float32 ``eigh`` up to this many nodes, a
#: certified float64 Lanczos solve above (:func:`diffcut_lab._paper_cut.paper_attempt`)
PAPER_DENSE_MAX = 384
#: the automatic stopping rule's eigenvalues (:func:`diffcut_lab.stopping.laplacian_eigenvalues`): a dense
#: solve up to this many nodes, Lanczos above
EIGVALS_DENSE_MAX = 512
#: precision of the host graph in the fixed mode: float64 up to this many nodes, float32 above (memory: a
#: 16k-node float64 sub-graph is 2 GB)
FLOAT64_MAX = 4096


@dataclass
class Fiedler:
    """Result of one eigen solve: ``y = D^-1/2 v`` (sign fixed), eigenvalues ``lam2 <= lam3``, solver."""

    y: np.ndarray
    lam2: float
    lam3: float
    solver: str


def eigengap(values: Any, *, min_clusters: int = 1, max_clusters: int | None = None) -> int:
    """The number of clusters ``k`` in ``[min_clusters, max_clusters]`` with the largest eigengap
    ``values[k] - values[k - 1]`` (eigenvalues ascending, 0-based): ``k`` small eigenvalues, then a jump.

    The one eigengap rule of the package (:func:`diffcut_lab.spectrum.eigengap` is this function): the
    eigenvector views, :func:`~diffcut_lab.stopping.auto_n_segments`, the automatic stopping rule and the
    spectral baseline all count clusters with it. ``k = 1`` (the largest gap follows the first eigenvalue)
    means one group: no structure to cut.

    Examples
    --------
    >>> eigengap([0.0, 0.01, 0.02, 0.9, 0.95])
    3
    >>> eigengap([0.0, 0.8, 0.85, 0.9])
    1
    """
    v = np.asarray(values, dtype=np.float64)
    for name, value in (("min_clusters", min_clusters), ("max_clusters", max_clusters)):
        if value is not None:
            check_int(value, name, minimum=1)
    lo = int(min_clusters)
    hi = v.size - 1 if max_clusters is None else min(int(max_clusters), v.size - 1)
    if hi < lo:
        return max(1, min(lo, v.size))
    gaps = v[lo : hi + 1] - v[lo - 1 : hi]
    return int(lo + np.argmax(gaps))


def degrees(g: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """Row sums in float64."""
    return np.asarray(g.sum(axis=1), dtype=np.float64).reshape(-1)


def fix_sign(y: np.ndarray) -> np.ndarray:
    """Make the entry of largest magnitude positive (first such entry on ties), as the published code."""
    i = int(np.argmax(np.abs(y)))
    return -y if y[i] < 0 else y


def components(g: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """Connected-component label of every node (edges are positive off-diagonal weights)."""
    if sp.issparse(g):
        return scipy.sparse.csgraph.connected_components(g, directed=False)[1]
    # dense graphs are almost always complete: a breadth-first sweep with row blocks settles it quickly
    if connected(g):
        return np.zeros(g.shape[0], dtype=np.int64)
    return scipy.sparse.csgraph.connected_components(sp.csr_matrix(g > 0), directed=False)[1]


def connected(g: Any) -> bool:
    """Whether the dense graph ``g`` (a numpy array or a torch tensor on any device; edges are positive
    off-diagonal weights) is connected: a breadth-first sweep from node 0, one block of rows a level."""
    n = g.shape[0]
    reach = g[0] > 0
    reach[0] = True
    count = int(reach.sum())
    while count < n:
        grown = reach | (g[reach] > 0).any(0)
        new = int(grown.sum())
        if new == count:
            return False
        reach, count = grown, new
    return True


def _dense_fiedler(g: np.ndarray, d: np.ndarray) -> Fiedler:
    s = 1.0 / np.sqrt(d)
    m = -(s[:, None] * g * s[None, :])
    m[np.diag_indices_from(m)] += 1.0
    k = min(2, g.shape[0] - 1)
    # Small problems run fastest on one BLAS thread; more threads spin-wait against torch's (4-10x slower).
    limits = 1 if g.shape[0] <= 4 * DENSE_MAX else None
    with blas_threads(limits):
        vals, vecs = scipy.linalg.eigh(m, subset_by_index=[0, k], driver="evr", check_finite=False)
    lam3 = float(vals[2]) if k == 2 else float("inf")
    return Fiedler(fix_sign(s * vecs[:, 1]), float(vals[1]), lam3, "dense")


def _lanczos_fiedler(g: np.ndarray | sp.csr_matrix, d: np.ndarray, warm: np.ndarray | None) -> Fiedler:
    n = g.shape[0]
    s = 1.0 / np.sqrt(d)
    u = np.sqrt(d)
    u /= np.linalg.norm(u)
    dtype = np.float64

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=dtype).reshape(-1)
        return s * np.asarray(g @ (s * x), dtype=dtype).reshape(-1) - u * (u @ x)

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=dtype)
    v0 = None
    if warm is not None and warm.shape[0] == n and np.all(np.isfinite(warm)):
        v0 = np.sqrt(d) * warm
        v0 -= u * (u @ v0)
        if np.linalg.norm(v0) < 1e-8 * max(np.linalg.norm(warm), 1e-300):
            v0 = None
    if v0 is None:  # deterministic start (ARPACK's default is random)
        v0 = np.cos(np.arange(n) * 0.7) + 0.1
        v0 -= u * (u @ v0)
    with blas_threads(1):
        vals, vecs = scipy.sparse.linalg.eigsh(
            op, k=2, which="LA", v0=v0, tol=1e-10, maxiter=max(1000, 10 * n)
        )
    order = np.argsort(-vals)
    vals, vecs = vals[order], vecs[:, order]
    return Fiedler(fix_sign(s * vecs[:, 0]), float(1 - vals[0]), float(1 - vals[1]), "eigsh")


def fiedler(
    g: np.ndarray | sp.csr_matrix, d: np.ndarray, solver: str = "auto", warm: np.ndarray | None = None
) -> Fiedler:
    """Fiedler vector of a connected graph with positive degrees.

    ``solver``: "dense" (float64 LAPACK, all of the graph densified), "eigsh" (ARPACK Lanczos on the
    deflated normalised adjacency, one BLAS thread, warm-started from ``warm`` = an estimate of ``y``), or
    "auto" (dense up to :data:`DENSE_MAX` nodes). Non-convergence of the iterative solver falls back to the
    dense one (recorded as ``"eigsh->dense"``).
    """
    n = g.shape[0]
    if solver == "dense" or (solver == "auto" and n <= DENSE_MAX) or n <= 3:
        return _dense_fiedler(g.toarray() if sp.issparse(g) else np.asarray(g, dtype=np.float64), d)
    try:
        return _lanczos_fiedler(g, d, warm)
    except (scipy.sparse.linalg.ArpackNoConvergence, scipy.sparse.linalg.ArpackError):
        f = _dense_fiedler(g.toarray() if sp.issparse(g) else np.asarray(g, dtype=np.float64), d)
        f.solver = "eigsh->dense"
        return f


def below_rank_sums(g: np.ndarray | sp.csr_matrix, rank: np.ndarray, block: int = 1024) -> np.ndarray:
    """``t[i] = sum_j g[i, j] * (rank[j] < rank[i])``: each node's weight towards nodes ranked before it."""
    if sp.issparse(g):
        coo = g.tocoo()
        w = coo.data * (rank[coo.col] < rank[coo.row])
        return np.bincount(coo.row, weights=w, minlength=g.shape[0])
    out = np.empty(g.shape[0])
    for start in range(0, g.shape[0], block):
        rows = slice(start, start + block)
        out[rows] = np.where(rank[None, :] < rank[rows, None], g[rows], 0).sum(axis=1)
    return out


def sweep(
    g: np.ndarray | sp.csr_matrix, d: np.ndarray, y: np.ndarray, min_size: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Exact NCut of every threshold between distinct sorted values of ``y``.

    The positive side of a threshold ``t`` is ``{i : y[i] > t}``. Returns ``(thresholds, ncut)``, thresholds
    ascending (midpoints between consecutive distinct values), restricted to cuts whose two sides both have
    at least ``min_size`` nodes. Cost: one sort and one pass over the edges (cumulative sums), whatever the
    number of candidates.
    """
    n = y.shape[0]
    order = np.argsort(-y, kind="stable")  # positive side = the first p nodes in this order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    t = below_rank_sums(g, rank)
    diag = g.diagonal() if sp.issparse(g) else np.diagonal(g)
    diag = np.asarray(diag, dtype=np.float64)
    inner = np.cumsum(2.0 * t[order] + diag[order])  # weight inside the top-p set (both directions)
    vol_p = np.cumsum(d[order])
    total = vol_p[-1]
    p = np.arange(1, n)  # sizes of the positive side
    vp = vol_p[:-1]
    vn = total - vp
    cut = np.maximum(vp - inner[:-1], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        nc = cut / vp + cut / vn
    nc = np.where(cut <= 0, 0.0, nc)
    ys = y[order]
    valid = (ys[:-1] > ys[1:]) & (p >= min_size) & (n - p >= min_size)
    thr = 0.5 * (ys[:-1] + ys[1:])
    thr = np.where(thr >= ys[:-1], ys[1:], thr)  # rounding: keep ys[p] <= thr < ys[p - 1]
    thr, nc = thr[valid][::-1], nc[valid][::-1]
    return thr, nc
