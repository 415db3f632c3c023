"""Input checks, in one place: every public function of the toolkit reads its arguments through these.

In scikit-learn's manner (``sklearn.utils.validation``): each ``check_*`` takes what a user may pass
(torch tensors, numpy arrays, lists, numpy scalars), refuses what cannot be meant with one message that says
what was wrong and what to pass instead, and returns the value in the one form the caller computes with.
Tolerances and messages live here once, so two functions never disagree on what they accept.

Numbers: :func:`check_int`, :func:`check_float`. Arrays: :func:`as_tensor`, :func:`check_features`,
:func:`check_labels`, :func:`check_affinity`, :func:`is_symmetric`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import FeatureError, ParameterError

__all__ = [
    "SYMMETRY_ATOL",
    "SYMMETRY_RTOL",
    "as_tensor",
    "check_affinity",
    "check_features",
    "check_float",
    "check_int",
    "check_labels",
    "is_int",
    "is_symmetric",
]

#: an affinity counts as symmetric when ``|W - W^T| <= SYMMETRY_ATOL * max|W| + SYMMETRY_RTOL * |W^T|``
#: (``torch.allclose`` with the absolute part scaled to the matrix, so that a graph and the same graph times
#: 1e-9 are judged alike)
SYMMETRY_RTOL = 1e-5
SYMMETRY_ATOL = 1e-7
#: side of the square tiles of the N x N symmetry pass (no N x N temporary; a tile and its mirror image
#: stay in cache, where a transposed read of whole rows misses it at every element)
_TILE = 128


# ----------------------------------------------------------------------------------------------------
# numbers


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer in the Python sense (``int``, numpy integer), and not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _bounds_text(minimum: Any, maximum: Any, strict: bool = False) -> str:
    if minimum is not None and maximum is not None:
        return f"from {minimum} to {maximum}"
    if minimum is not None:
        return f"{'>' if strict else '>='} {minimum}"
    if maximum is not None:
        return f"<= {maximum}"
    return ""


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: type[Exception] = ParameterError,
    hint: str = "",
) -> int:
    """Return ``value`` as an ``int`` within ``[minimum, maximum]``.

    Parameters
    ----------
    value : Any
        An ``int`` or numpy integer. ``bool`` is refused (``True`` is not a count), and so are floats, even
        whole ones: a setting that is a count is written as one.
    name : str
        The argument's name, for the message.
    minimum, maximum : int or None
        Inclusive bounds (None: unbounded).
    error : type of Exception
        What to raise (:class:`~diffcut_lab.errors.ParameterError` by default).
    hint : str
        A sentence appended to the message (what the value means, what to try).

    Returns
    -------
    int

    Raises
    ------
    ParameterError
        Not an integer, or out of bounds.
    """
    bounds = _bounds_text(minimum, maximum)
    ok = is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        what = f"an integer {bounds}" if bounds else "an integer"
        raise error(f"{name} must be {what}, got {value!r}." + (f" {hint}" if hint else ""))
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    error: type[Exception] = ParameterError,
    hint: str = "",
) -> float:
    """Return ``value`` as a finite ``float`` within the bounds.

    Parameters
    ----------
    value : Any
        A real number (``int``, ``float``, numpy scalar, 0-d array); ``bool``, strings, NaN and infinities
        are refused.
    name : str
        The argument's name, for the message.
    minimum, maximum : float or None
        Bounds (None: unbounded); ``maximum`` is inclusive.
    strict_minimum : bool
        ``value > minimum`` instead of ``>=``.
    error : type of Exception
        What to raise.
    hint : str
        A sentence appended to the message.

    Returns
    -------
    float

    Raises
    ------
    ParameterError
        Not a finite number, or out of bounds.
    """
    v = math.nan
    if not isinstance(value, (bool, np.bool_, str, bytes)):
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            pass
    low_ok = minimum is None or (v > minimum if strict_minimum else v >= minimum)
    if not (math.isfinite(v) and low_ok and (maximum is None or v <= maximum)):
        bounds = _bounds_text(minimum, maximum, strict_minimum)
        what = f"a finite number {bounds}" if bounds else "a finite number"
        raise error(f"{name} must be {what}, got {value!r}." + (f" {hint}" if hint else ""))
    return v


# ----------------------------------------------------------------------------------------------------
# arrays


def as_tensor(value: Any, what: str, shape: str, *, error: type[Exception] = FeatureError) -> Any:
    """``value`` as a detached torch tensor (numpy and array-likes converted, no copy where possible).

    Raises ``error``, naming ``what`` and the expected ``shape``, when it cannot be read as an array.
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise error(
            f"{what} of type {type(value).__name__} cannot be read as an array ({exc}); pass a torch tensor "
            f"or numpy array {shape}."
        ) from exc


