"""K-way normalized cut by fractional alternating optimisation ("Falcon-style"), all segments at once.

:func:`kway_ncut` partitions an affinity graph into exactly ``K`` segments at once, by minimising the
K-way normalized cut of hard assignments

.. math::

    \\mathrm{NCut}(A_1, \\dots, A_K) = \\sum_k \\frac{\\mathrm{cut}(A_k, V \\setminus A_k)}{\\mathrm{vol}(A_k)}
    = K - \\sum_k \\frac{x_k^\\top W x_k}{x_k^\\top d},

(``x_k`` the indicator of segment ``k``, ``d`` the degrees) directly, instead of cutting recursively in
two along Fiedler vectors as :func:`diffcut_lab.ncut.recursive_ncut` does. :func:`kway_ncut_value`
evaluates that objective for any labelling.

What follows the paper, and what is this module's own
------------------------------------------------------
Source: X. Zhang, X. Han, X. Lai, Y. Sun, P. Zhang, K. Kording, "Falcon: Fractional Alternating Cut with
Overcoming Minima in Unsupervised Segmentation", arXiv:2504.05613 (2025). Only the paper's abstract and a
third-party summary of its method were available when this was written, so this is an implementation
*from the description*, not a port; no code was copied.

From the paper's text:

* a K-way Normalized Cut solved as an optimisation over hard assignments, all segments at once, with no
  recursive eigenvector computation;
* the sum of ratios is handled by a *fractional quadratic transform* and solved by *alternating
  iterations* (auxiliary variables, then assignments);
* *regularisation* of the affinity by a diagonal term, ``W + lambda * diag(D)`` (next to the power
  ``W_norm ** alpha``, which in this toolkit is :func:`diffcut_lab.affinity`'s ``alpha`` and so is not
  repeated here).

Worked out here (standard results, derived in the Notes of :func:`kway_ncut`):

* The quadratic transform of ``x^T W x / x^T d = ||W^1/2 x||^2 / x^T d`` with auxiliary vector ``y``,
  ``2 y^T W^1/2 x - (x^T d) ||y||^2``, is maximised by ``y = W^1/2 x / x^T d``; putting that ``y`` back
  makes the assignment step *linear*: with the segments' current volumes ``vol_k`` and ratios
  ``rho_k = assoc_k / vol_k`` fixed, node ``i`` scores ``(2 (W x_k)_i - rho_k d_i) / vol_k`` for segment
  ``k`` and every node takes its best segment, simultaneously (vectorised over ``S = W X``, which is
  kept up to date from the rows of the nodes that moved). This is a minorise-maximise step, and the
  same update as weighted kernel k-means on the normalized-cut kernel (Dhillon, Guan & Kulis 2007).
* It can only be guaranteed to improve the objective when ``W`` is positive semidefinite. Adding
  ``lambda * D`` to ``W`` -- the paper's regulariser -- changes each segment's ratio to
  ``rho_k + lambda`` (the discrete minimiser of the NCut is unchanged) and makes ``W + lambda D`` PSD
  for ``lambda >= 1`` (signless Laplacian). In the score it appears as an *inertia* bonus
  ``2 lambda d_i / vol_k`` for staying in one's own segment.

This module's own choices:

* ``lambda`` is adapted per step (the paper calls its regulariser dynamic; the rule here is in the
  spirit of the monotone backtracking of the authors' later version, "Falcon: Fast Proximal
  Linearization of Normalized Cuts", ICLR 2026): a step is accepted only if it lowers the NCut and
  leaves no segment empty; otherwise ``lambda`` is doubled and the step retried from the same
  assignment; after an accepted step it is halved again, down to ``reg``. When even a large shift
  leaves nothing acceptable, the nodes whose own move has a positive *exact* gain are moved (the best
  half of them if that fails, ..., down to the single best move). So the NCut of a run strictly
  decreases, every run keeps exactly ``K`` non-empty segments (empty segments cannot occur: nothing to
  reseed), and a run stops at a local minimum for single-node moves.
* Escapes from such minima ("overcoming minima" in the paper's title; its mechanism was not in the text
  available): segment-level moves, each scored exactly -- cut a segment in two (on its sub-graph) and
  merge two others, or give one half to another segment -- the best one taken while
  it lowers the NCut, followed by more alternating steps. A trial cut starts from the best threshold of
  the segment's second eigenvector (every cut point scored exactly) and is polished by the alternating
  steps. Without them (``escapes=0``), runs from
  k-means++ seeds often stall with two segments on one object and two objects in one segment.
* Initialisation (default ``init="spectral"``): the top-K eigenvectors of ``D^-1/2 W D^-1/2`` by Lanczos
  (products with ``W`` only: no ``O(N^3)`` step, no ``N x N`` copy), the first run from their
  cluster_qr assignment (deterministic; Damle, Minden & Ying 2019), the other restarts from k-means++ +
  Lloyd on the Ng-Jordan-Weiss rows. The alternating descent then only improves the start. Or
  ``init="k-means++"`` (volume-weighted D^2 sampling, greedy trials, on the rows of the random-walk matrix
  ``D^-1 W``, each node joining its nearest seed -- no eigenvectors at all), ``"random"`` seeds, or given
  labels (e.g. a ``recursive_ncut`` result, which is then only improved). ``n_init`` runs (default 1 for
  the deterministic spectral start, 4 for the random ones); the lowest final NCut wins.
* Work shared between restarts: from a local minimum of node moves (renumbered in raster order) the rest
  of a run -- segment moves and the descents after them -- is a function of the labelling, so a run that
  reaches a labelling an earlier run went on from takes that earlier continuation as it was, and the trial
  cut of a segment is computed once per member set.
* Self-loops: the diagonal of ``W`` is ignored by default (``self_loops=False``), as in
  ``recursive_ncut``'s fixed mode: :func:`~diffcut_lab.affinity` puts ones there, which inflates the
  volume of small segments. :func:`kway_ncut_value` takes the same switch.
* The paper's second stage (mask refinement with low-level cues) is not part of this module; see
  :mod:`diffcut_lab.refine`.

Where it runs: the graph is checked and the start computed on W's device (float64; float32 on MPS;
Lanczos and the small eigenproblems on the host, scipy on one BLAS thread); the runs on the host, in
float64 (a host copy of W when W is elsewhere). Random draws come from a CPU ``torch.Generator``, so every
device draws the same seeds. The runs are many small steps: the node moves are compiled loops
(:mod:`~diffcut_lab._kway_kernels`, numba), fused where array operations would make one pass over the
``(K, N)`` scores each; the rest runs on one torch thread whatever the process uses
(:func:`~diffcut_lab.threads.one_thread`; on 2 cores two threads made the runs 1.6-1.8x slower), so
results do not depend on it.

Layout: this module checks the input and keeps the best of the runs; the starts are in ``_kway_init``, the
descent, the segment moves and one run in ``_kway_moves``, its compiled loops in ``_kway_kernels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._kway_init import initial, spectral_embedding, walk_rows
from ._kway_moves import Memo, Splits, ncut_of, run, state
from .errors import ParameterError
from .label_maps import relabel_raster
from .threads import one_thread
from .validation import check_affinity, check_float, check_int, check_labels

__all__ = ["INITS", "KwayResult", "kway_ncut", "kway_ncut_value"]

INITS = ("k-means++", "spectral", "random")


@dataclass(frozen=True, eq=False)
class KwayResult:
    """Result of :func:`kway_ncut`.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(N,)`` int64, segments numbered ``0..K-1`` in the raster order of their first node.
    ncut : float
        K-way NCut ``sum_k cut(A_k, V \\ A_k) / vol(A_k)`` of ``labels`` (self-loops as in the call).
    n_iter : int
        Accepted steps (alternating steps and segment moves) of the best run.
    converged : bool
        Whether the best run stopped because no step lowered the NCut by more than ``tol`` (rather than
        at ``max_iter``).
    history : numpy.ndarray
        NCut of the best run after initialisation and after each accepted step (``n_iter + 1`` values,
        strictly decreasing).
    n_segments : int
        Number of segments K (always the requested number).
    restarts : numpy.ndarray
        Final NCut of every run, in the order they were run.
    """

    labels: np.ndarray
    ncut: float
    n_iter: int
    converged: bool
    history: np.ndarray
    n_segments: int
    restarts: np.ndarray

    def __repr__(self) -> str:
        return (
            f"KwayResult(n_segments={self.n_segments}, ncut={self.ncut:.6g}, n_iter={self.n_iter}, "
            f"converged={self.converged})"
        )


# ----------------------------------------------------------------------------------------------- checks


def _graph(w: Any, self_loops: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a dense affinity (:func:`~diffcut_lab.validation.check_affinity`); return ``(A, d)`` on W's
    device: A an exactly symmetric copy (so that scores and objective agree to the last bit), without its
    diagonal unless ``self_loops``, d its row sums, float64 (float32 on devices without float64)."""
    device = w.device if isinstance(w, torch.Tensor) else torch.device("cpu")
    dtype = torch.float32 if device.type == "mps" else torch.float64
    a = check_affinity(w, sparse=False, caller="kway_ncut", dtype=dtype)
    if not self_loops:
        a.fill_diagonal_(0.0)
    return a, a.sum(1)


