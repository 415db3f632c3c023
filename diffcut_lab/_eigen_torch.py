"""The fixed mode's cut of one sub-graph in torch, on the graph's own device (private helpers).

The same arithmetic as :mod:`diffcut_lab._eigen` and :func:`diffcut_lab._cut_attempt.fixed_attempt` --
the sub-graph without self-loops, the generalised Fiedler vector ``y = D^-1/2 v`` of the symmetric
normalised Laplacian in float64, its sign fixed, and the exact sweep over every cut point of the sorted
vector -- written for a dense torch graph so that a GPU never hands the affinity back to the host: only
the step's record (the Fiedler vector, the candidates, the chosen side) comes back. The solve is a dense
``torch.linalg.eigh`` (``CutStep.solver == "torch64"``).

On the CPU the numpy/scipy path is faster (it solves for three eigenpairs, or runs Lanczos above
:data:`~diffcut_lab._eigen.DENSE_MAX` nodes), so :func:`diffcut_lab.ncut.recursive_ncut` takes this
path on the CPU only when asked (``solver="torch64"``); on an accelerator ``"auto"`` takes it.
"""

from __future__ import annotations

import numpy as np
import torch

from ._cut_attempt import Attempt, fixed_attempt
from ._eigen import connected

__all__ = ["DEVICE_DENSE_MAX", "DEVICE_EIGH_MAX", "torch_attempt", "uses_device_path"]

#: "auto" on an accelerator: the cut on the device up to this many nodes (a 16384-node float64 sub-graph
#: is 2 GiB), the host's Lanczos solve above
DEVICE_DENSE_MAX = 16384
#: on the device path, dense float64 ``eigh`` (every eigenpair) up to this many nodes, Lanczos above
DEVICE_EIGH_MAX = 1024


def uses_device_path(g: torch.Tensor, solver: str) -> bool:
    """Whether the fixed-mode recursion on ``g`` runs in torch on its device (else numpy on the host)."""
    return solver == "torch64" or (
        solver == "auto" and g.device.type != "cpu" and g.shape[0] <= DEVICE_DENSE_MAX
    )


def fiedler(sub: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Sign-fixed ``y = D^-1/2 v``, ``v`` the eigenvector of the second smallest eigenvalue of
    ``I - D^-1/2 W D^-1/2`` (the entry of largest magnitude made positive), and the solver that found it.

    Dense float64 ``eigh`` (``"torch64"``) up to :data:`DEVICE_EIGH_MAX` nodes; above, Lanczos on the
    device (``"torch64-lanczos"``): products with the scaled sub-graph only, no ``O(N^3)`` step and no
    eigenpair beyond the one needed; if it does not converge, the dense solve.
    """
    s = d.rsqrt()
    m = s[:, None] * sub * s[None, :]  # D^-1/2 W D^-1/2: its top eigenvector is sqrt(d), Fiedler the next
    solver = "torch64"
    v = None
    if sub.shape[0] > DEVICE_EIGH_MAX:
        u = d.sqrt()
        v = _lanczos_top(m, u / u.norm())
        solver = "torch64-lanczos"
    if v is None:
        m.neg_().diagonal().add_(1.0)
        v = torch.linalg.eigh(m)[1][:, 1]
        solver = "torch64"
    y = s * v
    return (-y if bool(y[torch.argmax(y.abs())] < 0) else y), solver


def _lanczos_top(
    m: torch.Tensor, u: torch.Tensor, tol: float = 1e-10, steps: int = 160, restarts: int = 60
) -> torch.Tensor | None:
    """Eigenvector of the largest eigenvalue of the symmetric ``m`` on the complement of the unit vector
    ``u`` (an eigenvector of ``m``): Lanczos with full reorthogonalisation, restarted from its Ritz vector,
    from a fixed start (deterministic). None if the residual ``||m v - theta v||`` does not reach
    ``tol * max(1, |theta|)``. Memory: ``steps`` vectors."""
    n = m.shape[0]
    steps = max(2, min(steps, n - 1))
    x = torch.cos(torch.arange(n, dtype=m.dtype, device=m.device) * 0.7) + 0.1  # the host's start vector
    for _ in range(restarts):
        x = x - u * (u @ x)
        x = x / x.norm()
        basis = torch.zeros(steps, n, dtype=m.dtype, device=m.device)
        alpha = torch.zeros(steps, dtype=m.dtype, device=m.device)
        beta = torch.zeros(steps, dtype=m.dtype, device=m.device)
        q, j = x, 0
        theta = z = None
        for j in range(steps):
            basis[j] = q
            w = m @ q
            w -= u * (u @ w)
            alpha[j] = q @ w
            for _ in range(2):  # full reorthogonalisation, twice is enough
                w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
            beta[j] = w.norm()
            if float(beta[j]) <= 1e-14 * max(1.0, float(alpha[: j + 1].abs().max())):
                theta = None  # an invariant subspace: the Ritz values are exact
                break
            if j % 8 == 7 or j == steps - 1:  # Ritz pair of the largest value, and its residual beta_j |z_j|
                size = j + 1
                t = (
                    torch.diag(alpha[:size])
                    + torch.diag(beta[: size - 1], 1)
                    + torch.diag(beta[: size - 1], -1)
                )
                theta, z = torch.linalg.eigh(t)
                if float(beta[j] * z[-1, -1].abs()) <= 0.1 * tol * max(1.0, float(theta[-1].abs())):
                    break
            q = w / beta[j]
        size = j + 1
        if theta is None or z is None or z.shape[0] != size:
            t = torch.diag(alpha[:size]) + torch.diag(beta[: size - 1], 1) + torch.diag(beta[: size - 1], -1)
            theta, z = torch.linalg.eigh(t)
        x = basis[:size].T @ z[:, -1]
        residual = float((m @ x - u * (u @ (m @ x)) - theta[-1] * x).norm())
        if residual <= tol * max(1.0, float(theta[-1].abs())):
            return x / x.norm()
    return None


def sweep(
    sub: torch.Tensor, d: torch.Tensor, y: torch.Tensor, min_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
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
    if not bool((d > 0).all()) or not connected(sub):
        return fixed_attempt(sub.cpu().numpy(), np.arange(members.shape[0]), "dense", None, min_size)
    y, solver = fiedler(sub, d)
    thr, nc = sweep(sub, d, y, min_size)
    return Attempt.best_of_sweep(y.cpu().numpy(), thr.cpu().numpy(), nc.cpu().numpy(), solver)