def check_features(features: Any, *, batch_of_one: bool = False, dtype: Any = None) -> Any:
    """A ``(C, h, w)`` feature map as a detached, finite, real torch tensor.

    Parameters
    ----------
    features : torch.Tensor or numpy.ndarray or array-like
        ``(C, h, w)``, channels first as a UNet gives them, every axis non-empty.
    batch_of_one : bool
        Also accept a ``(1, C, h, w)`` batch and drop its batch axis.
    dtype : torch.dtype or None
        Convert to this dtype (None: float32, or float64 when the input is float64).

    Returns
    -------
    torch.Tensor
        ``(C, h, w)`` on the input's device.

    Raises
    ------
    FeatureError
        Wrong number of dimensions, an empty axis, a complex or boolean dtype, or NaN/Inf values.
    """
    import torch

    f = as_tensor(features, "features", "of shape (C, h, w)")
    if batch_of_one and f.ndim == 4 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 3 or min(f.shape) < 1:
        raise FeatureError(
            f"features must be a non-empty (C, h, w) map; got shape {tuple(f.shape)}. For a captured batch "
            "pass one image, e.g. cache['diffcut', 50][0]."
        )
    if f.is_complex() or f.dtype == torch.bool:
        raise FeatureError(f"features have dtype {f.dtype}; expected real numbers.")
    if dtype is None:
        dtype = torch.float64 if f.dtype == torch.float64 else torch.float32
    f = f.to(dtype)
    if not bool(torch.isfinite(f).all()):
        bad = int((~torch.isfinite(f)).sum())
        raise FeatureError(
            f"features contain {bad} NaN or Inf values; the affinity would be undefined. Check the captured "
            "layer (fp16 overflow is a common cause: capture in float32 or bfloat16)."
        )
    return f


def check_labels(
    labels: Any, name: str = "labels", *, ndim: int | tuple[int, ...] | None = None, keep_tensor: bool = False
) -> Any:
    """Integer labels as int64.

    Booleans become 0/1 and whole-valued floats their integers; other floats, complex values and objects are
    refused.

    Parameters
    ----------
    labels : array-like or torch.Tensor
        Label ids of any integer type.
    name : str
        What the labels are, for the message ("labels", "ground truth", ...).
    ndim : int or tuple of int or None
        The allowed numbers of dimensions (None: any).
    keep_tensor : bool
        Return a torch tensor (on its device) when given one; otherwise the result is always numpy.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        int64, the input's shape.

    Raises
    ------
    ParameterError
        Not integer ids, or the wrong number of dimensions.
    """
    import torch

    if isinstance(labels, torch.Tensor):
        t = labels.detach()
        if t.dtype.is_complex or (
            t.is_floating_point() and not (bool(torch.isfinite(t).all()) and torch.equal(t, t.round()))
        ):
            _not_integer(name, t.dtype)
        _check_ndim(name, tuple(t.shape), ndim)
        return t.long() if keep_tensor else t.long().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        whole = (
            np.issubdtype(arr.dtype, np.floating)
            and bool(np.all(np.isfinite(arr)))
            and bool(np.all(arr == np.round(arr)))
        )
        if not whole:
            _not_integer(name, arr.dtype)
    _check_ndim(name, arr.shape, ndim)
    return arr.astype(np.int64, copy=False)


def _not_integer(name: str, dtype: Any) -> None:
    raise ParameterError(
        f"{name} must hold integer label ids; got dtype {dtype}. Pass an integer label map "
        "(e.g. labels.astype(np.int64))."
    )


def _check_ndim(name: str, shape: tuple[int, ...], ndim: int | tuple[int, ...] | None) -> None:
    if ndim is None:
        return
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) not in allowed:
        want = " or ".join({1: "(N,)", 2: "(h, w)", 3: "(B, h, w)"}.get(d, f"{d}-d") for d in allowed)
        raise ParameterError(f"{name} must be {want} label ids; got shape {tuple(shape)}.")


def is_symmetric(w: Any, *, scale: float | None = None) -> bool:
    """Whether the dense or sparse square ``w`` equals its transpose within the toolkit's one tolerance.

    ``|W - W^T| <= SYMMETRY_ATOL * scale + SYMMETRY_RTOL * min(|W|, |W^T|)`` entry by entry, ``scale`` the
    largest magnitude (at least 1e-30); blocks of rows for dense matrices (memory: never an N x N
    temporary); an exact match is one comparison per block.
    """
    import scipy.sparse as sp
    import torch

    if sp.issparse(w):
        w = sp.csr_matrix(w)
        data = np.abs(w.data)
        top = float(data.max()) if data.size else 0.0
        diff = abs(w - w.T).tocsr()
        if diff.nnz == 0:
            return True
        wt = abs(w.T).tocsr()
        bound = SYMMETRY_ATOL * max(top if scale is None else scale, 1e-30)
        lo = diff.copy()
        lo.data = np.full_like(diff.data, bound)
        return bool((diff - lo - SYMMETRY_RTOL * wt.minimum(abs(w))).max() <= 0)
    t = w if isinstance(w, torch.Tensor) else torch.as_tensor(np.asarray(w))
    if scale is None:
        scale = float(t.abs().max()) if t.numel() else 0.0
    return _tiles_symmetric(t, scale, average=False)


