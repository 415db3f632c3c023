"""Recursive two-way normalized cut (Shi & Malik 2000) as DiffCut uses it, with every step recorded.

:func:`recursive_ncut` splits the patch graph in two along the (generalised) Fiedler vector, accepts the
split iff its NCut value is below ``tau`` and recurses depth first into both sides. It returns a
:class:`CutTree` holding the labels and one :class:`CutStep` per attempted cut (accepted or not), so the
recursion can be replayed step by step (``labels_at``), tabulated (``to_frame``) or re-thresholded at a
smaller tau without recomputation (``prune``).

Two modes:

``mode="paper"``
    The published algorithm, quirks included, so that its partitions are reproduced on the same affinity.
    See :func:`recursive_ncut` for the list of quirks.
``mode="fixed"`` (default)
    The same idea without the quirks: sub-graphs are plain index subsets without self-loops (no node is
    dropped, no single pixel is peeled off by its own diagonal weight), the threshold is the exact best
    over all cut points of the sorted Fiedler vector, disconnected sub-graphs are split along their
    components, the eigen solver is chosen by size (dense float64 / ARPACK) with a dense fallback, and
    ``min_size`` / ``max_depth`` are available. Sparse (kNN) affinities are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from . import _eigen
from ._cut_attempt import fixed_attempt
from ._eigen_torch import torch_attempt, uses_device_path
from ._paper_cut import paper_attempt
from .config import check_tau
from .errors import FeatureError, ParameterError
from .options import AUTO, AUTO_RULES, AUTO_TAU, MODES, SOLVERS

__all__ = ["CutStep", "CutTree", "recursive_ncut"]



@dataclass(frozen=True, eq=False)
class CutStep:
    """One attempted bipartition.

    Attributes
    ----------
    index : int
        Position in visiting order (depth first, positive side first).
    node : int
        Id of the tree node that was cut (root 0; children get the next two ids when a cut is accepted).
    parent : int or None
        Id of the parent node.
    depth : int
        Recursion depth (root 0).
    members : numpy.ndarray
        Flat pixel indices (ascending) of the sub-graph that was cut. In paper mode this excludes the
        nodes that the published node-dropping rule removed (see ``region``).
    fiedler : numpy.ndarray
        Sign-fixed Fiedler vector ``y = D^-1/2 v`` over ``members`` (float64).
    thresholds : numpy.ndarray
        Candidate thresholds, ascending (paper: 100 on ``linspace(0.99 min y, 0.99 max y)``; fixed: every
        midpoint between consecutive distinct sorted values allowed by ``min_size``).
    ncut_values : numpy.ndarray
        NCut value of each candidate (NaN where a candidate puts every node on one side, paper mode).
    threshold : float
        Chosen threshold; the positive side is ``fiedler > threshold``.
    ncut : float
        NCut value of the chosen split (NaN if undefined).
    accepted : bool
        ``ncut < tau`` (and the split is usable).
    children : tuple of int or None
        ``(positive child id, negative child id)`` when accepted.
    region : numpy.ndarray
        All pixels of the node (``members`` plus, in paper mode, the dropped ones).
    positive : numpy.ndarray
        Boolean mask over ``members``: the positive side of the chosen split.
    solver : str
        How the Fiedler vector was obtained ("dense", "eigsh", "eigsh->dense", "torch32", "torch64",
        "torch64-lanczos", "components", "none").
    reason : str
        Why the cut was accepted or rejected, in words.
    """

    index: int
    node: int
    parent: int | None
    depth: int
    members: np.ndarray
    fiedler: np.ndarray
    thresholds: np.ndarray
    ncut_values: np.ndarray
    threshold: float
    ncut: float
    accepted: bool
    children: tuple[int, int] | None
    region: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))
    positive: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, bool))
    solver: str = "none"
    reason: str = ""

    @property
    def size(self) -> int:
        """Number of nodes in the cut sub-graph."""
        return int(self.members.shape[0])

    def positive_members(self) -> np.ndarray:
        """Flat pixel indices on the positive side (the positive child's region when accepted)."""
        return self.members[self.positive]


def _relabel(codes: np.ndarray) -> np.ndarray:
    """Renumber codes 0..K-1 by the raster order of each segment's first pixel."""
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[inverse.reshape(-1)]


class CutTree:
    """Result of :func:`recursive_ncut`: labels plus every attempted cut.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(h, w)`` int64 (or ``(N,)`` without a grid), segments numbered 0..K-1 in the raster order of
        their first pixel.
    steps : list of CutStep
        Every attempted cut, in visiting order.
    grid : tuple of int or None
    tau : float
    mode : str
    n_nodes : int
        Number of pixels N.
    params : dict
        The other settings (min_size, max_depth, solver).
    """

    def __init__(
        self,
        steps: list[CutStep],
        n_nodes: int,
        *,
        grid: tuple[int, int] | None,
        tau: float,
        mode: str,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.steps = steps
        self.n_nodes = int(n_nodes)
        self.grid = grid
        self.tau = float(tau)
        self.mode = mode
        self.params = dict(params or {})
        self._flat = self._flat_labels(len(steps))
        self.labels = self._shape(self._flat)

    @classmethod
    def from_partition(
        cls, labels: Any, *, grid: tuple[int, int] | None, tau: float, mode: str, params: dict[str, Any]
    ) -> CutTree:
        """A partition found at once (a K-way cut), as a tree without steps: ``labels`` (renumbered by raster
        order of first pixels) are the tree's, ``labels_at(0)`` is them too, and ``params`` records how they
        were found (``params["partition"] == "kway"``)."""
        flat = _relabel(np.asarray(labels, dtype=np.int64).reshape(-1))
        tree = cls([], flat.shape[0], grid=grid, tau=tau, mode=mode, params=params)
        tree._flat, tree.labels = flat, tree._shape(flat)
        return tree

    def _flat_labels(self, k: int) -> np.ndarray:
        codes = np.zeros(self.n_nodes, dtype=np.int64)
        nxt = 1
        for step in self.steps[:k]:
            if step.accepted:
                codes[step.positive_members()] = nxt
                nxt += 1
        return _relabel(codes)

    def _shape(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(self.grid) if self.grid is not None else flat

    @property
    def n_segments(self) -> int:
        """Number of segments K."""
        return int(self._flat.max()) + 1 if self.n_nodes else 0

    @property
    def leaves(self) -> list[np.ndarray]:
        """Flat pixel indices of each segment, ``leaves[k]`` = pixels with label ``k``."""
        order = np.argsort(self._flat, kind="stable")
        bounds = np.searchsorted(self._flat[order], np.arange(1, self.n_segments))
        return np.split(order, bounds)

    @property
    def accepted_steps(self) -> list[CutStep]:
        """The accepted cuts, in visiting order."""
        return [s for s in self.steps if s.accepted]

    def labels_at(self, k: int) -> np.ndarray:
        """Partition after the first ``k`` steps (0 = one segment), numbered like :attr:`labels`."""
        if not 0 <= int(k) <= len(self.steps):
            raise ParameterError(f"k must be between 0 and {len(self.steps)} (the number of steps), got {k}.")
        return self.labels.copy() if int(k) == len(self.steps) else self._shape(self._flat_labels(int(k)))

    def published_labels(self) -> np.ndarray:
        """The partition of :attr:`labels`, numbered as the published code numbers it.

        The published ``assemble_clusters`` adds the accepted cuts' positive-side masks, in visiting order,
        with weights ``1, max + 1, ...`` and numbers the segments by increasing sum. Each weight exceeds
        every sum before it, so the order is lexicographic in the masks read from the last to the first;
        it is computed so here, with no float32 overflow (the published sums overflow after about 127
        accepted cuts). Segment ids matter after PAMR: its 3 x 3 median filter runs on the ids.
        """
        accepted = self.accepted_steps
        if not accepted:
            return self._shape(np.zeros(self.n_nodes, np.int64))
        member = np.zeros((len(accepted), self.n_nodes), bool)
        for i, step in enumerate(accepted):
            member[i, step.positive_members()] = True
        _, inverse = np.unique(member[::-1].T, axis=0, return_inverse=True)
        return self._shape(inverse.reshape(-1).astype(np.int64))

    def prune(self, tau: float) -> CutTree:
        """The tree for a smaller ``tau``, without recomputation.

        A node's sub-graph, Fiedler vector and NCut value depend only on its ancestors' cuts, never on
        tau, so rejecting every step with ``ncut >= tau`` and dropping the steps below it gives exactly the
        tree ``recursive_ncut`` computes at that tau (same steps, node ids, labels) -- in both modes.
        """
        tau = check_tau(tau)
        if self.params.get("partition") == "kway":
            raise ParameterError("a K-way partition has no steps to prune; cut again with the other setting.")
        if tau > self.tau:
            raise ParameterError(
                f"prune can only lower tau (this tree was computed at tau={self.tau}, asked {tau}); "
                "recompute with recursive_ncut at the larger tau, then prune."
            )
        mapping: dict[int, int] = {0: 0}
        out: list[CutStep] = []
        nxt = 1
        for s in self.steps:
            if s.node not in mapping:
                continue
            acc = bool(s.accepted and s.ncut < tau)
            children = None
            reason = s.reason
            if acc:
                assert s.children is not None
                mapping[s.children[0]], mapping[s.children[1]] = nxt, nxt + 1
                children = (nxt, nxt + 1)
                nxt += 2
            elif s.accepted:
                reason = _reason_rejected(s.ncut, tau)
            out.append(
                replace(
                    s,
                    index=len(out),
                    node=mapping[s.node],
                    parent=None if s.parent is None else mapping[s.parent],
                    accepted=acc,
                    children=children,
                    reason=reason,
                )
            )
        # a pruned automatic tree is a tree of its numeric tau (the automatic decisions stay in the steps)
        params = {k: v for k, v in self.params.items() if k not in ("tau", "auto_reason")}
        return CutTree(out, self.n_nodes, grid=self.grid, tau=tau, mode=self.mode, params=params)

    def to_frame(self) -> Any:
        """One row per step: index, node, parent, depth, size, region_size, dropped, threshold, ncut,
        accepted, positive/negative child ids and sizes, n_candidates, solver, reason."""
        import pandas as pd

        rows = []
        for s in self.steps:
            npos = int(s.positive.sum())
            rows.append(
                {
                    "index": s.index,
                    "node": s.node,
                    "parent": s.parent,
                    "depth": s.depth,
                    "size": s.size,
                    "region_size": int(s.region.shape[0]),
                    "dropped": int(s.region.shape[0] - s.size),
                    "threshold": s.threshold,
                    "ncut": s.ncut,
                    "accepted": s.accepted,
                    "positive_child": s.children[0] if s.children else None,
                    "negative_child": s.children[1] if s.children else None,
                    "positive_size": npos,
                    "negative_size": s.size - npos,
                    "n_candidates": int(s.thresholds.shape[0]),
                    "solver": s.solver,
                    "reason": s.reason,
                }
            )
        columns = ["index", "node", "parent", "depth", "size", "region_size", "dropped", "threshold", "ncut"]
        columns += ["accepted", "positive_child", "negative_child", "positive_size", "negative_size"]
        columns += ["n_candidates", "solver", "reason"]
        return pd.DataFrame(rows, columns=columns)

    def __repr__(self) -> str:
        acc = sum(s.accepted for s in self.steps)
        return (
            f"CutTree(mode={self.mode!r}, tau={self.tau}, n_segments={self.n_segments}, "
            f"steps={len(self.steps)} ({acc} accepted), grid={self.grid})"
        )


# ----------------------------------------------------------------------------------------------- checks


def _reason_rejected(ncut: float, tau: float) -> str:
    return f"rejected: ncut {ncut:.4g} >= tau {tau:.4g}" if np.isfinite(ncut) else "rejected: ncut undefined"


def _as_graph(w: Any, mode: str, solver: str = "auto") -> tuple[Any, int]:
    """Validate ``w``; return (graph, N).

    The graph is a torch float32 dense matrix on ``w``'s device for paper mode; for fixed mode a dense
    torch matrix on ``w``'s device where the device path applies (:func:`~diffcut_lab._eigen_torch.uses_device_path`),
    else numpy/scipy on the host.
    """
    if isinstance(w, torch.Tensor) and w.layout != torch.strided:
        w = w.to_sparse_coo().coalesce() if w.layout != torch.sparse_coo else w.coalesce()
        idx = w.indices().cpu().numpy()
        w = sp.csr_matrix((w.values().cpu().double().numpy(), (idx[0], idx[1])), shape=tuple(w.shape))
    if sp.issparse(w):
        if mode == "paper":
            raise ParameterError(
                "mode='paper' needs the dense affinity (its node-dropping rule reads the zero entries of every "
                "row); pass a dense W, or use mode='fixed' with a sparse (kNN) affinity."
            )
        g = sp.csr_matrix(w, dtype=np.float64)
        shape = g.shape
        data = g.data
    else:
        if isinstance(w, torch.Tensor):
            arr = w.detach()
        else:
            try:
                arr = torch.as_tensor(np.asarray(w))
            except (TypeError, ValueError) as exc:
                raise ParameterError(f"W of type {type(w).__name__} is not an (N, N) array.") from exc
        shape = tuple(arr.shape)
        if arr.is_complex() or not (arr.is_floating_point() or arr.dtype in (torch.int32, torch.int64)):
            raise ParameterError(f"W has dtype {arr.dtype}; expected real numbers.")
        g = arr
        data = None
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ParameterError(f"W must be a square (N, N) affinity matrix, got shape {shape}.")
    if shape[0] == 0:
        raise FeatureError("W is empty (N = 0): there are no pixels to segment.")
    if data is None:
        finite = bool(torch.isfinite(g).all())
        negative = bool((g < 0).any()) if finite else False
    else:
        finite = bool(np.isfinite(data).all())
        negative = bool((data < 0).any()) if finite else False
    if not finite:
        raise FeatureError("W contains NaN or Inf; build it from finite features (see affinity()).")
    if negative:
        raise ParameterError("W has negative entries; NCut needs non-negative affinities (see affinity()).")
    if data is None:
        big = shape[0] > 4096  # sub-graphs above this size stay float32 on the host (memory)
        if mode == "paper":
            g = g.to(torch.float32).contiguous()
        elif uses_device_path(g, solver):
            g = g.to(torch.float32 if big else torch.float64).contiguous()
        else:
            g = g.cpu().numpy().astype(np.float32 if big else np.float64, copy=False)
        t = torch.as_tensor(g)
        # exact symmetry (what affinity() builds) is one comparison; allclose is ~9x that at N = 1024
        sym = bool(torch.equal(t, t.T)) or bool(torch.allclose(t, t.T, rtol=1e-5, atol=1e-7))
    else:
        diff = g - g.T
        sym = diff.nnz == 0 or float(np.abs(diff.data).max()) <= 1e-6 * max(float(np.abs(data).max()), 1e-30)
    if not sym:
        raise ParameterError(
            "W must be symmetric (an undirected affinity); symmetrise it, e.g. (W + W.T) / 2."
        )
    return g, int(shape[0])


# ------------------------------------------------------------------------------------------ recursion


def recursive_ncut(
    W: Any,
    tau: float | str = 0.5,
    *,
    grid: tuple[int, int] | None = None,
    mode: str = "fixed",
    min_size: int = 1,
    max_depth: int | None = None,
    solver: str = "auto",
    auto_rule: str = "dynamic",
) -> CutTree:
    """Recursive two-way normalized cut of an affinity graph, every attempted cut recorded.

    Parameters
    ----------
    W : torch.Tensor or numpy.ndarray or scipy.sparse matrix
        ``(N, N)`` symmetric non-negative affinity, e.g. from :func:`diffcut_lab.affinity`. Sparse input
        (``affinity(..., knn=k)``) is accepted in ``mode="fixed"``.
    tau : float or "auto", default 0.5
        A cut is accepted iff its NCut value is ``< tau`` (strict). Larger tau, more segments. ``"auto"``:
        ``auto_rule`` decides, below NCut :data:`~diffcut_lab.options.AUTO_TAU` (``tree.params["tau"]``
        is then ``"auto"``, and every step's reason says why it was cut or not).
    grid : tuple of int, optional
        ``(h, w)`` with ``h * w == N``; labels are then ``(h, w)``.
    mode : {"fixed", "paper"}, default "fixed"
        See below.
    min_size : int, default 1
        Fixed mode: both sides of an accepted cut have at least this many pixels (the threshold search
        only considers such cuts). Paper mode: must stay 1 (the published code has no minimum).
    max_depth : int, optional
        No cut is attempted at depth ``>= max_depth`` (both modes; None = unlimited, as published).
    solver : {"auto", "dense", "eigsh", "torch32", "torch64"}, default "auto"
        Fixed mode: "dense" float64 LAPACK, "eigsh" ARPACK Lanczos (one BLAS thread, warm-started from the
        parent's Fiedler vector), "auto" = dense up to 256 nodes. Paper mode: "torch32" = always the
        published float32 ``torch.linalg.eigh``; "auto" = that up to 384 nodes and, above, a float64
        Lanczos solve whose cut is kept only when it is certified to equal the one float32 ``eigh`` would
        give (enough eigengap and no node or candidate within the float32 error of the decision),
        otherwise the published solve; "eigsh" / "dense" = that solver without the certificate.
        Either mode, on an accelerator (``W`` on a CUDA device): "auto" keeps the graph there -- fixed
        mode solves with a dense float64 ``torch.linalg.eigh`` up to
        :data:`~diffcut_lab._eigen_torch.DEVICE_DENSE_MAX` nodes ("torch64"; ask for it on the CPU with
        ``solver="torch64"``: the same partitions as "dense", slower there), paper mode with the published
        float32 one at every size.
    auto_rule : {"dynamic", "stable"}, default "dynamic"
        With ``tau="auto"``: ``"dynamic"`` accepts a cut iff its NCut is below a threshold read from the
        spectrum of the region being cut (:func:`~diffcut_lab.stopping.dynamic_accept`; ``tree.tau`` is
        :data:`~diffcut_lab.options.AUTO_TAU`); ``"stable"`` cuts at that upper tau, then keeps the tau
        whose partition is stable over the widest range (:func:`~diffcut_lab.stopping.stable_tau`;
        ``tree.tau`` is the one chosen, ``tree.params["auto_reason"]`` says why).

    Returns
    -------
    CutTree

    Notes
    -----
    ``mode="paper"`` follows the published code (Couairon et al. 2024, ``recursive_normalized_cut.py``),
    including its quirks:

    1. Sub-graphs are formed by masking: after a cut, the explored ("painted") pixels get zero affinity
       among themselves, and at depth > 0 every node whose row of the masked matrix holds any zero is
       dropped. Equivalently: at depth > 0 the sub-graph is the node's region minus every pixel whose row
       of ``W`` contains an exact float32 zero (the globally least similar pair is exactly 0 after min-max
       normalisation, and ``x ** 10`` underflows to 0 below about 4e-5). Dropped pixels are never cut
       again: they stay with the negative side (``CutStep.region`` vs ``members``).
    2. The Fiedler vector is ``D^-1/2 v`` with ``v`` eigenvector index 1 of ``D^-1/2 (D - W) D^-1/2``, its
       largest-magnitude entry made positive; float32.
    3. Only 100 thresholds on ``linspace(0.99 min y, 0.99 max y)`` are tried, scored by the discrete
       Shi-Malik NCut with ``b = k / (1 - k)``; the partition is the ``np.argmin`` one (the first minimum;
       the first NaN if a candidate puts every node on one side) while the value compared with tau is
       Python's ``min`` of the list (NaN if the first candidate is NaN), as published (gotcha 5).
    4. Depth first, positive side first, then the complement (which includes the dropped pixels).
    5. Labels are the partition induced by the accepted masks (the published label assembly overflows
       float32 after about 127 accepted cuts; that is not reproduced).
    6. Where the published code would crash (``eigh`` failure, a zero degree) or recurse forever (an
       accepted cut with an empty side), the step is recorded as rejected with the reason.

    ``mode="fixed"`` differs: sub-graphs are plain index subsets (no dropping) without self-loops (the
    diagonal of ``W`` is ignored: it inflates the volume of tiny regions, so on noisy features single
    pixels would be split off with NCut below 0.5; without it a one-pixel side costs NCut >= 1), the
    threshold is the exact minimiser over all cut points of the sorted Fiedler vector, disconnected
    sub-graphs are split along a component (NCut 0), the eigen solver is float64, and ``min_size`` /
    ``max_depth`` apply.

    ``CutTree.prune(tau2)`` for ``tau2 <= tau`` equals a fresh run at ``tau2`` in both modes (a node's
    computation never depends on tau).

    Examples
    --------
    >>> import torch
    >>> from diffcut_lab import affinity
    >>> W = affinity(torch.randn(32, 8, 8))
    >>> tree = recursive_ncut(W, tau=0.5, grid=(8, 8))
    >>> tree.labels.shape
    (8, 8)
    """
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, got {mode!r}.")
    allowed = tuple(s for s in SOLVERS if s != ("torch64" if mode == "paper" else "torch32"))
    if solver not in allowed:
        raise ParameterError(f"solver must be one of {allowed} in mode={mode!r}, got {solver!r}.")
    tau = check_tau(tau, auto=True)
    auto = tau == AUTO
    if auto_rule not in AUTO_RULES:
        raise ParameterError(f"auto_rule must be one of {AUTO_RULES}, got {auto_rule!r}.")
    run_tau = AUTO_TAU if auto else float(tau)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ParameterError(f"min_size must be an integer >= 1, got {min_size!r}.")
    if mode == "paper" and min_size != 1:
        raise ParameterError("mode='paper' has no minimum segment size (as published); use mode='fixed'.")
    if max_depth is not None and (not isinstance(max_depth, (int, np.integer)) or max_depth < 0):
        raise ParameterError(f"max_depth must be None or an integer >= 0, got {max_depth!r}.")
    g, n = _as_graph(W, mode, solver)
    if grid is not None:
        pair = tuple(grid) if isinstance(grid, (tuple, list, torch.Size, np.ndarray)) else None
        if pair is None or len(pair) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1 for v in pair
        ):
            raise ParameterError(
                f"grid must be (h, w), two integers >= 1 with h * w = N = {n} nodes; got {grid!r}."
            )
        if int(pair[0]) * int(pair[1]) != n:
            raise ParameterError(
                f"grid {grid!r} does not match N = {n} nodes; expected (h, w) with h * w = N."
            )
        grid = (int(pair[0]), int(pair[1]))
    zero_rows = (g == 0).any(dim=1).cpu().numpy() if mode == "paper" else None
    steps: list[CutStep] = []
    # stack entries: node id, parent id, depth, region, (parent members, parent fiedler) for warm starts
    stack: list[tuple[int, int | None, int, np.ndarray, tuple | None]] = [(0, None, 0, np.arange(n), None)]
    nxt = 1
    while stack:
        node, parent, depth, region, warm_src = stack.pop()
        if max_depth is not None and depth >= max_depth:
            continue
        if mode == "paper":
            members = region if depth == 0 else region[~zero_rows[region]]
            if members.shape[0] <= 1:
                continue
        else:
            members = region
            if members.shape[0] < max(2, 2 * min_size):
                continue
        warm = None
        if warm_src is not None:
            pm, py = warm_src
            warm = py[np.searchsorted(pm, members)]
        if mode == "paper":
            res = paper_attempt(g, members, solver, warm)
        elif isinstance(g, torch.Tensor):
            res = torch_attempt(g, members, min_size)
        else:
            res = fixed_attempt(g, members, solver, warm, min_size)
        y = res.fiedler
        positive = res.positive if res.positive is not None else np.zeros(members.shape[0], bool)
        ncut = float(res.ncut)
        accepted = res.reject is None and bool(ncut < run_tau)
        npos = int(positive.sum())
        if accepted and (npos == 0 or npos == members.shape[0]):
            accepted = False
            reason = "rejected: one side is empty (the published code would recurse without end)"
        elif res.reject is not None:
            reason = "rejected: " + res.reject
        elif accepted and auto and auto_rule == "dynamic":
            accepted, reason = _dynamic(g, members, res, positive, depth, n)
        elif accepted:
            reason = f"accepted: ncut {ncut:.4g} < tau {run_tau:.4g}"
        else:
            reason = _reason_rejected(ncut, run_tau)
        if res.note:
            reason += f" [{res.note}]"
        children = None
        if accepted:
            children = (nxt, nxt + 1)
            pos_region = members[positive]
            neg_region = np.setdiff1d(region, pos_region, assume_unique=True)
            src = (members, y) if y.shape[0] == members.shape[0] else None
            stack.append((nxt + 1, node, depth + 1, neg_region, src))
            stack.append((nxt, node, depth + 1, pos_region, src))
            nxt += 2
        steps.append(
            CutStep(
                index=len(steps),
                node=node,
                parent=parent,
                depth=depth,
                members=members,
                fiedler=y,
                thresholds=res.thresholds,
                ncut_values=res.ncut_values,
                threshold=float(res.threshold),
                ncut=ncut,
                accepted=accepted,
                children=children,
                region=region,
                positive=positive,
                solver=res.solver,
                reason=reason,
            )
        )
    params = {"min_size": int(min_size), "max_depth": max_depth, "solver": solver}
    tree = CutTree(steps, n, grid=grid, tau=run_tau, mode=mode, params=params)
    if auto and auto_rule == "stable":
        from .stopping import stable_tau

        chosen, why = stable_tau(tree)
        tree = tree.prune(chosen)
        tree.params["auto_reason"] = why
    if auto:
        tree.params.update(tau=AUTO, auto_rule=auto_rule)
    return tree


def _dynamic(g: Any, members: np.ndarray, res: Any, positive: np.ndarray, depth: int, n: int) -> tuple[bool, str]:
    """The automatic per-step decision (``tau="auto"``, ``auto_rule="dynamic"``) on the sub-graph's weights
    without self-loops, in float64 on the host."""
    from ._cut_attempt import _subgraph
    from .stopping import dynamic_accept

    if isinstance(g, torch.Tensor):
        idx = torch.as_tensor(members, device=g.device)
        sub = g[idx][:, idx].to(torch.float64).fill_diagonal_(0.0).cpu().numpy()
    else:
        sub = _subgraph(g, members)
    return dynamic_accept(
        sub, _eigen.degrees(sub), res.fiedler, res.thresholds, res.ncut_values, float(res.ncut), depth=depth,
        n_total=n, positive=positive,
    )  # fmt: skip
