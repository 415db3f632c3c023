"""A plain, loop-based transcription of the published recursive NCut (for tests and benchmarks only).

It follows the published algorithm step by step, in its own numerics and with its own costs, and is
deliberately written independently of the fast code in :mod:`diffcut_lab.ncut`:

- the full ``N x N`` affinity is carried down the recursion; explored ("painted") pixels are masked by
  zeroing the affinity between every pair of painted pixels (an outer product, ``N x N``);
- at depth > 0 every node whose row holds any zero is dropped from the sub-graph;
- degree and Laplacian as dense matrices; ``torch.linalg.eigh`` in float32 on ``D^-1/2 (D - A) D^-1/2``
  built with two dense matrix products; eigenvector index 1; ``y = D^-1/2 v``; the entry of largest
  magnitude made positive;
- 100 thresholds ``linspace(0.99 min y, 0.99 max y)``, each scored in a Python loop with the discrete
  Shi-Malik NCut; the value is Python's ``min`` of the list, the partition the ``np.argmin`` one;
- a cut is accepted iff ``ncut < tau``; depth first, the positive side first, then its complement.

Labels are the partition induced by the accepted masks (the published label assembly overflows after
about 127 accepted cuts; the masks themselves are what this module reproduces).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["clustered_features", "reference_affinity", "reference_ncut", "reference_ncut_step"]


def reference_affinity(features: torch.Tensor, alpha: float = 10) -> torch.Tensor:
    """Published affinity from ``(C, N)`` or ``(C, h, w)`` features (float32)."""
    x = features.reshape(features.shape[0], -1).to(torch.float32)
    x = torch.nn.functional.normalize(x, p=2, dim=0)
    s = torch.t(x) @ x
    s = (s - s.min()) / (s.max() - s.min())
    return s**alpha


def reference_ncut_step(
    a: torch.Tensor, k: int = 100
) -> tuple[torch.Tensor, torch.Tensor, float, list[float]]:
    """One published bipartition of the sub-graph ``a`` (float32 dense).

    Returns ``(y, positive, ncut, ncut_values)``: the sign-fixed Fiedler vector, the chosen positive side
    (float 0/1), the NCut value Python's ``min`` gives, and all candidate values.
    """
    deg = torch.diag(torch.sum(a, dim=1))
    inv_sqrt = torch.diag(1 / torch.diag(deg) ** 0.5)
    _, vecs = torch.linalg.eigh(inv_sqrt @ (deg - a) @ inv_sqrt)
    y = inv_sqrt @ vecs[:, 1]
    y = y * torch.sign(y[torch.argmax(torch.abs(y))])
    lo, hi = y.min() * 0.99, y.max() * 0.99
    lap = deg - a
    total = torch.sum(deg)
    dvec = torch.diag(deg)
    parts, values = [], []
    for thr in torch.linspace(lo, hi, k):
        part = 1.0 * (y > thr)
        x = 2 * part - 1
        frac = torch.sum(dvec * (x > 0)) / total
        b = frac / (1 - frac)
        z = (1 + x) - b * (1 - x)
        values.append(((z @ lap @ z) / (z @ deg @ z)).item())
        parts.append(part)
    return y, parts[int(np.argmin(values))], min(values), values


def reference_ncut(w: torch.Tensor, tau: float = 0.5) -> tuple[list[np.ndarray], np.ndarray]:
    """Run the published recursion on the float32 affinity ``w`` (N x N).

    Returns ``(masks, labels)``: the accepted positive-side masks (bool, length N) in acceptance order,
    and labels ``(N,)`` numbered 0..K-1 by first occurrence in raster order.
    """
    w = w.to(torch.float32)
    n = w.shape[0]
    masks: list[np.ndarray] = []

    def recurse(aff: torch.Tensor, painting: torch.Tensor, mask: torch.Tensor, level: int) -> None:
        painting = ((painting + mask) > 0).to(torch.float32)
        aff = aff * (1 - torch.outer(painting, painting))
        if level == 0:
            keep = list(range(n))
        else:
            has_zero = set(torch.unique(torch.where(aff == 0)[0]).tolist())
            keep = sorted(set(range(n)) - has_zero)
        a = aff[:, keep][keep, :]
        if a.shape[0] <= 1:
            return
        _, part, ncut, _ = reference_ncut_step(a)
        full = torch.zeros(n)
        full[keep] = part
        if ncut < tau:
            masks.append(full.numpy() > 0)
            recurse(aff, painting, 1 - full, level + 1)
            recurse(aff, painting, full, level + 1)

    recurse(w, torch.zeros(n), torch.zeros(n), 0)
    codes = np.zeros(n, dtype=object)
    for i, m in enumerate(masks):
        codes[m] += 1 << i
    _, first, inverse = np.unique(codes.astype(str), return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return masks, rank[inverse].astype(np.int64)


def clustered_features(
    seed: int, h: int, w: int, *, channels: int = 256, k: int = 5, noise: float = 0.6
) -> torch.Tensor:
    """``(C, h, w)`` test features: ``k`` random Voronoi regions, each a random centre plus Gaussian noise."""
    gen = torch.Generator().manual_seed(int(seed))
    centres = torch.randn(k, channels, generator=gen)
    sites = torch.rand(k, 2, generator=gen) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dist = (yy[None] - sites[:, 0, None, None]) ** 2 + (xx[None] - sites[:, 1, None, None]) ** 2
    region = dist.argmin(0)
    feats = centres[region].permute(2, 0, 1)
    return feats + noise * torch.randn(channels, h, w, generator=gen)
