"""Patch affinity for DiffCut: cosine similarity, min-max normalised, raised to a power.

With ``Z`` the channel-wise L2-normalised features as columns (``C x N``), the published method builds::

    S = Z.T @ Z                                  # cosine similarity, N x N
    W = ((S - S.min()) / (S.max() - S.min())) ** alpha

The matrix is dense, keeps its diagonal and has no spatial term. :func:`affinity` computes exactly that (in
the same order of floating point operations as the published code, so that ``recursive_ncut(...,
mode="paper")`` sees the same matrix), in place to bound memory, and optionally keeps only the ``knn``
strongest neighbours of every node as a sparse graph for large grids.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import DEFAULT_ALPHA, MAX_DENSE_NODES
from .errors import FeatureError, ParameterError
from .validation import as_tensor, check_features, check_float, check_int

__all__ = ["affinity", "feature_matrix", "safe_scale"]


def feature_matrix(features: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return features as a ``(C, N)`` tensor of ``dtype``, checked to be finite and non-empty.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray or array-like
        ``(C, h, w)`` feature map (channels first, as a UNet gives it) or ``(N, C)`` rows of features.
    dtype : torch.dtype
        Working precision (float32 or float64).

    Returns
    -------
    torch.Tensor
        ``(C, N)`` on the CPU or the input's device.

    Raises
    ------
    FeatureError
        Wrong number of dimensions, an empty axis, or NaN/Inf values.
    """
    x = as_tensor(features, "features", "of shape (C, h, w) or (N, C)")
    if x.ndim == 2:
        x = x.T[:, :, None]  # (N, C) rows: a (C, N, 1) map
    elif x.ndim != 3:
        raise FeatureError(
            f"features have shape {tuple(x.shape)}; expected (C, h, w) for a feature map or (N, C) for "
            "N feature rows. Pick one image from a (B, C, h, w) batch first, e.g. feats[0]."
        )
    return check_features(x, dtype=dtype).reshape(x.shape[0], -1)


def safe_scale(x: torch.Tensor) -> torch.Tensor:
    """``x`` divided by its largest magnitude when its squares would overflow or underflow (cosines do not
    change; features of 1e19 would otherwise normalise to zeros, i.e. one segment). Untouched otherwise,
    so the published arithmetic is kept for ordinary features."""
    top = float(x.abs().max()) if x.numel() else 0.0
    if top > 1e15 or 0.0 < top < 1e-15:
        return x / top
    return x


def _check_alpha(alpha: Any) -> float:
    return check_float(
        alpha, "alpha", minimum=0, strict_minimum=True,
        hint="The published default is 10; larger alpha sharpens the affinity, alpha <= 0 would invert or flatten it.",
    )  # fmt: skip


def _normalise_(s: torch.Tensor, smin: torch.Tensor, smax: torch.Tensor, alpha: Any) -> torch.Tensor:
    """In place ``((s - smin) / (smax - smin)) ** alpha``, in the published order of operations."""
    s.sub_(smin)
    s.div_(smax - smin)
    s.pow_(alpha)
    return s


