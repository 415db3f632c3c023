"""What :func:`diffcut_lab.ncut.recursive_ncut` checks before it cuts: its settings, the grid, and the
affinity, converted to the form and precision each mode and solver computes with (private helpers).

The affinity itself is checked by :func:`diffcut_lab.validation.check_affinity` (square, real, finite,
non-negative, symmetric with the toolkit's one tolerance); this module only adds what is particular to the
recursion (the paper mode needs a dense matrix) and chooses the precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._eigen import FLOAT64_MAX
from ._eigen_torch import uses_device_path
from .config import check_tau
from .errors import ParameterError
from .options import AUTO, AUTO_RULES, AUTO_TAU, MODES, SOLVERS
from .validation import check_affinity, check_int, is_int

__all__ = ["check_grid", "check_settings", "prepare_graph"]


def check_settings(
    tau: Any, *, mode: str, solver: str, min_size: Any, max_depth: Any, auto_rule: str
) -> tuple[float, bool]:
    """Check the recursion's settings; return the tau the cuts are compared with and whether it is
    automatic (``tau="auto"``: :data:`~diffcut_lab.options.AUTO_TAU`)."""
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, got {mode!r}.")
    allowed = tuple(s for s in SOLVERS if s != ("torch64" if mode == "paper" else "torch32"))
    if solver not in allowed:
        raise ParameterError(f"solver must be one of {allowed} in mode={mode!r}, got {solver!r}.")
    tau = check_tau(tau, auto=True)
    auto = tau == AUTO
    if auto_rule not in AUTO_RULES:
        raise ParameterError(f"auto_rule must be one of {AUTO_RULES}, got {auto_rule!r}.")
    check_int(min_size, "min_size", minimum=1)
    if mode == "paper" and min_size != 1:
        raise ParameterError("mode='paper' has no minimum segment size (as published); use mode='fixed'.")
    if max_depth is not None:
        check_int(max_depth, "max_depth", minimum=0, hint="(None: unlimited.)")
    return (AUTO_TAU if auto else float(tau)), auto


def check_grid(grid: Any, n: int) -> tuple[int, int] | None:
    """``grid`` as ``(h, w)`` with ``h * w == n`` (None stays None)."""
    if grid is None:
        return None
    pair = tuple(grid) if isinstance(grid, (tuple, list, torch.Size, np.ndarray)) else None
    if pair is None or len(pair) != 2 or not all(is_int(v) and v >= 1 for v in pair):
        raise ParameterError(
            f"grid must be (h, w), two integers >= 1 with h * w = N = {n} nodes; got {grid!r}."
        )
    if int(pair[0]) * int(pair[1]) != n:
        raise ParameterError(f"grid {grid!r} does not match N = {n} nodes; expected (h, w) with h * w = N.")
    return int(pair[0]), int(pair[1])


def _is_sparse(w: Any) -> bool:
    return sp.issparse(w) or (isinstance(w, torch.Tensor) and w.layout != torch.strided)


def prepare_graph(w: Any, mode: str, solver: str = "auto") -> tuple[Any, int]:
    """Check ``w``; return ``(graph, N)``.

    The graph is a torch float32 dense matrix on ``w``'s device for paper mode; for fixed mode a dense
    torch matrix on ``w``'s device where the device path applies
    (:func:`~diffcut_lab._eigen_torch.uses_device_path`), else numpy on the host, or a float64 scipy CSR
    matrix for sparse input. A dense fixed-mode graph is float64 up to
    :data:`~diffcut_lab._eigen.FLOAT64_MAX` nodes and float32 above (memory).
    """
    if mode == "paper" and _is_sparse(w):
        raise ParameterError(
            "mode='paper' needs the dense affinity (its node-dropping rule reads the zero entries of every "
            "row); pass a dense W, or use mode='fixed' with a sparse (kNN) affinity."
        )
    g = check_affinity(w, caller="recursive_ncut")
    n = int(g.shape[0])
    if sp.issparse(g):
        return g, n
    big = n > FLOAT64_MAX
    if mode == "paper":
        return g.to(torch.float32).contiguous(), n
    if uses_device_path(g, solver):
        return g.to(torch.float32 if big else torch.float64).contiguous(), n
    return g.cpu().numpy().astype(np.float32 if big else np.float64, copy=False), n
