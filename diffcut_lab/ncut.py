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

Layout: this module holds the recursion (:func:`recursive_ncut`); the record it returns
(:class:`CutStep`, :class:`CutTree`) is in ``_ncut_tree``, the checks of its settings and graph in
``_ncut_graph``, one cut attempt per mode in ``_cut_attempt`` / ``_eigen_torch`` / ``_paper_cut``, and the
automatic stopping rules in ``_stop_rules`` (public in :mod:`diffcut_lab.stopping`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _eigen
from ._cut_attempt import Attempt, fixed_attempt, subgraph
from ._eigen_torch import torch_attempt
from ._ncut_graph import check_grid, check_settings, prepare_graph
from ._ncut_tree import CutStep, CutTree, reason_rejected
from ._paper_cut import paper_attempt
from ._stop_rules import dynamic_accept, stable_tau
from .options import AUTO

__all__ = ["CutStep", "CutTree", "recursive_ncut"]


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
        parent's Fiedler vector), "auto" = dense up to :data:`~diffcut_lab._eigen.DENSE_MAX` nodes.
        Paper mode: "torch32" = always the published float32 ``torch.linalg.eigh``; "auto" = that up to
        :data:`~diffcut_lab._eigen.PAPER_DENSE_MAX` nodes and, above, a float64 Lanczos solve whose cut
        is kept only when it is certified to equal the one float32 ``eigh`` would give (enough eigengap
        and no node or candidate within the float32 error of the decision),
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
    run_tau, auto = check_settings(
        tau, mode=mode, solver=solver, min_size=min_size, max_depth=max_depth, auto_rule=auto_rule
    )
    g, n = prepare_graph(W, mode, solver)
    grid = check_grid(grid, n)
    rule = _Rule(mode, solver, int(min_size), max_depth, run_tau, dynamic=auto and auto_rule == "dynamic")
    steps = _recurse(g, n, rule)
    params = {"min_size": int(min_size), "max_depth": max_depth, "solver": solver}
    tree = CutTree(steps, n, grid=grid, tau=run_tau, mode=mode, params=params)
    if auto and auto_rule == "stable":
        chosen, why = stable_tau(tree)
        tree = tree.prune(chosen)
        tree.params["auto_reason"] = why
    if auto:
        tree.params.update(tau=AUTO, auto_rule=auto_rule)
    return tree


@dataclass(frozen=True)
class _Rule:
    """The settings one recursion runs with (checked)."""

    mode: str
    solver: str
    min_size: int
    max_depth: int | None
    tau: float
    dynamic: bool  # tau="auto" with auto_rule="dynamic": each accepted cut asks dynamic_accept


#: a node waiting on the stack: id, parent id, depth, region, (parent's members, parent's Fiedler vector)
_Node = tuple[int, "int | None", int, np.ndarray, "tuple[np.ndarray, np.ndarray] | None"]


def _recurse(g: Any, n: int, rule: _Rule) -> list[CutStep]:
    """Depth first, positive side first: attempt a cut of every node, record it, push its children."""
    zero_rows = (g == 0).any(dim=1).cpu().numpy() if rule.mode == "paper" else None
    steps: list[CutStep] = []
    stack: list[_Node] = [(0, None, 0, np.arange(n), None)]
    nxt = 1
    while stack:
        node, parent, depth, region, warm_src = stack.pop()
        if rule.max_depth is not None and depth >= rule.max_depth:
            continue
        members = _members(region, depth, zero_rows, rule.min_size)
        if members is None:
            continue
        res = _attempt(g, members, rule, _warm_start(warm_src, members))
        positive = res.positive if res.positive is not None else np.zeros(members.shape[0], bool)
        accepted, reason = _decide(g, members, res, positive, depth, n, rule)
        children = None
        if accepted:
            children = (nxt, nxt + 1)
            pos_region = members[positive]
            neg_region = np.setdiff1d(region, pos_region, assume_unique=True)
            src = (members, res.fiedler) if res.fiedler.shape[0] == members.shape[0] else None
            stack.append((nxt + 1, node, depth + 1, neg_region, src))
            stack.append((nxt, node, depth + 1, pos_region, src))
            nxt += 2
        steps.append(
            CutStep(
                index=len(steps), node=node, parent=parent, depth=depth, members=members, fiedler=res.fiedler,
                thresholds=res.thresholds, ncut_values=res.ncut_values, threshold=float(res.threshold),
                ncut=float(res.ncut), accepted=accepted, children=children, region=region, positive=positive,
                solver=res.solver, reason=reason,
            )
        )  # fmt: skip
    return steps


def _members(
    region: np.ndarray, depth: int, zero_rows: np.ndarray | None, min_size: int
) -> np.ndarray | None:
    """The nodes of ``region`` that are cut, or None when it is too small to cut.

    Paper mode (``zero_rows`` given): below the root, the published node-dropping rule removes every node
    whose row of ``W`` holds a zero. Fixed mode: the region, when both sides can have ``min_size`` nodes.
    """
    if zero_rows is not None:
        members = region if depth == 0 else region[~zero_rows[region]]
        return members if members.shape[0] > 1 else None
    return region if region.shape[0] >= max(2, 2 * min_size) else None


def _warm_start(warm_src: tuple[np.ndarray, np.ndarray] | None, members: np.ndarray) -> np.ndarray | None:
    """The parent's Fiedler vector restricted to ``members`` (a start for the iterative solvers)."""
    if warm_src is None:
        return None
    pm, py = warm_src
    return py[np.searchsorted(pm, members)]


def _attempt(g: Any, members: np.ndarray, rule: _Rule, warm: np.ndarray | None) -> Attempt:
    """One cut of the sub-graph on ``members``, by the mode's and the graph's solver path."""
    if rule.mode == "paper":
        return paper_attempt(g, members, rule.solver, warm)
    if isinstance(g, torch.Tensor):
        return torch_attempt(g, members, rule.min_size)
    return fixed_attempt(g, members, rule.solver, warm, rule.min_size)


def _decide(
    g: Any, members: np.ndarray, res: Attempt, positive: np.ndarray, depth: int, n: int, rule: _Rule
) -> tuple[bool, str]:
    """Whether the attempted cut is made, and why, in words."""
    ncut = float(res.ncut)
    accepted = res.reject is None and bool(ncut < rule.tau)
    npos = int(positive.sum())
    if accepted and (npos == 0 or npos == members.shape[0]):
        accepted = False
        reason = "rejected: one side is empty (the published code would recurse without end)"
    elif res.reject is not None:
        reason = "rejected: " + res.reject
    elif accepted and rule.dynamic:
        accepted, reason = _dynamic(g, members, res, positive, depth, n)
    elif accepted:
        reason = f"accepted: ncut {ncut:.4g} < tau {rule.tau:.4g}"
    else:
        reason = reason_rejected(ncut, rule.tau)
    if res.note:
        reason += f" [{res.note}]"
    return accepted, reason


def _dynamic(
    g: Any, members: np.ndarray, res: Attempt, positive: np.ndarray, depth: int, n: int
) -> tuple[bool, str]:
    """The automatic per-step decision (``tau="auto"``, ``auto_rule="dynamic"``) on the sub-graph's weights
    without self-loops, in float64 on the host."""
    if isinstance(g, torch.Tensor):
        idx = torch.as_tensor(members, device=g.device)
        sub = g[idx][:, idx].to(torch.float64).fill_diagonal_(0.0).cpu().numpy()
    else:
        sub = subgraph(g, members)
    return dynamic_accept(
        sub, _eigen.degrees(sub), res.fiedler, res.thresholds, res.ncut_values, float(res.ncut), depth=depth,
        n_total=n, positive=positive,
    )  # fmt: skip