def affinity(
    features: Any,
    alpha: float = DEFAULT_ALPHA,
    *,
    dtype: torch.dtype = torch.float32,
    knn: int | None = None,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """DiffCut affinity between feature vectors: ``((cos - min) / (max - min)) ** alpha``.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray
        ``(C, h, w)`` feature map or ``(N, C)`` feature rows. Pixels are flattened in raster order, so node
        ``i`` of the result is pixel ``(i // w, i % w)``.
    alpha : float, default 10.0
        Exponent (> 0). The published default is 10.
    dtype : torch.dtype, default torch.float32
        Working and output precision. float32 is what the published code uses (and what
        ``recursive_ncut(..., mode="paper")`` expects to reproduce its cuts); float64 on request.
    knn : int, optional
        If given, keep for every node only its ``knn`` most similar other nodes (plus itself), symmetrised
        (an edge is kept if either end selects it), and return a sparse COO tensor. The weights of the kept
        edges are exact (same global min-max normalisation as the dense matrix). Use it for large grids
        (128 x 128 = 16,384 nodes is 1 GiB dense in float32); ``recursive_ncut`` accepts it in
        ``mode="fixed"``. Dropping the weak edges lowers degrees, so NCut values, and the tau that gives a
        certain number of segments, change a little compared with the dense graph.
    chunk_size : int, default 4096
        Rows of the similarity computed at once in the ``knn`` path (memory ``chunk_size x N``).

    Returns
    -------
    torch.Tensor
        ``(N, N)`` symmetric affinity in ``[0, 1]`` with ones on the diagonal (dense), or a sparse COO tensor
        when ``knn`` is given. Zero-norm feature vectors have cosine 0 with everything, themselves
        included.

    Raises
    ------
    FeatureError
        Bad layout, empty input, NaN or Inf.
    ParameterError
        ``alpha <= 0``, ``knn < 1`` or an unsupported dtype.

    Notes
    -----
    Constant similarity (all feature vectors parallel, e.g. constant features, or a single pixel) makes
    ``max == min`` and the published formula divides by zero. Here the result is then defined as the
    all-ones matrix: every pair is as similar as the most similar pair, so the graph has no cut (NCut of
    every bipartition is 1) and the recursion keeps one segment.

    Examples
    --------
    >>> import torch
    >>> W = affinity(torch.randn(64, 8, 8), alpha=10)
    >>> W.shape
    torch.Size([64, 64])
    """
    a = _check_alpha(alpha)
    alpha_pow: Any = int(a) if a == int(a) else a  # same pow kernel as ``** 10`` in the published code
    if dtype not in (torch.float32, torch.float64):
        raise ParameterError(f"dtype must be torch.float32 or torch.float64, got {dtype}.")
    z = feature_matrix(features, dtype)
    z = torch.nn.functional.normalize(safe_scale(z), p=2, dim=0)
    n = z.shape[1]
    if knn is None and n > MAX_DENSE_NODES:
        side = int(n**0.5)
        raise ParameterError(
            f"a dense affinity of {n:,} nodes (about {side} x {side}) would take "
            f"{n * n * z.element_size() / 2**30:.0f} GiB; above {MAX_DENSE_NODES:,} nodes (128 x 128) pass "
            "knn=K (e.g. 32: a sparse graph of each node's strongest edges), or read a coarser layer / a "
            "smaller image_size."
        )
    if knn is not None:
        k = check_int(knn, "knn", minimum=1, hint="It is the number of neighbours per node.")
        return _knn_affinity(z, alpha_pow, k, max(1, int(chunk_size)))
    s = torch.t(z) @ z
    smin, smax = s.min(), s.max()
    if not bool(smax > smin):
        return torch.ones((n, n), dtype=dtype, device=s.device)
    return _normalise_(s, smin, smax, alpha_pow)


def _knn_affinity(z: torch.Tensor, alpha: Any, k: int, chunk: int) -> torch.Tensor:
    """Sparse symmetrised kNN version of the dense affinity (exact weights on the kept edges)."""
    n = z.shape[1]
    k = min(k + 1, n)  # the node itself is always its own nearest neighbour
    zt = torch.t(z).contiguous()
    smin = torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
    smax = torch.tensor(float("-inf"), dtype=z.dtype, device=z.device)
    vals, cols = [], []
    for start in range(0, n, chunk):
        s = zt[start : start + chunk] @ z
        smin = torch.minimum(smin, s.min())
        smax = torch.maximum(smax, s.max())
        v, c = torch.topk(s, k, dim=1)
        vals.append(v)
        cols.append(c)
    v = torch.cat(vals).reshape(-1)
    c = torch.cat(cols).reshape(-1)
    r = torch.arange(n, device=z.device).repeat_interleave(k)
    if not bool(smax > smin):
        v = torch.ones_like(v)
    else:
        v = _normalise_(v.clone(), smin, smax, alpha)
    # symmetrise: an edge kept by either end; equal weights on both ends, so coalescing with max is exact
    rows = torch.cat([r, c])
    cols_ = torch.cat([c, r])
    vv = torch.cat([v, v])
    key = rows * n + cols_
    order = torch.argsort(key, stable=True)
    key, vv = key[order], vv[order]
    keep = torch.ones_like(key, dtype=torch.bool)
    keep[1:] = key[1:] != key[:-1]
    key, vv = key[keep], vv[keep]
    idx = torch.stack([key // n, key % n])
    return torch.sparse_coo_tensor(idx, vv, (n, n), is_coalesced=True, check_invariants=False)
