"""Random walks on self-attention: a diffusion UNet's attention probabilities as a Markov chain.

Row ``i`` of a self-attention probability matrix (softmax over keys, heads averaged) is a probability
distribution over the patches that patch ``i`` attends to, so the ``(N, N)`` matrix is the transition
matrix ``P`` of a random walk between patches (Ivanova et al., "Unsupervised Segmentation by Diffusing,
Walking and Cutting", arXiv 2412.04678, WACV 2026). ``P^k`` holds the ``k``-step transition
probabilities: larger ``k`` joins patches that reach each other through intermediate patches, so ``k``
sets the granularity of the segments.

The normalized cut needs an undirected (symmetric) graph. :func:`walk_affinity` builds the one whose NCut
*is* the random-walk NCut of Meila & Shi (2001), for any chain, reversible or not::

    NCut(A, B) = Pr(X_k in B | X_0 in A) + Pr(X_k in A | X_0 in B),   X_0 ~ pi (stationary)

that is, the probability that a walker started at equilibrium in one segment is in the other one ``k`` steps
later, summed over both segments. That graph is the symmetrised probability flow (Chung 2005)::

    F = (Pi P^k + (P^k)^T Pi) / 2,    Pi = diag(pi),  pi P = pi

whose degrees are ``pi`` and whose cut between ``A`` and ``B`` is the flow from ``A`` to ``B`` (equal to
the flow back at equilibrium). The plain average ``(P^k + (P^k)^T) / 2`` is available as
``symmetrize="mean"``; it agrees with the flow graph only when ``pi`` is uniform.

Functions are pure: torch in, torch out, on the input's device.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from .errors import FeatureError, ParameterError
from .validation import as_tensor, check_int

__all__ = [
    "max_walk_steps",
    "stationary_distribution",
    "symmetrize",
    "transition_matrix",
    "walk_affinity",
    "walk_matrix",
]

#: stationary distribution: the direct float64 solve up to this many states on the host, Arnoldi above
DIRECT_MAX = 2048
#: relative residual ``max |pi P - pi| / max pi`` at which the iterative stationary distribution is accepted
KRYLOV_RTOL = 1e-5
#: most ``N x N`` matrix products :func:`walk_matrix` forms above :data:`PRODUCT_FREE_MAX` nodes
MAX_LARGE_PRODUCTS = 1
#: above this many nodes, a dense ``N x N`` product costs more than the cut itself (16k: ~9 TFLOP)
PRODUCT_FREE_MAX = 4096

Symmetrize = Literal["stationary", "mean"]
Diagonal = Literal["walk", "unit", "zero"]


def _as_square(probs: Any) -> torch.Tensor:
    """``probs`` as a detached ``(N, N)`` real tensor (a leading axis of 1 is dropped)."""
    x = as_tensor(probs, "attention probabilities", "of shape (N, N)", error=ParameterError)
    if x.layout != torch.strided:
        x = x.to_dense()
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ParameterError(
            f"attention probabilities must be a square (N, N) matrix (or (1, N, N)), got shape "
            f"{tuple(x.shape)}. Average the heads and pick one image first, e.g. probs.mean(1)[0] for "
            "(B, heads, N, N)."
        )
    if x.shape[0] == 0:
        raise FeatureError("the attention matrix is empty (N = 0): there are no patches.")
    if x.is_complex() or x.dtype == torch.bool:
        raise ParameterError(f"attention probabilities have dtype {x.dtype}; expected real numbers.")
    return x


def transition_matrix(probs: Any) -> torch.Tensor:
    """The row-stochastic transition matrix ``P`` of the random walk that attention defines.

    Parameters
    ----------
    probs : torch.Tensor or numpy.ndarray
        ``(N, N)`` (or ``(1, N, N)``) non-negative attention probabilities, row ``i`` = where patch ``i``
        attends (query ``i``, keys along the row), heads already averaged. Rows that drift from 1 by
        rounding (fp16 softmax, head averaging) are renormalised; any non-negative matrix with positive
        row sums is accepted, so an affinity ``W`` gives its random walk ``D^-1 W``.

    Returns
    -------
    torch.Tensor
        ``(N, N)`` row-stochastic, float64 for float64 input and float32 otherwise, on the input's device.

    Raises
    ------
    ParameterError
        Not square, not real, or negative entries.
    FeatureError
        Empty, NaN or Inf entries, or a row of zeros (a patch that attends to nothing has no walk).

    Examples
    --------
    >>> import torch
    >>> P = transition_matrix(torch.softmax(torch.randn(16, 16), dim=1))
    >>> bool(torch.allclose(P.sum(1), torch.ones(16)))
    True
    """
    x = _as_square(probs)
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    low, high = float(x.min()), float(x.max())  # NaN propagates into both, +-Inf shows in one: no N x N mask
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int((~torch.isfinite(x)).sum())
        raise FeatureError(
            f"the attention matrix has {bad} NaN or Inf entries; capture attention in float32 (fp16 "
            "softmax can overflow) or check the hooked layer."
        )
    if low < 0:
        raise ParameterError(
            "the attention matrix has negative entries; pass probabilities (after softmax), not logits."
        )
    rows = x.sum(dim=1, keepdim=True)
    zero = rows.reshape(-1) <= 0
    if bool(zero.any()):
        first = int(torch.nonzero(zero)[0, 0])
        raise FeatureError(
            f"{int(zero.sum())} row(s) of the attention matrix are all zero (first: row {first}); a patch "
            "that attends to nothing has no random walk. Pass softmax probabilities over the keys."
        )
    return x / rows


def walk_matrix(probs: Any, steps: int) -> torch.Tensor:
    """The ``steps``-step transition matrix ``P^k`` of the attention random walk.

    Parameters
    ----------
    probs : torch.Tensor or numpy.ndarray
        Attention probabilities, as for :func:`transition_matrix`.
    steps : int
        Number of steps ``k >= 1``. ``P^k[i, j]`` is the probability that a walker at patch ``i`` is at
        patch ``j`` after ``k`` steps.

    Returns
    -------
    torch.Tensor
        ``(N, N)`` row-stochastic, dtype and device as :func:`transition_matrix`. Computed by repeated
        squaring (about ``log2 k`` products); equal to ``k`` successive products up to rounding, and rows
        renormalised against rounding drift.

    Raises
    ------
    ParameterError
        As :func:`transition_matrix`; ``steps < 1``; above :data:`PRODUCT_FREE_MAX` states, a ``steps``
        that needs more than :data:`MAX_LARGE_PRODUCTS` dense products (:func:`max_walk_steps`; at
        16,384 states one product alone is about 9 TFLOP) -- refused before any work.

    Examples
    --------
    >>> import torch
    >>> P = torch.softmax(torch.randn(8, 8), dim=1)
    >>> bool(torch.allclose(walk_matrix(P, 2), P @ P, atol=1e-6))
    True
    """
    k = check_int(steps, "steps", minimum=1, hint="It is the length of the random walk.")
    x = _as_square(probs)
    _check_size(x.shape[0], k)  # before any work
    return _power(transition_matrix(x), k)


def _products(k: int) -> int:
    """``N x N`` products of repeated squaring for ``P^k``: squarings plus the multiplications that join
    the binary digits."""
    return k.bit_length() - 1 + bin(k).count("1") - 1


def max_walk_steps(n: int) -> int:
    """The largest ``steps`` whose walk matrix on ``n`` states is formed: any up to
    :data:`PRODUCT_FREE_MAX` states, above that those of at most :data:`MAX_LARGE_PRODUCTS` products."""
    if n <= PRODUCT_FREE_MAX:
        return 2**62
    k = 1
    while _products(k + 1) <= MAX_LARGE_PRODUCTS:
        k += 1
    return k


def _check_size(n: int, k: int) -> None:
    """Refuse, before any work, a walk whose dense matrix power would cost more than the cut."""
    if k > max_walk_steps(n):
        tflop = 2.0 * n**3 * _products(k) / 1e12
        raise ParameterError(
            f"walk_steps={k} on {n} nodes needs {_products(k)} dense {n} x {n} matrix products (about "
            f"{tflop:.0f} TFLOP, far more than the cut itself); at this size use walk_steps <= "
            f"{max_walk_steps(n)}, or a grid of at most {PRODUCT_FREE_MAX} nodes (e.g. 64 x 64) for longer walks."
        )


def _power(p: torch.Tensor, k: int) -> torch.Tensor:
    """``P^k`` by repeated squaring, rows renormalised against rounding drift (in place)."""
    _check_size(p.shape[0], k)
    pk = torch.linalg.matrix_power(p, k) if k > 1 else p.clone()
    return pk.div_(pk.sum(dim=1, keepdim=True))


def stationary_distribution(P: torch.Tensor) -> torch.Tensor:
    """A stationary distribution ``pi`` of the row-stochastic ``P``: ``pi P = pi``, ``sum(pi) = 1``.

    Parameters
    ----------
    P : torch.Tensor
        ``(N, N)`` row-stochastic matrix (e.g. from :func:`transition_matrix`).

    Returns
    -------
    torch.Tensor
        ``(N,)`` in ``P``'s dtype and device, non-negative, summing to 1.

    Notes
    -----
    Up to :data:`DIRECT_MAX` states (and on accelerators at every size), solved directly (float64 LU of
    ``(I - P)^T`` with one equation replaced by ``sum(pi) = 1``, the rows of ``P`` renormalised in float64
    so that the dropped equation holds: float32 attention sums to 1 only within 1e-7, and a direct solve
    of the float32 chain failed its residual check), which is exact for an irreducible chain
    however slowly it mixes (attention between well separated objects mixes
    very slowly, so power iteration would need ``~1 / gap`` iterations). Softmax attention is strictly
    positive, hence irreducible. For a reducible chain (several closed classes, from an input with exact
    zeros) the solve is singular and ``pi`` is taken as the long-run distribution of a walker started
    uniformly, by repeated squaring of the lazy chain ``(I + P) / 2``; patches that the walk leaves for
    good (transient ones) then get ``pi = 0``.

    Above :data:`DIRECT_MAX` states on the host, a strictly positive ``P`` (softmax attention) goes to
    Arnoldi iterations on ``P^T`` instead, with products in ``P``'s precision (a float64 LU of a
    16,384-state chain takes many minutes and 6 GB), accepted when ``max |pi P - pi| <=``
    :data:`KRYLOV_RTOL` ``* max pi``: for float32 attention that is the precision of ``P`` itself (the
    stationary distribution of the float32-rounded chain is no more exact than that). Otherwise the direct
    solve runs.
    """
    n = P.shape[0]
    if n > DIRECT_MAX and P.device.type == "cpu" and float(P.min()) > 0:
        pi = _krylov_stationary(P)
        if pi is not None:
            return pi.to(P.dtype)
    # rows of float32 attention sum to 1 only within 1e-7: renormalised in float64 (our own copy), so that the
    # equation the solve drops (sum(pi) = 1 takes its place) holds, as it does for an exactly stochastic chain
    p64 = P.to(torch.float64, copy=True)
    p64 /= p64.sum(dim=1, keepdim=True).clamp_min(1e-300)
    a = (torch.eye(n, dtype=torch.float64, device=P.device) - p64).T.contiguous()
    a[-1] = 1.0
    b = torch.zeros(n, dtype=torch.float64, device=P.device)
    b[-1] = 1.0
    pi = None
    try:
        sol = torch.linalg.solve(a, b)
        ok = bool(torch.isfinite(sol).all()) and float(sol.min()) > -1e-9
        if ok and float((sol @ p64 - sol).abs().max()) <= 1e-9 * max(1.0, float(sol.abs().max())):
            pi = sol.clamp_min(0.0)
    except RuntimeError:  # torch.linalg.LinAlgError (singular) derives from RuntimeError
        pi = None
    if pi is None:
        lazy = 0.5 * (p64 + torch.eye(n, dtype=torch.float64, device=P.device))
        for _ in range(64):  # lazy^(2^64): far beyond any mixing time representable in float64
            nxt = lazy @ lazy
            nxt = nxt / nxt.sum(dim=1, keepdim=True)
            if float((nxt - lazy).abs().max()) <= 1e-13:
                lazy = nxt
                break
            lazy = nxt
        pi = lazy.mean(dim=0)
    return (pi / pi.sum()).to(P.dtype)


def _krylov_stationary(P: torch.Tensor) -> torch.Tensor | None:
    """``pi`` of a strictly positive (irreducible, aperiodic) chain on the host by Arnoldi (ARPACK ``eigs``
    on ``P^T``, one BLAS thread, fixed start vector), with products in ``P``'s own precision: no float64
    copy and no ``O(N^3)`` factorisation. None when it does not converge or its residual
    ``max |pi P - pi|`` exceeds :data:`KRYLOV_RTOL` of ``max pi`` (the caller then solves directly)."""
    import scipy.sparse.linalg

    from .threads import blas_threads

    n = P.shape[0]
    pt = P.numpy().T  # a view: products with P^T read P's rows

    def matvec(x: np.ndarray) -> np.ndarray:
        return (pt @ np.asarray(x, dtype=pt.dtype).reshape(-1)).astype(np.float64)

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.full(n, 1.0 / n)
    tol = 1e-12 if P.dtype == torch.float64 else 1e-6  # the products' own rounding
    try:
        with blas_threads(1):
            _, vecs = scipy.sparse.linalg.eigs(op, k=1, which="LR", v0=v0, tol=tol, maxiter=max(1000, n))
    except scipy.sparse.linalg.ArpackError:  # ArpackNoConvergence derives from it
        return None
    v = np.real(vecs[:, 0])
    v = v if v.sum() >= 0 else -v
    pi = torch.from_numpy(np.clip(v, 0.0, None))
    if not float(pi.sum()) > 0:
        return None
    pi = pi / pi.sum()
    residual = torch.from_numpy(matvec(pi.numpy())) - pi
    if not float(residual.abs().max()) <= KRYLOV_RTOL * float(pi.max()):
        return None
    return pi


def symmetrize(
    P: torch.Tensor, *, method: Symmetrize = "stationary", pi: torch.Tensor | None = None
) -> torch.Tensor:
    """The undirected graph of a (possibly non-reversible) random walk ``P``.

    Parameters
    ----------
    P : torch.Tensor
        ``(N, N)`` row-stochastic matrix (``P`` or ``P^k``).
    method : {"stationary", "mean"}, default "stationary"
        ``"stationary"``: the symmetrised probability flow ``(Pi P + P^T Pi) / 2`` with ``Pi = diag(pi)``;
        its degrees are ``pi`` and its NCut is the random-walk NCut ``Pr(A -> B | A) + Pr(B -> A | B)``
        (see the module docstring). ``"mean"``: ``(P + P^T) / 2``, the simpler average; its degrees are
        ``(1 + column sums) / 2``, so patches that many others attend to weigh more.
    pi : torch.Tensor, optional
        The stationary distribution of the one-step chain, when already known (``P^k`` shares it).

    Returns
    -------
    torch.Tensor
        ``(N, N)`` symmetric (bit-exact) non-negative, ``P``'s dtype and device, self-loops kept.
    """
    if method not in ("stationary", "mean"):
        raise ParameterError(f"method must be 'stationary' or 'mean', got {method!r}.")
    return _symmetric(P, method, pi)


def _symmetric(P: torch.Tensor, method: str, pi: torch.Tensor | None, inplace: bool = False) -> torch.Tensor:
    """``(G + G^T) / 2`` with ``G = P`` or ``Pi P``; ``inplace``: ``P`` may be overwritten (one ``N x N``
    matrix in all, no temporaries of that size)."""
    if method == "mean":
        g = P if inplace else P.clone()
    else:
        w = stationary_distribution(P) if pi is None else pi.to(P.dtype)
        g = P.mul_(w[:, None]) if inplace else w[:, None] * P
    return _mean_with_transpose_(g)


_BLOCK = 1024  # rows per tile of the in-place symmetrisation


def _mean_with_transpose_(g: torch.Tensor) -> torch.Tensor:
    """``g <- (g + g^T) / 2`` in place, tile by tile: bit-exact symmetry (each pair is averaged once and
    written to both places), the same values as ``0.5 * (g + g.T)``."""
    n = g.shape[0]
    for i in range(0, n, _BLOCK):
        rows = slice(i, min(i + _BLOCK, n))
        for j in range(i, n, _BLOCK):
            cols = slice(j, min(j + _BLOCK, n))
            mean = 0.5 * (g[rows, cols] + g[cols, rows].T)
            g[rows, cols] = mean
            g[cols, rows] = mean.T
    return g


def walk_affinity(
    probs: Any,
    steps: int = 1,
    *,
    symmetrize: Symmetrize = "stationary",
    diagonal: Diagonal = "walk",
) -> torch.Tensor:
    """The symmetric graph the cut runs on: the ``steps``-step attention walk, symmetrised, unit scale.

    Parameters
    ----------
    probs : torch.Tensor or numpy.ndarray
        ``(N, N)`` (or ``(1, N, N)``) attention probabilities, heads averaged (see
        :func:`transition_matrix`).
    steps : int, default 1
        Walk length ``k``: the graph is built from ``P^k``. Larger ``k``, coarser segments.
    symmetrize : {"stationary", "mean"}, default "stationary"
        ``"stationary"``: ``(Pi P^k + (P^k)^T Pi) / 2`` with ``pi`` the stationary distribution of ``P``
        (also that of ``P^k``), the graph whose normalized cut is the random-walk NCut (Meila & Shi)
        that the paper minimises: the probability of crossing between segments in ``k`` steps at
        equilibrium. ``"mean"``: ``(P^k + (P^k)^T) / 2``.
    diagonal : {"walk", "unit", "zero"}, default "walk"
        The self-loops. ``"walk"`` keeps the walk's own return flow ``pi_i P^k_ii`` (staying put is a
        transition, so the random-walk NCut counts it in the volumes), ``"unit"`` sets them to 1 like
        :func:`~diffcut_lab.affinity` (after scaling, 1 is the largest weight), ``"zero"`` removes them.
        ``recursive_ncut(..., mode="fixed")`` ignores self-loops whatever they are (its NCut is then that
        of the walk conditioned on moving); ``mode="paper"`` keeps them in the degrees, as it does with
        the unit diagonal of the cosine affinity.

    Returns
    -------
    torch.Tensor
        ``(N, N)`` float32, symmetric, non-negative and finite, on the input's device, in ``[0, 1]``:
        divided by its largest weight (self-loops included with ``diagonal="walk"``, excluded otherwise),
        so the scale is that of :func:`~diffcut_lab.affinity` (NCut values do not depend on the scale).
        Ready for :func:`~diffcut_lab.recursive_ncut`.

    Raises
    ------
    ParameterError, FeatureError
        As :func:`transition_matrix`; ``steps < 1``; an unknown ``symmetrize`` or ``diagonal``.

    Notes
    -----
    The products are formed in the input's precision (float32 for attention captured in float32 or
    fp16); the stationary distribution is solved in float64 up to :data:`DIRECT_MAX` patches, by Arnoldi
    iterations above (:func:`stationary_distribution`). Cost: about ``log2 k`` ``N x N`` products (above
    :data:`PRODUCT_FREE_MAX` patches at most :data:`MAX_LARGE_PRODUCTS`: longer walks are refused up
    front, see :func:`walk_matrix`) plus the stationary distribution; memory: the input and about two
    ``N x N`` matrices in its precision.

    Examples
    --------
    >>> import torch
    >>> probs = torch.softmax(torch.randn(64, 64), dim=1)
    >>> W = walk_affinity(probs, steps=4)
    >>> bool(torch.equal(W, W.T)), W.dtype
    (True, torch.float32)
    """
    if diagonal not in ("walk", "unit", "zero"):
        raise ParameterError(f"diagonal must be 'walk', 'unit' or 'zero', got {diagonal!r}.")
    if symmetrize not in ("stationary", "mean"):
        raise ParameterError(f"symmetrize must be 'stationary' or 'mean', got {symmetrize!r}.")
    k = check_int(steps, "steps", minimum=1, hint="It is the length of the random walk.")
    p = _as_square(probs)
    _check_size(p.shape[0], k)  # before any work
    p = transition_matrix(p)
    pi = stationary_distribution(p) if symmetrize == "stationary" else None
    pk = _power(p, k) if k > 1 else p
    g = _symmetric(pk, symmetrize, pi, inplace=True)  # pk is a new matrix (transition_matrix copies)
    if diagonal != "walk":
        g.fill_diagonal_(0.0)
    top = float(g.max())
    if top > 0:  # top == 0: a single patch, or a walk that only stays put
        g.div_(top)
    if diagonal == "unit":
        g.fill_diagonal_(1.0)
    return g.to(torch.float32)
