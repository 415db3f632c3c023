"""The descent of the K-way normalized cut (private; :func:`diffcut_lab.kway.kway_ncut` runs it).

The objective and its bookkeeping (:func:`state`, :func:`ncut_of`), the simultaneous
assignment step of the fractional quadratic transform (:func:`~diffcut_lab._kway_kernels.propose`) with its
backtracking and exact
single-node fallback, and the segment-level escapes (cut a segment in two and merge two others, or give
one half to another segment); :func:`run` is one run from a start to a local minimum. The passes over
the nodes are compiled loops (:mod:`~diffcut_lab._kway_kernels`) on the host arrays behind the tensors;
this module keeps the order of the steps. See the module docstring of :mod:`diffcut_lab.kway` for the
method.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _kway_kernels as kernels
from ._kway_init import top_eigvecs

__all__ = ["Memo", "Splits", "ncut_of", "run", "state"]

_MAX_BACKTRACK = 64  # doublings of lambda before a run is declared stuck (lambda ~ 2**64: nothing moves)
_LAM0 = 0.125  # first shift tried after a rejected step (scores and inertia are both ~ d_i / vol_k)
_BISECT_STEPS = 20  # alternating steps of a trial 2-way split (the full solver polishes after a move)
_BISECT_TOL = 1e-3  # ... and their relative stopping tolerance


def state(a: torch.Tensor, d: torch.Tensor, lab: torch.Tensor, k: int):
    """``S^T = X^T W`` (K, N) -- row k holds every node's links to segment k; W is symmetric, so it is a
    sum of rows of W -- and the volumes and associations (K,) of the labelling ``lab`` (host tensors)."""
    st = torch.zeros(k, a.shape[0], dtype=a.dtype, device=a.device).index_add_(0, lab, a)
    vol, assoc = kernels.vol_assoc(st.numpy(), d.numpy(), lab.numpy(), k)
    return st, torch.from_numpy(vol), torch.from_numpy(assoc)


def ncut_of(vol: torch.Tensor, assoc: torch.Tensor) -> float:
    """``sum_k cut_k / vol_k`` over segments with positive volume (zero volume: no edges, no cut)."""
    return float(kernels.ncut_value(vol.numpy(), assoc.numpy()))


def _descend(
    a: torch.Tensor,
    d: torch.Tensor,
    lab: torch.Tensor,
    k: int,
    reg: float,
    steps: int,
    tol: float,
    history: list[float],
    start: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, bool]:
    """Alternating steps from ``lab`` (at most ``steps``), appending each accepted NCut to ``history``
    (which holds the NCut of ``lab`` last). Returns the labels and whether it stopped at a local minimum
    (no step, and no single-node move, lowers the NCut by more than ``tol``).

    A step is the simultaneous assignment of :func:`~diffcut_lab._kway_kernels.propose`, retried with a doubled shift while it
    would raise the NCut or empty a segment. When even a large shift leaves nothing acceptable, the
    nodes whose own move has a positive exact gain are moved together, the best half of them if that
    fails, and so on down to the single best move (which always lowers the NCut). ``start``: the
    :func:`state` of ``lab`` when the caller has it. The steps are the compiled loops of
    :mod:`~diffcut_lab._kway_kernels`, on the host arrays behind the tensors.
    """
    st_t, vol_t, assoc_t = state(a, d, lab, k) if start is None else start
    w, deg = a.numpy(), d.numpy()
    st, vol, assoc, labels = st_t.numpy(), vol_t.numpy(), assoc_t.numpy(), lab.numpy()
    diag = np.ascontiguousarray(np.diagonal(w))
    lam = reg

    def attempt(new: np.ndarray) -> tuple | None:
        ok, st_new = kernels.apply_moves(w, st, labels, new, k)
        if not ok:
            return None
        vol_new, assoc_new = kernels.vol_assoc(st_new, deg, new, k)
        value = kernels.ncut_value(vol_new, assoc_new)
        if value < history[-1] - 1e-12 * max(1.0, history[-1]):
            return new, st_new, vol_new, assoc_new, value
        return None

    for _ in range(steps):
        found = None
        for _ in range(_MAX_BACKTRACK):
            new = kernels.propose(st, deg, labels, vol, assoc, lam)
            if np.array_equal(new, labels):
                break
            found = attempt(new)
            if found is not None:
                break
            lam = 2.0 * lam if lam >= _LAM0 else _LAM0
        if found is None:  # fall back on exact single-node gains
            gain, target = kernels.exact_gains(st, deg, diag, labels, vol, assoc)
            cand = np.flatnonzero(gain > tol)
            cand = cand[np.argsort(-gain[cand], kind="stable")]
            m = cand.shape[0]
            while m > 0 and found is None:
                new = labels.copy()
                new[cand[:m]] = target[cand[:m]]
                found = attempt(new)
                m = 0 if m == 1 else (m + 1) // 2
            if found is None:
                return torch.from_numpy(labels), True
        labels, st, vol, assoc, value = found
        history.append(value)
        lam = max(reg, lam / 2.0) if lam / 2.0 >= _LAM0 else reg
        if history[-2] - history[-1] <= tol:
            return torch.from_numpy(labels), True
    return torch.from_numpy(labels), False


def _bisect(a: torch.Tensor, d: torch.Tensor, reg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best 2-way split of one segment: a spectral sweep polished by the same alternating solver.

    ``a`` is the segment's sub-affinity and ``d`` its nodes' degrees in the whole graph (so the halves'
    ratios are those of the whole-graph objective). The start is the best of every threshold of the second
    eigenvector of ``D^-1/2 A D^-1/2`` (exact ratios of all ``n - 1`` cut points at once, by cumulative
    sums), which finds small tight groups as well as halves; the alternating steps then only improve it.
    Deterministic. Returns labels 0/1 and the halves' volumes and associations.
    """
    n = a.shape[0]
    if n == 2:
        lab = torch.arange(2, device=a.device)
        return lab, *state(a, d, lab, 2)[1:]
    v = top_eigvecs(a, torch.where(d > 0, d, 1.0), 2)[:, 0]  # eigh / Lanczos return ascending order
    y = v * torch.where(d > 0, d.clamp_min(1e-300).rsqrt(), 0.0)
    lab = _sweep(a, d, y)
    start = state(a, d, lab, 2)
    history = [ncut_of(*start[1:])]
    lab, _ = _descend(a, d, lab, 2, reg, _BISECT_STEPS, _BISECT_TOL * history[-1], history, start)
    return lab, *state(a, d, lab, 2)[1:]


