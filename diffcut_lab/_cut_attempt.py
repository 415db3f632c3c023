"""One cut attempt on one sub-graph: the :class:`Attempt` record both modes return, and the fixed mode's
attempt (:func:`fixed_attempt`). The paper mode's attempt and its certificate live in
:mod:`diffcut_lab._paper_cut`; the recursion that calls them in :mod:`diffcut_lab.ncut`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _eigen

__all__ = ["Attempt", "fixed_attempt", "subgraph"]

_EMPTY = np.empty(0)


@dataclass(frozen=True, eq=False)
class Attempt:
    """What one attempted two-way cut of a sub-graph found.

    Attributes
    ----------
    fiedler : numpy.ndarray
        The (generalised) Fiedler vector over the sub-graph's nodes (empty if none was computed).
    thresholds, ncut_values : numpy.ndarray
        The candidate thresholds tried and the NCut value of each.
    threshold, ncut : float
        The chosen candidate and its NCut value (NaN when there is none).
    positive : numpy.ndarray or None
        Boolean side of each node for the chosen threshold (``None``: no cut).
    solver : str
        The eigen solver used (``"none"`` when no solve was made).
    note : str
        Extra detail for the step's reason (e.g. a disconnected sub-graph).
    reject : str or None
        Why no cut can be made at all, whatever tau (``None`` when a cut was found).
    """

    fiedler: np.ndarray = field(default_factory=lambda: _EMPTY)
    thresholds: np.ndarray = field(default_factory=lambda: _EMPTY)
    ncut_values: np.ndarray = field(default_factory=lambda: _EMPTY)
    threshold: float = float("nan")
    ncut: float = float("nan")
    positive: np.ndarray | None = None
    solver: str = "none"
    note: str = ""
    reject: str | None = None

    @classmethod
    def rejected(cls, reason: str, **found: Any) -> Attempt:
        """An attempt that cannot cut (``reason``), with whatever was computed before it stopped."""
        return cls(reject=reason, **found)

    @classmethod
    def best_of_sweep(
        cls, y: np.ndarray, thr: np.ndarray, nc: np.ndarray, solver: str, note: str = ""
    ) -> Attempt:
        """The sweep's best candidate (the first minimum of ``nc``) as the cut over the Fiedler vector ``y``;
        a rejection when ``min_size`` left no candidate."""
        if thr.shape[0] == 0:
            return cls.rejected("no threshold leaves min_size nodes on both sides", fiedler=y, solver=solver)
        best = int(np.argmin(nc))
        return cls(
            fiedler=y,
            thresholds=thr,
            ncut_values=nc,
            threshold=float(thr[best]),
            ncut=float(nc[best]),
            positive=y > thr[best],
            solver=solver,
            note=note,
        )


def subgraph(g: Any, idx: np.ndarray) -> Any:
    """The induced sub-graph on ``idx`` (a copy), without self-loops.

    Self-loops are dropped because they count in a node's degree but can never be cut: with
    ``affinity``'s unit diagonal, a single pixel whose summed similarity ``c`` to the rest is below 1 has
    ``NCut = c / (1 + c) + ... < 0.5`` and would be peeled off as its own segment on noisy features.
    Without them, any cut with a one-pixel side has ``NCut >= 1``. A dense sub-graph is float64 up to
    :data:`~diffcut_lab._eigen.FLOAT64_MAX` nodes and keeps the graph's dtype above (float32 there).
    """
    if sp.issparse(g):
        sub = g[idx][:, idx].tocsr()
        sub = (sub - sp.diags(sub.diagonal())).tocsr()
        sub.eliminate_zeros()
        return sub
    sub = g[np.ix_(idx, idx)]
    sub = sub.astype(np.float64, copy=False) if idx.shape[0] <= _eigen.FLOAT64_MAX else sub
    np.fill_diagonal(sub, 0.0)
    return sub


def fixed_attempt(
    g: Any, members: np.ndarray, solver: str, warm: np.ndarray | None, min_size: int
) -> Attempt:
    """The fixed-mode cut of the sub-graph on ``members``: a component split off, or the best sweep cut."""
    sub = subgraph(g, members)
    d = _eigen.degrees(sub)
    comp = _eigen.components(sub)
    ncomp = int(comp.max()) + 1
    if ncomp > 1:
        vol = np.bincount(comp, weights=d, minlength=ncomp)
        size = np.bincount(comp, minlength=ncomp)
        big = int(np.lexsort((-size, -vol))[0])  # largest volume, then largest size, then first
        pos = comp == big
        if min(pos.sum(), (~pos).sum()) >= min_size:
            y = pos.astype(np.float64)
            return Attempt(
                fiedler=y,
                thresholds=np.array([0.5]),
                ncut_values=np.array([0.0]),
                threshold=0.5,
                ncut=0.0,
                positive=pos,
                solver="components",
                note=f"disconnected ({ncomp} components): largest component split off",
            )
        # a component too small to stand alone rides along on the negative side of a spectral cut
        inner = np.flatnonzero(pos)
        if inner.shape[0] < 2:
            return Attempt.rejected(f"disconnected ({ncomp} components), none splittable under min_size")
        sub_in = sub[inner][:, inner] if sp.issparse(sub) else sub[np.ix_(inner, inner)]
        f = _eigen.fiedler(sub_in, _eigen.degrees(sub_in), solver, None)
        y = np.full(members.shape[0], f.y.min() - (np.ptp(f.y) + 1.0))
        y[inner] = f.y
        note = f"disconnected ({ncomp} components): spectral cut of the largest one"
    else:
        f = _eigen.fiedler(sub, d, solver, warm)
        y = f.y
        note = ""
    thr, nc = _eigen.sweep(sub, d, y, min_size)
    return Attempt.best_of_sweep(y, thr, nc, f.solver, note)