def _tiles_symmetric(t: Any, scale: float, *, average: bool) -> bool:
    """The dense symmetry pass of :func:`is_symmetric`, square tile by tile; an exact match is one comparison
    per tile. ``average``: also replace every tile pair that differs (within tolerance) by its mean
    ``(W + W^T) / 2``, in place, so that ``t`` ends exactly symmetric. False at the first pair beyond the
    tolerance (``t`` then partly averaged)."""
    import torch

    n = t.shape[0]
    atol = SYMMETRY_ATOL * max(scale, 1e-30)
    for i in range(0, n, _TILE):
        for j in range(i, n, _TILE):
            top, left = t[i : i + _TILE, j : j + _TILE], t[j : j + _TILE, i : i + _TILE].T
            if torch.equal(top, left):
                continue
            if not bool(
                ((top - left).abs() <= atol + SYMMETRY_RTOL * torch.minimum(top.abs(), left.abs())).all()
            ):
                return False
            if average:
                mean = (top + left) / 2
                t[i : i + _TILE, j : j + _TILE] = mean
                t[j : j + _TILE, i : i + _TILE] = mean.T
    return True


_REAL_INTS = ("int8", "int16", "int32", "int64", "uint8", "bool")


def check_affinity(w: Any, *, sparse: bool = True, caller: str = "the cut", dtype: Any = None) -> Any:
    """A square, finite, non-negative, symmetric affinity matrix.

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray or scipy.sparse matrix
        ``(N, N)`` dense, or sparse (torch sparse tensors become scipy CSR).
    sparse : bool
        Whether sparse matrices are accepted; when not, the message says how to densify.
    caller : str
        The function that needs the matrix, for the message.
    dtype : torch.dtype, optional
        Dense input only: return a new, exactly symmetric copy in this dtype, ``(W + W^T) / 2`` where ``W``
        was symmetric only within the tolerance (the check and the symmetrisation are one pass).

    Returns
    -------
    torch.Tensor or scipy.sparse.csr_matrix
        Dense input: a detached torch tensor on its device, in its dtype (bool as uint8), or a contiguous
        copy in ``dtype``. Sparse input: a float64 CSR matrix.

    Raises
    ------
    ParameterError
        Not square, not real, negative entries, not symmetric, or sparse where dense is needed.
    FeatureError
        Empty (N = 0), or NaN/Inf entries.
    """
    import scipy.sparse as sp
    import torch

    if isinstance(w, torch.Tensor) and w.layout != torch.strided:
        if not sparse:
            raise ParameterError(
                f"{caller} needs a dense (N, N) affinity; densify it (W.to_dense()) or use recursive_ncut, "
                "which accepts sparse kNN graphs."
            )
        w = w.to_sparse_coo().coalesce() if w.layout != torch.sparse_coo else w.coalesce()
        idx = w.indices().cpu().numpy()
        w = sp.csr_matrix((w.values().cpu().double().numpy(), (idx[0], idx[1])), shape=tuple(w.shape))
    if sp.issparse(w):
        if not sparse:
            raise ParameterError(
                f"{caller} needs a dense (N, N) affinity; densify it (W.toarray()) or use recursive_ncut, "
                "which accepts sparse kNN graphs."
            )
        g = sp.csr_matrix(w, dtype=np.float64)
        values = g.data
    else:
        g = as_tensor(w, "W", "of shape (N, N)", error=ParameterError)
        if g.is_complex() or not (g.is_floating_point() or str(g.dtype).removeprefix("torch.") in _REAL_INTS):
            raise ParameterError(f"W has dtype {g.dtype}; expected real numbers.")
        if g.dtype == torch.bool:
            g = g.to(torch.uint8)
        values = None
    shape = tuple(g.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ParameterError(f"W must be a square (N, N) affinity matrix, got shape {shape}.")
    if shape[0] == 0:
        raise FeatureError("W is empty (N = 0): there are no pixels to segment.")
    if values is None:
        low, high = map(float, torch.aminmax(g)) if g.numel() else (0.0, 0.0)  # one pass; NaN shows in both
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise FeatureError("W contains NaN or Inf; build it from finite features (see affinity()).")
    if low < 0:
        raise ParameterError("W has negative entries; NCut needs non-negative affinities (see affinity()).")
    scale = max(abs(low), abs(high))
    if values is None and dtype is not None:
        g = g.to(dtype, copy=True).contiguous()
        symmetric = _tiles_symmetric(g, scale, average=True)
    else:
        symmetric = is_symmetric(g, scale=scale)
    if not symmetric:
        raise ParameterError(
            "W must be symmetric (an undirected affinity); symmetrise it, e.g. (W + W.T) / 2."
        )
    return g