def _sweep(a: torch.Tensor, d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The 2-way labelling ``{y > t}`` with the largest ``assoc_1 / vol_1 + assoc_2 / vol_2`` over every cut
    point ``t`` of the sorted ``y`` (ties by index): one ``O(n^2)`` pass of cumulative sums
    (:func:`~diffcut_lab._kway_kernels.sweep`)."""
    return torch.from_numpy(kernels.sweep(a.numpy(), d.numpy(), np.ascontiguousarray(y.numpy())))


Splits = dict[bytes, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _split(
    a: torch.Tensor, d: torch.Tensor, idx: torch.Tensor, reg: float, splits: Splits
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_bisect` of the segment with members ``idx`` (ascending): a function of that member set alone
    (:func:`_bisect` is deterministic), kept in ``splits`` under it for every later run and every segment
    with the same members."""
    key = idx.cpu().numpy().tobytes()
    found = splits.get(key)
    if found is None:
        found = splits[key] = _bisect(a[idx[:, None], idx], d[idx], reg)
    return found


def _escape(
    a: torch.Tensor,
    d: torch.Tensor,
    lab: torch.Tensor,
    k: int,
    reg: float,
    splits: Splits,
    current: float,
) -> tuple[torch.Tensor, float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None:
    """Best segment-level move, when it lowers the NCut: cut a segment ``c`` in two and either merge two
    other segments (the freed label goes to one half), or give one half to another segment.

    A local minimum of node moves can hold two segments that belong together while another holds two
    objects, or give an object to the wrong neighbour; no single-node move fixes either. Gains are exact:
    merges from the K x K association matrix, transfers from the half's links to every segment, splits
    from :func:`_split` (scored by :func:`~diffcut_lab._kway_kernels.best_segment_move`). The move is a
    function of the labelling alone. Returns the new labels, their NCut and their :func:`state`.
    """
    st, vol, assoc = state(a, d, lab, k)
    order = torch.argsort(lab, stable=True)
    sizes = torch.bincount(lab, minlength=k).numpy()
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    subs = np.zeros(lab.shape[0], np.int64)  # each segment's trial cut, at its members' places in order
    half_vol, half_assoc = np.zeros((k, 2)), np.zeros((k, 2))
    for cc in range(k):
        if sizes[cc] < 2:
            continue
        idx = order[bounds[cc] : bounds[cc + 1]]
        sub, half_vol[cc], half_assoc[cc] = _split(a, d, idx, reg, splits)
        subs[bounds[cc] : bounds[cc + 1]] = sub.numpy()
    gain, kind, cc, i, j = kernels.best_segment_move(
        st.numpy(), vol.numpy(), assoc.numpy(), lab.numpy(), order.numpy(), bounds, subs, half_vol, half_assoc
    )
    if not kind or gain <= 1e-12 * max(1.0, current):
        return None
    new = lab.clone()
    idx, sub = order[bounds[cc] : bounds[cc + 1]], torch.from_numpy(subs[bounds[cc] : bounds[cc + 1]])
    if kind == kernels.MERGE:  # i and j merged, the freed label to half 1
        new[lab == j] = i
        new[idx[sub == 1]] = j
    else:  # half i to segment j
        new[idx[sub == i]] = j
    if not bool((torch.bincount(new, minlength=k) > 0).all()):
        return None
    after = state(a, d, new, k)
    value = ncut_of(*after[1:])
    if not value < current - 1e-12 * max(1.0, current):
        return None
    return new, value, after


def _renumber(lab: torch.Tensor, k: int) -> torch.Tensor:
    """Labels 0..K-1 renumbered by the raster order of each segment's first node (all K present)."""
    n = lab.shape[0]
    first = torch.full((k,), n, dtype=torch.long, device=lab.device)
    first.scatter_reduce_(0, lab, torch.arange(n, device=lab.device), reduce="amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(k, device=lab.device)
    return rank[lab]


#: continuations already run: raster-numbered labelling at a local minimum of node moves -> (accepted
#: steps and segment moves it took, final labels, NCuts after each of its steps)
Memo = dict[bytes, tuple[int, int, torch.Tensor, list[float]]]


def run(
    a: torch.Tensor,
    d: torch.Tensor,
    lab: torch.Tensor,
    k: int,
    reg: float,
    max_iter: int,
    tol: float,
    escapes: int,
    splits: Splits,
    memo: Memo,
) -> tuple[torch.Tensor, list[float], bool]:
    """Alternating steps to a local minimum, then merge-split escapes each followed by more steps.

    From a local minimum of node moves (renumbered in raster order) the rest of a run is a function of the
    labelling: when an earlier run went on from the same one to a minimum that no segment move improves,
    within the budgets left, its continuation is taken as it was (``memo``), and trial cuts of segments
    already seen are reused (``splits``)."""
    start = state(a, d, lab, k)
    history = [ncut_of(*start[1:])]
    lab, converged = _descend(a, d, lab, k, reg, max_iter, tol, history, start)
    visited: list[tuple[bytes, int, int]] = []  # (labelling, len(history), escapes used) at each minimum
    used = 0
    finished = False  # ended at a minimum that no segment move improves
    while converged and used < escapes and max_iter - (len(history) - 1) > 0:
        lab = _renumber(lab, k)
        key = lab.cpu().numpy().tobytes()
        hit = memo.get(key)
        if hit is not None and hit[0] <= max_iter - (len(history) - 1) and hit[1] <= escapes - used:
            steps, moves, lab, tail = hit
            for key0, at, used0 in visited:
                memo[key0] = (len(history) - at + steps, used - used0 + moves, lab, history[at:] + tail)
            history.extend(tail)
            return lab, history, True
        visited.append((key, len(history), used))
        moved = _escape(a, d, lab, k, reg, splits, history[-1])
        if moved is None:
            finished = True
            break
        used += 1
        lab = moved[0]
        history.append(moved[1])
        lab, converged = _descend(a, d, lab, k, reg, max_iter - (len(history) - 1), tol, history, moved[2])
    if finished:
        for key0, at, used0 in visited:
            memo[key0] = (len(history) - at, used - used0, lab, history[at:])
    return lab, history, converged
