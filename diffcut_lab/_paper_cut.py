"""The paper mode's cut of one sub-graph: the published numerics, and a faster solve certified to agree.

:func:`paper_attempt` reproduces one step of the published recursion: float32 ``eigh`` of the
symmetric normalised Laplacian, 100 linspace thresholds scored by the discrete Shi-Malik NCut, the
``np.argmin`` partition and Python-``min`` value. Above :data:`~diffcut_lab._eigen.PAPER_DENSE_MAX`
nodes ("auto") a float64 Lanczos solve is used instead when :func:`certified` proves the float32 solve
would choose the same cut
(enough eigengap, no node or competing candidate within float32's error of the decision); near-ties
are settled with the published per-threshold loop itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import _eigen
from ._cut_attempt import Attempt
from ._eigen import PAPER_DENSE_MAX

__all__ = ["N_THRESHOLDS", "PAPER_DENSE_MAX", "Scores", "certified", "paper_attempt", "published_choice"]

N_THRESHOLDS = 100
_TIE_REL = 1e-5  # candidate NCut values closer than this are a tie in float32 arithmetic
_EIG_ERR = 3e-8  # max |y64 - y32| <= 2 * _EIG_ERR / gap * max(D^-1/2): measured ratio <= 0.33, x3 margin
_SOLVE_FAILED = "eigen solver failed (the published code would crash here)"


def published_eigh(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor | None:
    """Published numerics: float32 ``eigh`` of ``D^-1/2 (D - A) D^-1/2``, ``y = D^-1/2 v[:, 1]``, sign fixed.

    The elementwise scaling rounds exactly like the published products with dense diagonal matrices.
    """
    s = 1 / d**0.5
    lap = torch.diag(d) - a
    try:
        _, vecs = torch.linalg.eigh((s[:, None] * lap) * s[None, :])
    except RuntimeError:  # torch.linalg.LinAlgError; the published code crashes on the next line
        return None
    y = s * vecs[:, 1]
    return y * torch.sign(y[torch.argmax(torch.abs(y))])


def _thresholds(y: torch.Tensor) -> torch.Tensor:
    """The published candidates: ``linspace(0.99 min y, 0.99 max y, 100)`` (float32, on ``y``'s device)."""
    lo, hi = float(y.min() * 0.99), float(y.max() * 0.99)
    return torch.linspace(lo, hi, N_THRESHOLDS, dtype=y.dtype, device=y.device)


def published_loop_scores(a: torch.Tensor, d: torch.Tensor, y: torch.Tensor, thr: torch.Tensor) -> np.ndarray:
    """The published per-threshold loop, float32, same operations (used only to settle near-ties)."""
    deg = torch.diag(d)
    lap = deg - a
    total = torch.sum(deg)
    out = []
    for t in thr:
        x = 2 * (1.0 * (y > t)) - 1
        k = torch.sum(d * (x > 0)) / total
        b = k / (1 - k)
        z = (1 + x) - b * (1 - x)
        out.append(((z @ lap @ z) / (z @ deg @ z)).item())
    return np.array(out)


class Scores(NamedTuple):
    """The candidates' NCut values, and per distinct partition what the certificate needs."""

    values: np.ndarray  # NCut of each candidate threshold (NaN where one side is empty)
    first: np.ndarray  # index of the first candidate of each distinct partition
    distinct: np.ndarray  # NCut of each distinct partition
    vol_pos: np.ndarray  # volume of its positive side
    vol_neg: np.ndarray  # volume of its negative side
    cut: np.ndarray  # weight across it


def paper_scores(a64: torch.Tensor, d64: torch.Tensor, y: torch.Tensor, thr: torch.Tensor) -> Scores:
    """Vectorised discrete Shi-Malik NCut of the 100 candidates (float64, one matrix product).

    Identical partitions (the candidates are nested, so equal positive counts) share one value, which
    keeps the published first-minimum tie rule exact.
    """
    x = y[None, :] > thr[:, None]
    counts = x.sum(1)
    n = y.shape[0]
    _, first, inverse = np.unique(counts.cpu().numpy(), return_index=True, return_inverse=True)
    xu = x[torch.as_tensor(first, device=x.device)].to(torch.float64)
    vol = d64.sum()
    vol_p = xu @ d64
    vol_n = vol - vol_p
    frac = vol_p / vol
    b = frac / (1 - frac)
    z = torch.where(xu > 0, torch.full_like(xu, 2.0), (-2.0 * b)[:, None].expand_as(xu))
    za = z @ a64
    den = (z * z * d64).sum(1)
    num = den - (za * z).sum(1)
    val = (num / den).cpu().numpy()
    cu = counts.cpu().numpy()[first]
    val = np.where((cu == 0) | (cu == n), np.nan, val)
    cut = (vol_p - (xu @ a64 * xu).sum(1)).cpu().numpy()
    return Scores(val[inverse.reshape(-1)], first, val, vol_p.cpu().numpy(), vol_n.cpu().numpy(), cut)


def published_choice(values: np.ndarray) -> tuple[int, float]:
    """Published selection: partition = ``np.argmin`` (first NaN if any), value = Python ``min``."""
    nan = np.isnan(values)
    if nan.any():
        j = int(np.argmax(nan))
        return j, float("nan") if nan[0] else float(values[~nan].min())
    j = int(np.argmin(values))
    return j, float(values[j])


def _near_tie(val_u: np.ndarray) -> bool:
    v = np.sort(val_u[~np.isnan(val_u)])
    return v.shape[0] > 1 and bool(v[1] - v[0] <= _TIE_REL * max(1.0, abs(v[0])))


def certified(y: np.ndarray, d: np.ndarray, gap: float, thr: np.ndarray, scores: Scores) -> bool:
    """Would the published float32 eigh (perturbing ``y`` by about ``eps32 / gap``) choose the same cut?

    Checks: the sign rule, the node-vs-chosen-threshold margins, and that no other candidate's NCut
    interval (under the flips its near-threshold nodes allow, plus float32 rounding) reaches the best one.
    """
    first, val_u, vp, vn, cut = scores.first, scores.distinct, scores.vol_pos, scores.vol_neg, scores.cut
    if not np.isfinite(gap) or gap <= 1e-7 or np.isnan(val_u).any():
        return False
    delta = 2 * _EIG_ERR / gap * float((1 / np.sqrt(d)).max())
    ab = np.abs(y)
    top = int(np.argmax(ab))
    if np.any((ab >= ab[top] - 2 * delta) & (np.sign(y) != np.sign(y[top]))):
        return False
    ys = np.sort(y)
    lo_i = np.searchsorted(ys, thr[first] - 2 * delta)
    hi_i = np.searchsorted(ys, thr[first] + 2 * delta)
    order = np.argsort(y)
    cd = np.concatenate([[0.0], np.cumsum(d[order])])
    dd = cd[hi_i] - cd[lo_i]  # degree of the nodes that may switch side at each candidate
    best = int(np.argmin(val_u))
    if dd[best] > 0:
        return False
    vol = vp + vn
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.maximum(cut - dd, 0) * vol / ((vp + dd) * (vn + dd))  # lowest NCut a candidate can reach
    tol = _TIE_REL * np.maximum(1.0, np.abs(val_u))
    others = np.arange(val_u.shape[0]) != best
    return not bool(np.any(others & (lo - tol <= val_u[best] + tol[best])))


def paper_attempt(w32: torch.Tensor, kept: np.ndarray, solver: str, warm: np.ndarray | None) -> Attempt:
    """The published cut of the sub-graph on ``kept`` (see :func:`diffcut_lab.ncut.recursive_ncut`)."""
    idx = torch.as_tensor(kept, device=w32.device)
    a = w32[idx][:, idx].contiguous()
    d = torch.sum(a, dim=1)
    if bool((d <= 0).any()):
        return Attempt.rejected("zero degree: the published eigen problem is undefined (1/sqrt(0))")
    n = kept.shape[0]
    a64, d64 = a.to(torch.float64), d.to(torch.float64)
    # on an accelerator "auto" is the published float32 eigh at every size (it is the cheap part there)
    fast = solver in ("eigsh", "dense") or (
        solver == "auto" and n > PAPER_DENSE_MAX and a.device.type == "cpu"
    )
    y = None
    used = "torch32"
    if fast:
        f = _eigen.fiedler(
            a64.cpu().numpy(), d64.cpu().numpy(), "dense" if solver == "dense" else "eigsh", warm
        )
        y = torch.as_tensor(f.y, dtype=torch.float32, device=a.device)
        thr = _thresholds(y)
        scores = paper_scores(a64, d64, y, thr)
        gap = min(f.lam2, f.lam3 - f.lam2)
        if solver != "auto" or certified(
            f.y, d64.cpu().numpy(), gap, thr.cpu().numpy().astype(np.float64), scores
        ):
            used = f.solver
        else:
            y = None
    if y is None:
        y = published_eigh(a, d)
        if y is None or not bool(torch.isfinite(y).all()):
            return Attempt.rejected(_SOLVE_FAILED, solver="torch32")
        thr = _thresholds(y)
        scores = paper_scores(a64, d64, y, thr)
    values = scores.values
    if _near_tie(scores.distinct):  # settle float32-level ties with the published arithmetic itself
        if used != "torch32":
            y = published_eigh(a, d)
            if y is None:
                return Attempt.rejected(_SOLVE_FAILED, solver=used)
            thr = _thresholds(y)
        values = published_loop_scores(a, d, y, thr)
        used = "torch32+loop"
    j, ncut = published_choice(values)
    thr_np = thr.cpu().numpy().astype(np.float64)
    return Attempt(
        fiedler=y.cpu().numpy().astype(np.float64),
        thresholds=thr_np,
        ncut_values=values,
        threshold=float(thr_np[j]),
        ncut=ncut,
        positive=(y > thr[j]).cpu().numpy(),
        solver=used,
    )
