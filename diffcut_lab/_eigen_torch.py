"""The fixed mode's cut of one sub-graph in torch, on the graph's own device (private helpers).

The same arithmetic as :mod:`diffcut_lab._eigen` and :func:`diffcut_lab._cut_attempt.fixed_attempt` --
the sub-graph without self-loops, the generalised Fiedler vector ``y = D^-1/2 v`` of the symmetric
normalised Laplacian in float64, its sign fixed, and the exact sweep over every cut point of the sorted
vector -- written for a dense torch graph so that a GPU never hands the affinity back to the host: only
the step's record (the Fiedler vector, the candidates, the chosen side) comes back. The solve is a dense
``torch.linalg.eigh`` (``CutStep.solver == "torch64"``).

On the CPU the numpy/scipy path is faster (it solves for three eigenpairs, or runs Lanczos above 256
nodes), so :func:`diffcut_lab.ncut.recursive_ncut` takes this path on the CPU only when asked
(``solver="torch64"``); on an accelerator ``"auto"`` takes it.
"""

from __future__ import annotations

import numpy as np
import torch

from ._cut_attempt import Attempt, fixed_attempt

__all__ = ["DEVICE_DENSE_MAX", "torch_attempt", "uses_device_path"]

#: "auto" on an accelerator: dense float64 eigh on the device up to this many nodes (a 16384-node float64
#: sub-graph is 2 GiB), the host's Lanczos solve above
DEVICE_DENSE_MAX = 16384


def uses_device_path(g: torch.Tensor, solver: str) -> bool:
    """Whether the fixed-mode recursion on ``g`` runs in torch on its device (else numpy on the host)."""
    return solver == "torch64" or (solver == "auto" and g.device.type != "cpu" and g.shape[0] <= DEVICE_DENSE_MAX)


def _connected(sub: torch.Tensor) -> bool:
    """Whether the graph (positive off-diagonal weights) is connected: a breadth-first sweep by blocks."""
    n = sub.shape[0]
    reach = sub[0] > 0
    reach[0] = True
    count = int(reach.sum())
    while count < n:
        grown = reach | (sub[reach] > 0).any(dim=0)
        new = int(grown.sum())
        if new == count:
            return False
        reach, count = grown, new
    return True


def fiedler(sub: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Sign-fixed ``y = D^-1/2 v``, ``v`` the eigenvector of the second smallest eigenvalue of
    ``I - D^-1/2 W D^-1/2`` (dense float64 ``eigh``; the entry of largest magnitude made positive)."""
    s = d.rsqrt()
    m = -(s[:, None] * sub * s[None, :])
    m.diagonal().add_(1.0)
    _, vecs = torch.linalg.eigh(m)
    y = s * vecs[:, 1]
    return -y if bool(y[torch.argmax(y.abs())] < 0) else y


def sweep(sub: torch.Tensor, d: torch.Tensor, y: torch.Tensor, min_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact NCut of every threshold between distinct sorted values of ``y`` (see :func:`diffcut_lab._eigen.sweep`).

    With the nodes sorted by decreasing ``y``, the weight inside the top-``p`` set is the cumulative sum of
    each row's strictly-lower-triangular part (the sub-graph has no self-loops).
    """
    n = y.shape[0]
    order = torch.argsort(-y, stable=True)
    g = sub[order][:, order]
    inner = torch.cumsum(2.0 * torch.tril(g, diagonal=-1).sum(1), 0)
    vol_p = torch.cumsum(d[order], 0)
    vp = vol_p[:-1]
    vn = vol_p[-1] - vp
    cut = (vp - inner[:-1]).clamp_min(0.0)
    nc = torch.where(cut <= 0, torch.zeros_like(cut), cut / vp + cut / vn)
    ys = y[order]
    p = torch.arange(1, n, device=y.device)
    valid = (ys[:-1] > ys[1:]) & (p >= min_size) & (n - p >= min_size)
    thr = 0.5 * (ys[:-1] + ys[1:])
    thr = torch.where(thr >= ys[:-1], ys[1:], thr)  # rounding: keep ys[p] <= thr < ys[p - 1]
    return thr[valid].flip(0), nc[valid].flip(0)


def torch_attempt(g: torch.Tensor, members: np.ndarray, min_size: int) -> Attempt:
    """The fixed-mode cut of the sub-graph on ``members`` of a dense torch graph, on its device.

    A disconnected sub-graph (rare on dense affinities) is handed to the host path, which splits it along
    its components.
    """
    idx = torch.as_tensor(members, device=g.device)
    sub = g[idx][:, idx].to(torch.float64)
    sub.fill_diagonal_(0.0)
    d = sub.sum(1)
    if not bool((d > 0).all()) or not _connected(sub):
        return fixed_attempt(sub.cpu().numpy(), np.arange(members.shape[0]), "dense", None, min_size)
    y = fiedler(sub, d)
    thr, nc = sweep(sub, d, y, min_size)
    y_np = y.cpu().numpy()
    if thr.shape[0] == 0:
        return Attempt.rejected("no threshold leaves min_size nodes on both sides", fiedler=y_np, solver="torch64")
    best = int(torch.argmin(nc))
    thr_np, nc_np = thr.cpu().numpy(), nc.cpu().numpy()
    return Attempt(
        fiedler=y_np,
        thresholds=thr_np,
        ncut_values=nc_np,
        threshold=float(thr_np[best]),
        ncut=float(nc_np[best]),
        positive=y_np > thr_np[best],
        solver="torch64",
    )
