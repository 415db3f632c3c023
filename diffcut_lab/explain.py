"""Why a result looks as it does, in one line a newcomer can act on (numpy only).

:func:`one_segment_reason` says why a cut tree kept the whole image as one segment -- the first cut's
NCut against tau, the automatic rule's reason, a nearly uniform attention graph -- and what to try. The
command line prints it beside the segment count, the report under its figures.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["one_segment_reason"]

#: an NCut this close to 1 or above on the first cut means the graph is nearly complete and uniform
_UNIFORM_NCUT = 0.9


def _tau_to_try(ncut: float) -> str:
    """A tau just above ``ncut`` (rounded up to two decimals), within the allowed ``(0, 2]``."""
    return f"{min(2.0, math.floor(ncut * 100 + 1) / 100):.2f}"


def one_segment_reason(tree: Any) -> str | None:
    """Why ``tree`` has a single segment, and what to try; ``None`` when it has more than one.

    Parameters
    ----------
    tree : CutTree
        A tree from :func:`~diffcut_lab.segmentation.cut_tree` (``Segmentation.tree``).

    Returns
    -------
    str or None
        One line, e.g. ``"the first cut's NCut 0.62 is not below tau 0.5; a tau above 0.63 splits it"``.

    Examples
    --------
    >>> import numpy as np
    >>> from diffcut_lab import affinity, recursive_ncut
    >>> W = affinity(np.random.default_rng(0).normal(size=(8, 6, 6)), alpha=1.0)
    >>> print(one_segment_reason(recursive_ncut(W, tau=0.05, grid=(6, 6))))  # doctest: +ELLIPSIS
    the first cut's NCut ... is not below tau 0.05; a tau of ... or more splits the image
    """
    if tree.n_segments != 1:
        return None
    params = getattr(tree, "params", {})
    auto = params.get("tau") == "auto"
    if not tree.steps:
        if tree.n_nodes <= 1:
            return "the feature grid has a single cell; use a larger image_size or a finer layer"
        if params.get("partition") == "kway":
            return (f"the K-way cut was asked for one segment (K from {params.get('k_from', 'n_segments')}); "
                    "set n_segments to 2 or more")  # fmt: skip
        return "no cut was attempted (max_depth 0); raise max_depth"
    first = tree.steps[0]
    ncut = float(first.ncut)
    if not math.isfinite(ncut):
        return f"the first cut could not be made ({first.reason.removeprefix('rejected: ')})"
    if params.get("affinity") == "attention" and ncut >= _UNIFORM_NCUT:
        return (f"the attention is nearly uniform (every cut costs NCut {ncut:.2f} or more): try walk_steps 1 "
                f"with a tau of {_tau_to_try(ncut)}, or affinity 'cosine'")  # fmt: skip
    if auto:
        why = params.get("auto_reason") or first.reason.removeprefix("rejected: ")
        return f"the automatic rule kept one segment ({why}); a fixed tau of {_tau_to_try(ncut)} or more splits it"
    return (f"the first cut's NCut {ncut:.2f} is not below tau {tree.tau:g}; a tau of {_tau_to_try(ncut)} or "
            "more splits the image")  # fmt: skip
