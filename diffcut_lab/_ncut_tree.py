"""The record of a recursive normalized cut: one :class:`CutStep` per attempted cut, and the
:class:`CutTree` that holds them with the labels (private; :mod:`diffcut_lab.ncut` exports both).

A tree replays its recursion step by step (``labels_at``), tabulates it (``to_frame``), numbers its
segments as the published code does (``published_labels``) and is re-thresholded at a smaller tau
without recomputation (``prune``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .config import check_tau
from .errors import ParameterError
from .label_maps import relabel_raster

__all__ = ["CutStep", "CutTree", "reason_rejected"]


def reason_rejected(ncut: float, tau: float) -> str:
    """The reason of a step whose cut is not made because its NCut is not below ``tau``."""
    return f"rejected: ncut {ncut:.4g} >= tau {tau:.4g}" if np.isfinite(ncut) else "rejected: ncut undefined"


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
        flat = relabel_raster(np.asarray(labels, dtype=np.int64).reshape(-1))
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
        return relabel_raster(codes)

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
                reason = reason_rejected(s.ncut, tau)
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