def _codes(labels: Any, n: int) -> tuple[np.ndarray, int]:
    """Any integer labelling of N nodes (shape (N,) or a grid with N cells) -> codes 0..K-1, K."""
    lab = check_labels(labels)
    if lab.size != n:
        raise ParameterError(f"labels must hold one label per node (N = {n}), got shape {lab.shape}.")
    _, codes = np.unique(lab.reshape(-1), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return codes, int(codes.max()) + 1


@dataclass(frozen=True)
class _Runs:
    """The checked settings of the runs."""

    n_init: int
    max_iter: int
    seed: int
    reg: float
    tol: float
    escapes: int


def _check_runs(n_init: Any, max_iter: Any, seed: Any, reg: Any, tol: Any, escapes: Any, init: Any) -> _Runs:
    if n_init is None:
        n_init = 1 if isinstance(init, str) and init == "spectral" else 4
    return _Runs(
        n_init=check_int(n_init, "n_init", minimum=1),
        max_iter=check_int(max_iter, "max_iter", minimum=0),
        seed=check_int(seed, "seed", minimum=0),
        reg=check_float(reg, "reg", minimum=0.0),
        tol=check_float(tol, "tol", minimum=0.0),
        escapes=check_int(escapes, "escapes", minimum=0),
    )


def _given_start(init: Any, n: int, k: int) -> torch.Tensor | None:
    """The start labels when ``init`` is a labelling (numbered by raster order: the result is a function
    of the partition, not of its label values); None for a named start."""
    if isinstance(init, str):
        if init not in INITS:
            raise ParameterError(f"init must be one of {INITS} or an (N,) labelling, got {init!r}.")
        return None
    codes, kk = _codes(init, n)
    if kk != k:
        raise ParameterError(f"init labels have {kk} distinct values; expected n_segments = {k}.")
    return torch.from_numpy(relabel_raster(codes))


# ------------------------------------------------------------------------------------------------- runs


def kway_ncut(
    W: Any,
    n_segments: int,
    *,
    n_init: int | None = None,
    max_iter: int = 100,
    seed: int = 0,
    init: str | Any = "spectral",
    reg: float = 0.0,
    tol: float = 1e-9,
    escapes: int = 20,
    self_loops: bool = False,
) -> KwayResult:
    """K-way normalized cut by fractional alternating optimisation (Falcon-style).

    Parameters
    ----------
    W : torch.Tensor or numpy.ndarray
        ``(N, N)`` dense symmetric non-negative affinity, e.g. from :func:`diffcut_lab.affinity`. The
        check and the spectral start run on W's device, the descent on the host in float64 (on a copy
        when W is on another device or in float32 on MPS).
    n_segments : int
        Number of segments K, ``1 <= K <= N``. The result has exactly K non-empty segments.
    n_init : int, optional
        Runs from different starts; the one with the lowest final NCut is returned (first one on ties).
        Default: 1 with ``init="spectral"`` (its first start is deterministic and, measured on noisy
        blobs, already as good as four k-means++ restarts), 4 with ``"k-means++"`` and ``"random"``.
        Ignored when ``init`` is a labelling.
    max_iter : int, default 100
        Most accepted steps (alternating steps and segment moves) per run.
    seed : int, default 0
        Seed of the CPU ``torch.Generator`` that draws every initialisation (same draws on every device).
    init : {"spectral", "k-means++", "random"} or array_like, default "spectral"
        "spectral": the top-K eigenvectors of ``D^-1/2 W D^-1/2`` (Lanczos above
        :data:`~diffcut_lab._eigen.DENSE_MAX` nodes), the first run
        from their cluster_qr assignment (independent of ``seed``), the others from k-means (k-means++ +
        Lloyd) on the Ng-Jordan-Weiss rows. "k-means++": volume-weighted greedy k-means++ seeds on the
        rows of ``D^-1 W``, nodes joining their nearest seed (no eigenvectors). "random": K distinct
        random seeds, nearest-seed assignment. An ``(N,)`` (or grid-shaped) labelling with exactly K
        distinct values starts a single run from it (e.g. a ``recursive_ncut`` tree's labels).
    reg : float, default 0.0
        Smallest diagonal shift ``lambda`` (the regulariser ``W + lambda D``). Steps start at it; a
        step that would raise the NCut or empty a segment doubles ``lambda`` and is retried; an accepted
        step halves it again, not below ``reg``. ``reg >= 1`` makes every step monotone by construction
        (fewer retries, more inertia: smaller moves per step).
    tol : float, default 1e-9
        A run stops when an accepted step lowers the NCut by at most ``tol``.
    escapes : int, default 20
        Most segment-level moves per run (merge two segments and cut a third in two, or give half of a
        segment to another), each taken only if it lowers the NCut and followed by alternating steps;
        0 = plain alternating optimisation (faster, more often stuck in a poor local minimum).
    self_loops : bool, default False
        Keep the diagonal of ``W`` in degrees and associations. By default it is ignored, as in
        ``recursive_ncut(mode="fixed")``; :func:`kway_ncut_value` must then be called the same way.

    Returns
    -------
    KwayResult
        ``labels`` (N,) int64 numbered in raster order of first appearance (reshape to the grid:
        ``labels.reshape(h, w)``), ``ncut``, ``n_iter``, ``converged``, ``history``, ``n_segments``,
        ``restarts``.

    Raises
    ------
    ParameterError
        Non-square, negative, non-symmetric or sparse W; ``n_segments`` outside ``1..N``; bad options.
    FeatureError
        Empty W, NaN or Inf in W.

    Notes
    -----
    With ``x_k`` the indicator of segment k, ``S = W X``, ``vol_k = d^T x_k`` and ``assoc_k = x_k^T S_k``,
    the objective is ``max sum_k assoc_k / vol_k`` (= ``K - NCut``). For PSD ``W`` the quadratic transform
    ``assoc_k / vol_k >= 2 y_k^T W^1/2 x_k - vol_k ||y_k||^2`` holds for every ``y_k`` with equality at
    ``y_k = W^1/2 x_k / vol_k``. Fixing ``y`` at the current assignment and maximising over assignments
    gives the separable, linear problem ``max sum_i sum_k X_ik (2 S_ik - rho_k d_i) / vol_k``: each node
    takes its best segment, and the objective cannot decrease (minorise-maximise). Replacing ``W`` by
    ``W + lambda D`` adds ``lambda`` to every ratio (same discrete optimum), makes the matrix PSD for
    ``lambda >= 1`` and gives the own-segment bonus ``2 lambda d_i / vol_k``. The accept/retry rule on
    ``lambda`` enforces monotonicity whatever its value. Each step costs ``O(N K)`` plus ``O(N m)`` for
    the ``m`` nodes that move (``S`` is updated incrementally; the initial ``S`` is one ``O(N^2)`` pass);
    the spectral start ``O(N^2 K)`` per Lanczos iteration, k-means++ seeding ``O(N^2 K log K)``; a segment
    move ``O(N^2 / K)`` for the trial cuts of member sets not seen before. Memory: one float64 copy of
    ``W`` (plus the ``D^-1 W`` rows for ``init="k-means++"`` / ``"random"``). The result is a local minimum for single-node moves and for those segment
    moves, not the global minimum (the problem is NP-hard); restarts (``n_init``) lower the risk.

    References
    ----------
    .. [1] X. Zhang et al., "Falcon: Fractional Alternating Cut with Overcoming Minima in Unsupervised
       Segmentation", arXiv:2504.05613, 2025.
    .. [2] K. Shen, W. Yu, "Fractional programming for communication systems -- Part I", IEEE TSP 2018
       (the quadratic transform); Y. Chen et al., "Multidimensional Fractional Programming for
       Normalized Cuts", NeurIPS 2024.
    .. [3] I. Dhillon, Y. Guan, B. Kulis, "Weighted graph cuts without eigenvectors", IEEE TPAMI 2007.

    Examples
    --------
    >>> import torch
    >>> from diffcut_lab import affinity
    >>> W = affinity(torch.randn(32, 8, 8))
    >>> res = kway_ncut(W, 3)
    >>> res.labels.shape, res.n_segments
    ((64,), 3)
    """
    a, d = _graph(W, bool(self_loops))
    n = a.shape[0]
    k = check_int(
        n_segments, "n_segments", minimum=1, maximum=n, hint=f"The graph has {n} nodes: K is at most {n}."
    )
    runs = _check_runs(n_init, max_iter, seed, reg, tol, escapes, init)
    given = _given_start(init, n, k)
    host = _host(a, d)
    if k == 1:
        zero = np.zeros(n, np.int64)
        value = _value(*host, zero)
        return KwayResult(zero, value, 0, True, np.array([value]), 1, np.array([value]))
    with one_thread():  # many small steps: extra threads only hand each one back and forth
        lab, history, converged, finals = _best_run(a, d, host, k, init, given, runs)
    labels = relabel_raster(lab.numpy().astype(np.int64))
    exact = _value(*host, labels)  # from scratch, no incremental rounding
    return KwayResult(labels, exact, len(history) - 1, converged, np.asarray(history), k, np.asarray(finals))


def _host(a: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph the runs use: ``(A, d)`` on the host in float64 (the same tensors when they are already)."""
    if a.device.type == "cpu" and a.dtype == torch.float64:
        return a, d
    h = a.to("cpu", torch.float64)
    return h, h.sum(1)


def _best_run(
    a: torch.Tensor,
    d: torch.Tensor,
    host: tuple[torch.Tensor, torch.Tensor],
    k: int,
    init: Any,
    given: torch.Tensor | None,
    runs: _Runs,
) -> tuple[torch.Tensor, list[float], bool, list[float]]:
    """Every run (one from a given labelling), the lowest final NCut kept (the first on ties): its labels,
    history and convergence, and every run's final NCut. The starts come from ``(a, d)`` on W's device, the
    runs use ``host``."""
    gen = torch.Generator().manual_seed(runs.seed)
    x = None
    if given is None:  # the points that seed the runs: spectral embedding, or random-walk rows (one copy)
        x = spectral_embedding(a, d, k) if init == "spectral" else walk_rows(a, d)
    best: tuple[float, torch.Tensor, list[float], bool] | None = None
    finals = []
    splits: Splits = {}
    memo: Memo = {}
    for r in range(1 if given is not None else runs.n_init):
        lab0 = given if x is None else initial(str(init), x, d, k, gen, first=r == 0).cpu()
        lab, history, converged = run(
            *host, lab0, k, runs.reg, runs.max_iter, runs.tol, runs.escapes, splits, memo
        )
        finals.append(history[-1])
        if best is None or history[-1] < best[0]:
            best = (history[-1], lab, history, converged)
    assert best is not None
    return best[1], best[2], best[3], finals


def kway_ncut_value(W: Any, labels: Any, *, self_loops: bool = False) -> float:
    """K-way normalized cut ``sum_k cut(A_k, V \\ A_k) / vol(A_k)`` of a labelling.

    Parameters
    ----------
    W : torch.Tensor or numpy.ndarray
        ``(N, N)`` dense symmetric non-negative affinity (checked as in :func:`kway_ncut`).
    labels : array_like
        One integer label per node, ``(N,)`` or grid-shaped in raster order; any label values.
    self_loops : bool, default False
        Keep the diagonal of ``W`` (default: ignored, as :func:`kway_ncut` does by default).

    Returns
    -------
    float
        ``sum_k (vol_k - assoc_k) / vol_k`` over the segments present; a segment of zero volume (only
        isolated nodes) has no cut and adds 0. One segment gives 0.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[0, 1, 0.1], [1, 0, 0.1], [0.1, 0.1, 0]])
    >>> round(kway_ncut_value(W, [0, 0, 1]), 4)  # 0.2 / 2.2 + 0.2 / 0.2
    1.0909
    """
    a, d = _host(*_graph(W, bool(self_loops)))
    return _value(a, d, _codes(labels, a.shape[0])[0])


def _value(a: torch.Tensor, d: torch.Tensor, codes: np.ndarray) -> float:
    """NCut of compact codes 0..K-1 on a prepared graph."""
    _, vol, assoc = state(a, d, torch.from_numpy(codes), int(codes.max()) + 1)
    return ncut_of(vol, assoc)
