"""Starts of the K-way normalized cut (private; :func:`diffcut_lab.kway.kway_ncut` calls them).

``init="spectral"``: the top-K eigenvectors of ``D^-1/2 W D^-1/2`` (dense ``eigh`` up to
:data:`~diffcut_lab._eigen.DENSE_MAX` nodes, Lanczos or LOBPCG above), the first run from their
cluster_qr assignment, the others from k-means++ + Lloyd on the Ng-Jordan-Weiss rows;
``"k-means++"`` and ``"random"`` seed on the rows of the random-walk matrix ``D^-1 W``. Random draws come
from a CPU ``torch.Generator``, so every device draws the same seeds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._eigen import DENSE_MAX
from .threads import blas_threads

__all__ = ["initial", "lobpcg_top", "spectral_embedding", "top_eigvecs", "walk_rows"]


def _sample(weights: torch.Tensor, gen: torch.Generator, n: int = 1) -> torch.Tensor:
    """``n`` indices drawn with probability proportional to ``weights`` (uniform if they sum to 0),
    on the CPU generator so that every device draws the same nodes."""
    w = weights.detach().double().cpu().clamp_min(0.0)
    if not float(w.sum()) > 0:
        w = torch.ones_like(w)
    return torch.multinomial(w, n, replacement=True, generator=gen).to(weights.device)


def _kmeanspp(x: torch.Tensor, weight: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (``2 + log k`` trials a seed) of the rows of ``x``, points weighted by
    ``weight``; returns ``k`` distinct row indices."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    trials = 2 + int(math.log(k))
    seeds = [int(_sample(weight, gen)[0])]
    closest = (sq + sq[seeds[0]] - 2.0 * (x @ x[seeds[0]])).clamp_min(0.0)
    chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
    chosen[seeds[0]] = True
    for _ in range(1, k):
        pot = weight * closest
        pot = torch.where(chosen, 0.0, pot)
        if not float(pot.sum()) > 0:  # every remaining point coincides with a seed: any unchosen one
            pot = (~chosen).to(x.dtype)
        cand = _sample(pot, gen, trials)
        dist = (sq[None, :] + sq[cand][:, None] - 2.0 * (x[cand] @ x.T)).clamp_min(0.0)
        new_closest = torch.minimum(closest[None, :], dist)
        best = int(torch.argmin((weight[None, :] * new_closest).sum(1)))
        c = int(cand[best])
        seeds.append(c)
        chosen[c] = True
        closest = new_closest[best]
    return torch.tensor(seeds, device=x.device)


def _nearest(x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Label of the nearest seed for every row of ``x``; each seed keeps its own label."""
    c = x[seeds]
    dist = (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
    lab = dist.argmin(1)
    lab[seeds] = torch.arange(seeds.shape[0], device=x.device)
    return lab


def top_eigvecs(a: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k eigenvectors ``(N, k)`` of ``D^-1/2 W D^-1/2``: dense ``eigh`` for small graphs, else Lanczos
    (ARPACK on one BLAS thread from a fixed start vector, on the host) or LOBPCG (other devices); products
    with ``W`` only, no ``O(N^3)`` step and no ``N x N`` copy. Deterministic for a given graph."""
    import scipy.linalg
    import scipy.sparse.linalg

    n = a.shape[0]
    s = torch.where(d > 0, d.clamp_min(1e-300).rsqrt(), 0.0)
    if n <= max(DENSE_MAX, 4 * k):
        m = s[:, None] * a * s[None, :]
        if a.device.type != "cpu":
            return torch.linalg.eigh(m)[1][:, -k:]
        with blas_threads(1):  # the k eigenpairs only (LAPACK's MRRR)
            vecs = scipy.linalg.eigh(
                m.numpy(), subset_by_index=[n - k, n - 1], driver="evr", check_finite=False
            )[1]
        return torch.from_numpy(vecs)
    if a.device.type == "cpu":
        a_np, s_np = a.numpy(), s.numpy()

        def matvec(x: np.ndarray) -> np.ndarray:
            return s_np * (a_np @ (s_np * np.asarray(x).reshape(-1)))

        op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=a_np.dtype)
        v0 = np.cos(np.arange(n) * 0.7) + 0.1  # deterministic start (ARPACK's default is random)
        with blas_threads(1):
            try:
                _, vecs = scipy.sparse.linalg.eigsh(
                    op, k=k, which="LA", v0=v0, tol=1e-8, maxiter=max(1000, 10 * n)
                )
            except scipy.sparse.linalg.ArpackNoConvergence as exc:  # unconverged vectors still seed well
                vecs = exc.eigenvectors if exc.eigenvectors.shape[1] == k else None
        if vecs is not None:
            return torch.from_numpy(np.ascontiguousarray(vecs))
        return torch.linalg.eigh(s[:, None] * a * s[None, :])[1][:, -k:]
    return lobpcg_top(s[:, None] * a * s[None, :], k)


def lobpcg_top(m: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k eigenvectors ``(N, k)`` of the symmetric ``m`` by LOBPCG on its device, from a fixed start
    (normal draws of a CPU generator seeded 0: independent columns, the same on every device)."""
    n = m.shape[0]
    x0 = torch.randn(n, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(
        m.device, m.dtype
    )
    _, vecs = torch.lobpcg(m, k=k, X=x0, largest=True, tol=1e-8, niter=1000)
    return vecs


def spectral_embedding(a: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    """Ng-Jordan-Weiss: top-k eigenvectors of ``D^-1/2 W D^-1/2`` (:func:`top_eigvecs`), rows scaled to
    unit length."""
    emb = top_eigvecs(a, d, k)
    return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _cluster_qr(emb: torch.Tensor, k: int) -> torch.Tensor | None:
    """Deterministic labels from a spectral embedding (Damle, Minden & Ying 2019): column-pivoted QR of
    ``V^T`` picks K representative nodes, the polar factor of their rows rotates ``V`` onto the axes, and
    each node takes its largest coordinate. Invariant to the basis of the eigenspace (signs, rotations).
    None when a label is left empty."""
    import scipy.linalg

    v = emb.detach().cpu().double().numpy()
    _, _, piv = scipy.linalg.qr(v.T, pivoting=True, mode="economic", check_finite=False)
    u, _, vt = np.linalg.svd(v[piv[:k], :].T)
    lab = np.abs(v @ (u @ vt)).argmax(axis=1)
    missing = np.setdiff1d(np.arange(k), lab)
    lab[piv[missing]] = missing  # a label nobody took: its own representative node
    if np.unique(lab).shape[0] < k:
        return None
    return torch.from_numpy(lab.astype(np.int64)).to(emb.device)


def _lloyd(x: torch.Tensor, lab: torch.Tensor, k: int, n_iter: int = 100) -> torch.Tensor:
    """Plain k-means iterations from ``lab``; an emptied cluster takes the point farthest from its centre."""
    for _ in range(n_iter):
        counts = torch.bincount(lab, minlength=k).to(x.dtype)
        centres = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, lab, x)
        centres = centres / counts.clamp_min(1.0)[:, None]
        dist = (centres * centres).sum(1)[None, :] - 2.0 * (x @ centres.T)
        new = dist.argmin(1)
        counts = torch.bincount(new, minlength=k)
        for e in torch.nonzero(counts == 0).reshape(-1).tolist():
            own = dist.gather(1, new[:, None]).squeeze(1) + (x * x).sum(1)
            own[torch.bincount(new, minlength=k)[new] <= 1] = -1.0  # never empty another cluster
            new[int(own.argmax())] = e
        if torch.equal(new, lab):
            break
        lab = new
    return lab


def walk_rows(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The random-walk rows ``D^-1 W`` (zero rows for isolated nodes)."""
    return a * torch.where(d > 0, 1.0 / d.clamp_min(1e-300), 0.0)[:, None]


def initial(
    init: str, x: torch.Tensor, d: torch.Tensor, k: int, gen: torch.Generator, first: bool = False
) -> torch.Tensor:
    """Start labels: ``x`` is the spectral embedding for ``init="spectral"`` (cluster_qr for the ``first``
    run, k-means++ and Lloyd iterations for the others), else the random-walk rows ``D^-1 W``."""
    if init == "spectral":
        lab = _cluster_qr(x, k) if first else None
        return lab if lab is not None else _lloyd(x, _nearest(x, _kmeanspp(x, torch.ones_like(d), k, gen)), k)
    if init == "random":
        seeds = torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)
    else:
        seeds = _kmeanspp(x, torch.where(d > 0, d, 1e-12 * float(d.max()) + 1e-300), k, gen)
    return _nearest(x, seeds)
