"""The spectrum behind the cuts: the smallest eigenpairs of a patch graph's normalised Laplacian, and the
eigengap rule for a number of clusters.

:func:`laplacian_spectrum` computes what the eigenvector views draw (:mod:`diffcut_lab.viz.eigen`);
:func:`eigengap` is the one rule that picks a number of clusters from it (the spectral baseline of
:func:`~diffcut_lab.baselines.segment_features` uses it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = ["Spectrum", "eigengap", "laplacian_spectrum"]


def eigengap(values: Any, *, min_clusters: int = 2, max_clusters: int | None = None) -> int:
    """The number of clusters ``k`` in ``[min_clusters, max_clusters]`` with the largest eigengap
    ``values[k] - values[k - 1]`` (eigenvalues ascending, 0-based): ``k`` small eigenvalues, then a jump.

    Examples
    --------
    >>> eigengap([0.0, 0.01, 0.02, 0.9, 0.95])
    3
    """
    v = np.asarray(values, dtype=np.float64)
    for name, value in (("min_clusters", min_clusters), ("max_clusters", max_clusters)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ParameterError(f"{name} must be an integer >= 1; got {value!r}.")
    lo = int(min_clusters)
    hi = v.size - 1 if max_clusters is None else min(int(max_clusters), v.size - 1)
    if hi < lo:
        return max(1, min(lo, v.size))
    gaps = v[lo : hi + 1] - v[lo - 1 : hi]
    return int(lo + np.argmax(gaps))


@dataclass(frozen=True)
class Spectrum:
    """Smallest eigenpairs of the symmetric normalised Laplacian ``I - D^{-1/2} W D^{-1/2}``.

    ``values`` (m,) ascending; ``vectors`` (N, m) generalized eigenvectors ``D^{-1/2} v`` with a fixed
    sign (largest magnitude entry positive); ``W`` the (N, N) affinity; ``grid`` (h, w).
    """

    values: np.ndarray
    vectors: np.ndarray
    W: np.ndarray
    grid: tuple[int, int]

    @property
    def largest_gap(self) -> int:
        """Index ``j >= 1`` of the eigenvalue after which the gap is largest (``j + 1`` clusters,
        :func:`eigengap`)."""
        if self.values.size < 3:
            return 1
        return eigengap(self.values) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values.tolist(), "grid": list(self.grid), "largest_gap": self.largest_gap}


def _affinity_and_grid(W_or_features: Any, grid: tuple[int, int] | None, alpha: float) -> tuple[np.ndarray, tuple]:
    x = W_or_features
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3:  # (C, h, w) features -> the library's affinity
        from .affinities import affinity

        W = affinity(x, alpha=alpha)
        W = W.detach().cpu().numpy() if hasattr(W, "detach") else np.asarray(W)
        return W.astype(np.float64), (int(x.shape[1]), int(x.shape[2]))
    if x.ndim == 2 and x.shape[0] == x.shape[1]:
        if grid is None:
            side = int(np.sqrt(x.shape[0]))
            if side * side != x.shape[0]:
                raise ValueError(f"an affinity of {x.shape[0]} nodes is not square: pass grid=(h, w)")
            grid = (side, side)
        if grid[0] * grid[1] != x.shape[0]:
            raise ValueError(f"grid {grid} does not have {x.shape[0]} cells")
        return x.astype(np.float64), (int(grid[0]), int(grid[1]))
    raise ValueError(f"expected (C, h, w) features or an (N, N) affinity, got shape {x.shape}")


def laplacian_spectrum(
    W_or_features: Any, m: int = 20, grid: tuple[int, int] | None = None, *, alpha: float = 10.0
) -> Spectrum:
    """The ``m`` smallest eigenpairs of the normalised Laplacian of an affinity (or of ``affinity(features,
    alpha)`` when ``(C, h, w)`` features are given)."""
    from scipy.linalg import eigh

    W, grid = _affinity_and_grid(W_or_features, grid, alpha)
    n = W.shape[0]
    m = int(min(max(m, 2), n))
    d = W.sum(axis=1)
    dinv = 1.0 / np.sqrt(np.maximum(d, 1e-12))
    lap = np.eye(n) - dinv[:, None] * W * dinv[None, :]
    vals, vecs = eigh(lap, subset_by_index=[0, m - 1], driver="evr")
    ys = vecs * dinv[:, None]
    idx = np.abs(ys).argmax(axis=0)
    ys = ys * np.sign(ys[idx, np.arange(m)])[None, :]
    return Spectrum(values=np.clip(vals, 0, None), vectors=ys, W=W, grid=grid)
