"""The tree of cuts as an icicle: where each recorded cut sits (x: pixels, y: depth) and its two traces.

A node is one bar in its region's colour; a rejected cut (the node stays a final segment) is hatched.
The hatching is a trace of its own, drawn over the bars: a transparent bar per node with a per-bar pattern
shape and one pattern colour. plotly.js takes a ``marker.pattern`` only on a bar trace whose
``marker.color`` is one colour (with a per-bar colour array it logs "Invalid color specifier: Array(n)" and
draws part of the hatching with a black background), and the bars need a colour each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

__all__ = ["IcicleLayout", "hatch_trace", "icicle_layout", "icicle_trace"]

#: the hatching of a rejected cut's node: white diagonal lines over the node's colour
HATCH = {"fgcolor": "white", "size": 7, "solidity": 0.25}
#: thickness of a bar (1: the depth levels touch)
BAR_WIDTH = 0.92
_HOVER = (
    "step %{customdata[0]} · %{customdata[1]} px<br>NCut %{customdata[2]} · %{customdata[3]}<extra></extra>"
)


@dataclass(frozen=True)
class IcicleLayout:
    """Where each step's node sits in the icicle: ``parent`` step (-1 for the root), ``offset`` and
    ``size`` along the pixel axis, ``depth`` along the other."""

    parent: tuple[int, ...]
    offset: tuple[int, ...]
    size: tuple[int, ...]
    depth: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {k: list(getattr(self, k)) for k in ("parent", "offset", "size", "depth")}


def icicle_layout(tree: Any) -> IcicleLayout:
    """Place the steps of ``tree`` in an icicle.

    Steps are recorded depth first, so a step's parent is the latest earlier step one level up; a child
    starts where its earlier siblings end inside the parent's span.
    """
    parents: list[int] = []
    offsets: list[int] = []
    sizes: list[int] = []
    depths: list[int] = []
    used: dict[int, int] = {}
    stack: list[int] = []  # stack[d] = latest step index at depth d
    for i, step in enumerate(tree.steps):
        d = int(step.depth)
        size = len(step.members)
        del stack[d:]
        parent = stack[d - 1] if d > 0 and len(stack) >= d else -1
        if parent < 0:
            off = used.get(-1, 0)
            used[-1] = off + size
        else:
            off = offsets[parent] + used.get(parent, 0)
            used[parent] = used.get(parent, 0) + size
        stack.append(i)
        parents.append(parent)
        offsets.append(off)
        sizes.append(size)
        depths.append(d)
    return IcicleLayout(tuple(parents), tuple(offsets), tuple(sizes), tuple(depths))


def icicle_trace(**props: Any) -> go.Bar:
    """The nodes of the tree of cuts, one horizontal bar each (their colours and positions in ``props``)."""
    return go.Bar(orientation="h", width=BAR_WIDTH, name="cuts", hovertemplate=_HOVER, **props)


def hatch_trace(**props: Any) -> go.Bar:
    """The hatching of the rejected cuts' nodes, over :func:`icicle_trace`: transparent bars at the same
    places whose ``marker.pattern.shape`` is ``"/"`` for a rejected cut and ``""`` otherwise. It takes no
    hover or click (those go to the nodes under it) and has no legend entry."""
    marker = {"color": "rgba(0,0,0,0)", "line": {"width": 0}, "pattern": dict(HATCH)}
    trace = go.Bar(orientation="h", width=BAR_WIDTH, name="rejected (hatched)", hoverinfo="skip",
                   showlegend=False, marker=marker)  # fmt: skip
    trace.update(props)
    return trace
