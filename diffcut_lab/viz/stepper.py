"""Step through every cut of a recursive normalized cut: a static plotly figure and an ipywidgets app.

Each recorded :class:`~diffcut_lab.CutStep` is shown as five panels:

* the sub-graph being cut, over the image (outside dimmed, the two proposed sides coloured),
* its Fiedler vector as a heatmap on the feature grid,
* NCut against the threshold of the sweep, with the chosen threshold and the ``tau`` line,
* the partition after this step (``CutTree.labels_at``),
* the tree of cuts as an icicle (x: pixels, y: depth; rejected cuts, the final segments, hatched); in the
  app, a click on a node jumps to its step.

One colour means one thing: each segment has its colour by its place in the tree
(:func:`~diffcut_lab.colors.lineage_hex` over the partitions after each step), in the partition panel
and the icicle alike, and at each step the two sides of the cut have the colours they take (or, for a
rejected cut, would take) in the partition: in the sub-graph panel, at the two ends of the Fiedler
vector's scale (white at the chosen threshold) and in the legend.

:func:`cut_steps_figure` renders all of this into one plotly figure with a slider (works in exported
HTML, no kernel needed); :func:`cut_stepper` returns a :class:`CutStepper`, a live app in which ``tau``
prunes the tree (no recomputation, :meth:`CutTree.prune`) and ``alpha`` recomputes the affinity and the
cuts from the features. Given a :class:`~diffcut_lab.pipeline.Segmentation` (``cut_stepper(seg)``) every
recompute keeps the whole cut configuration (:func:`~diffcut_lab.segmentation.recut`): an attention-walk
tree is cut again from the attention probabilities the segmentation kept, a ``tau="auto"`` tree stays
automatic (its tau slider switches explicitly to a fixed tau), a kNN tree stays sparse.
"""

from __future__ import annotations

import html
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..colors import lineage_hex
from ..errors import ParameterError
from ..options import AUTO
from ._common import (
    ACCEPTED,
    HIGHLIGHT,
    REJECTED,
    app_mimebundle,
    as_rgb,
    downscale,
    grid_geometry,
    image_trace,
    pca_rgb,
    style_image_axes,
)

__all__ = ["CutStepper", "cut_stepper", "cut_steps_figure", "cut_tree_figure", "icicle_layout"]

_PENDING = "#cfd8dc"  # a step not yet visited at the current position

# trace order of the stepper figure (indices are relied on by updates and by the slider frames)
T_IMAGE_A, T_SPLIT, T_FIEDLER, T_CURVE, T_CHOSEN, T_TAU, T_THRESH, T_IMAGE_D, T_PARTITION, T_ICICLE = range(10)
# the step's legend: one colour for each side of the cut, said once for every panel
T_LEGEND_POS, T_LEGEND_NEG, T_LEGEND_OUT, T_LEGEND_DROP = range(10, 14)
_DYNAMIC = [T_SPLIT, T_FIEDLER, T_CURVE, T_CHOSEN, T_TAU, T_THRESH, T_PARTITION, T_ICICLE, T_LEGEND_POS, T_LEGEND_NEG]

#: weight of a segment's (or a side's) colour over the image, the same in the sub-graph and partition panels
PAINT_OPACITY = 0.55
#: pixels right of the NCut panel for the tau line's label (exported PNGs keep it whole)
_TAU_LABEL_ROOM = 90
#: outside the sub-graph being cut: dimmed in the sub-graph panel, the same dark in the Fiedler panel
_OUTSIDE_RGBA = "rgba(15,15,25,0.72)"
_OUTSIDE_SOLID = "#3a3a44"
#: nodes the published rule drops from a sub-graph (paper mode): a grey no segment colour takes
_DROPPED_RGBA = "rgba(236,236,236,0.9)"
_CURVE_X, _CURVE_Y = "xaxis3", "yaxis3"  # the NCut panel's axes (row 1, column 3 of the grid below)

_PANEL_TITLES = (
    "sub-graph being cut",
    "Fiedler vector",
    "NCut vs threshold",
    "partition after this step",
    "tree of cuts (click a node)",
)


# ----------------------------------------------------------------------------------------------------
# geometry of the tree of cuts
# ----------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------
# per-step data (shared by the static figure and the app)
# ----------------------------------------------------------------------------------------------------
def _require_steps(tree: Any) -> None:
    """The views step through recorded cuts: a tree without any says why it has none."""
    if tree.steps:
        return
    if tree.params.get("partition") == "kway":
        raise ParameterError(
            "a K-way partition is found at once and has no steps to go through; cut with "
            "partition='recursive' to step through the cuts (e.g. seg.recut(partition='recursive'), "
            "or DiffCut(..., partition='recursive')); viz.overlay shows the K-way labels."
        )
    raise ParameterError("the tree has no recorded steps (a graph of a single node cannot be cut)")


def _auto_rule(tree: Any) -> str | None:
    """The automatic rule of a ``tau="auto"`` tree (``"dynamic"`` or ``"stable"``), None for a fixed tau."""
    if tree.params.get("tau") != AUTO:
        return None
    return str(tree.params.get("auto_rule", "dynamic"))


def _tau_text(tree: Any) -> str:
    """How the tree's tau reads on the panels: ``τ 0.50``, ``τ auto`` (the dynamic rule decides each cut
    below :data:`~diffcut_lab.options.AUTO_TAU`), ``τ 0.47 (auto)`` (the stable rule's tau)."""
    rule = _auto_rule(tree)
    if rule == "dynamic":
        return "τ auto"
    return f"τ {float(tree.tau):.2f}" + (" (auto)" if rule else "")


def _decision(tree: Any, s: Any) -> str:
    """Why step ``s`` was cut or not, in a few words: NCut against tau, or the dynamic rule's verdict."""
    ncut = _fmt(float(s.ncut) if s.ncut is not None else np.nan)
    if _auto_rule(tree) == "dynamic":
        # the step's reason without its verdict, its NCut (shown already) and its details in brackets
        why = str(getattr(s, "reason", "") or "").split(" (")[0].split(" [")[0]
        why = re.sub(r"^ncut \S+ ", "", re.sub(r"^(accepted|rejected|stopped): ", "", why))
        return f"NCut {ncut} · τ auto ({why})" if why else f"NCut {ncut} · τ auto"
    return f"NCut {ncut} {'<' if _accepted(s) else '≥'} {_tau_text(tree)}"


def _grid_of(tree: Any) -> tuple[int, int]:
    grid = getattr(tree, "grid", None)
    if grid is None:
        n = int(np.asarray(tree.labels).size)
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError("the tree has no grid and its size is not a square: pass a tree built with grid=")
        return (side, side)
    return (int(grid[0]), int(grid[1]))


def _as_np(x: Any) -> np.ndarray:
    if x is None:
        return np.zeros(0)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _round(a: np.ndarray, nd: int = 4) -> np.ndarray:
    return np.round(a.astype(np.float64), nd)


def _accepted(step: Any) -> bool:
    return bool(step.accepted)


def _rgba(hex_colour: str, alpha: float) -> str:
    c = hex_colour
    return f"rgba({int(c[1:3], 16)},{int(c[3:5], 16)},{int(c[5:7], 16)},{alpha})"


def _band_scale(colours: list[str]) -> list[list[Any]]:
    """A colour scale of equal bands, band ``i`` for ``z = i`` when ``zmin, zmax = -0.5, n - 0.5``."""
    n = len(colours)
    if n == 1:
        return [[0.0, colours[0]], [1.0, colours[0]]]
    scale: list[list[Any]] = []
    for i, c in enumerate(colours):
        scale += [[i / n, c], [(i + 1) / n, c]]
    scale[-1][0] = 1.0
    return scale


def _partition_colorscale(colours: list[str], alpha: float = PAINT_OPACITY) -> list[list[Any]]:
    """The partition panel's scale: segment ``k`` in ``colours[k]`` (its lineage colour), over the image."""
    return _band_scale([_rgba(c, alpha) for c in colours])


def _split_colorscale(positive: str, negative: str) -> list[list[Any]]:
    """The sub-graph panel's scale: 0 outside (dimmed), 1 this side, 2 that side, 3 dropped (paper mode)."""
    return _band_scale([_OUTSIDE_RGBA, _rgba(positive, PAINT_OPACITY), _rgba(negative, PAINT_OPACITY), _DROPPED_RGBA])


def _fiedler_colorscale(positive: str, negative: str) -> list[list[Any]]:
    """The Fiedler panel's scale: that side's colour below the threshold, white at it, this side's above."""
    return [[0.0, negative], [0.5, "#ffffff"], [1.0, positive]]


def _raster_relabel(flat: np.ndarray) -> np.ndarray:
    """Ids ``0..K-1`` by the raster order of each segment's first pixel (how the tree numbers labels)."""
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[inverse.reshape(-1)]


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def step_summary(tree: Any, i: int) -> str:
    """One line describing step ``i`` (0-based) of ``tree``."""
    head, verdict, tail = _summary_parts(tree, i)
    return f"{head} → {verdict}{tail}"


def _summary_parts(tree: Any, i: int) -> tuple[str, str, str]:
    """The summary of step ``i`` in three parts: what was cut and why, the verdict, what was dropped."""
    steps = tree.steps
    s = steps[i]
    verdict = "accepted: split" if _accepted(s) else "rejected: leaf"
    head = f"step {i + 1} of {len(steps)} · depth {int(s.depth)} · {len(s.members)} px · {_decision(tree, s)}"
    region = getattr(s, "region", None)
    tail = ""
    if region is not None and len(region) > len(s.members):
        tail = f" · {len(region) - len(s.members)} px dropped (paper rule)"
    return head, verdict, tail


def _tau_line_text(tree: Any) -> str:
    """The label of the NCut panel's tau line (for the dynamic rule, the ceiling below which it decides)."""
    if _auto_rule(tree) == "dynamic":
        return f"τ auto ≤ {float(tree.tau):.2f}"
    return f"τ = {float(tree.tau):.2f}" + (" (auto)" if _auto_rule(tree) else "")


class _StepData:
    """Computes the trace updates of every step of one tree (cached), for the figure builders."""

    def __init__(self, tree: Any, *, interactive: bool = True) -> None:
        self.tree = tree
        self.interactive = interactive
        self.grid = _grid_of(tree)
        self.n = self.grid[0] * self.grid[1]
        self.layout = icicle_layout(tree)
        labels = np.asarray(tree.labels)
        self.k_final = int(labels.max()) + 1 if labels.size else 1
        self._partition_cache: dict[int, np.ndarray] = {}
        self._chain: list[list[str]] | None = None
        self._rejected_split = np.zeros(0, np.int64)
        self._rejected_colours: list[str] = []
        self._node_colors: list[str] | None = None
        self._sides_cache: dict[int, tuple[str, str]] = {}

    # -- icicle --------------------------------------------------------------------------------------
    def icicle_props(self, current: int) -> dict[str, Any]:
        steps = self.tree.steps
        lay = self.layout
        colors = self.node_colors()
        # a rejected cut leaves a final segment: hatched (the verdict's own colours stay in the titles)
        pattern = ["" if _accepted(s) else "/" for s in steps]
        opac = [1.0 if j <= current else 0.3 for j in range(len(steps))]
        line_w = [4 if j == current else 0.5 for j in range(len(steps))]
        line_c = [HIGHLIGHT if j == current else "white" for j in range(len(steps))]
        ncuts = [float(s.ncut) if s.ncut is not None else float("nan") for s in steps]
        custom = np.array(
            [[j + 1, lay.size[j], _fmt(ncuts[j]), "accepted" if _accepted(s) else "rejected"]
             for j, s in enumerate(steps)],
            dtype=object,
        ).reshape(len(steps), 4)
        return {
            "x": list(lay.size),
            "text": [str(j + 1) for j in range(len(steps))],
            "base": list(lay.offset),
            "y": list(lay.depth),
            "customdata": custom,
            "marker": {"color": colors, "opacity": opac, "line": {"width": line_w, "color": line_c},
                       "pattern": {"shape": pattern, "fgcolor": "white", "size": 7, "solidity": 0.25}},
        }

    # -- one step -------------------------------------------------------------------------------------
    def partition(self, k: int) -> np.ndarray:
        if k not in self._partition_cache:
            self._partition_cache[k] = np.asarray(self.tree.labels_at(k)).reshape(self.grid)
        return self._partition_cache[k]

    def sides(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(members, positive)`` of step ``i``: the sub-graph's flat pixel ids and the mask of this side
        (the Fiedler vector above the chosen threshold)."""
        s = self.tree.steps[i]
        members = _as_np(s.members).astype(np.int64).ravel()
        fiedler = _as_np(s.fiedler).astype(np.float64).ravel()
        thr = float(s.threshold) if s.threshold is not None else np.nan
        positive = _as_np(getattr(s, "positive", None)).astype(bool).ravel()
        if positive.size != members.size:
            if fiedler.size == members.size and np.isfinite(thr):
                positive = fiedler > thr
            else:
                positive = np.ones(members.size, bool)
        return members, positive

    def node_colors(self) -> list[str]:
        """The colour of each step's node in the tree of cuts: its region's colour in the partition the step
        starts from (the root's before any cut, a child's the side colour its parent's cut gave it)."""
        if self._node_colors is None:
            self._node_colors = [
                self.partition_colors(j)[int(self.partition(j).ravel()[int(_as_np(s.members).ravel()[0])])]
                if _as_np(s.members).size else "#808080"
                for j, s in enumerate(self.tree.steps)
            ]
        return self._node_colors

    def partition_colors(self, k: int) -> list[str]:
        """``"#rrggbb"`` of each segment of the partition after ``k`` steps, by its place in the tree: the
        partitions after each step are a chain from the root, coloured by
        :func:`~diffcut_lab.colors.lineage_hex` (a segment keeps its colour, its parts take nearby hues)."""
        self._colour_chain()
        assert self._chain is not None
        return self._chain[k]

    def _colour_chain(self) -> None:
        """Colour the chain of partitions once, and with it the cuts that were rejected.

        A rejected node is a leaf of the final partition, where it keeps the colour (and the hues) it had
        when its cut was tried: one labeling more, the final partition with every rejected cut made, gives
        each rejected cut's sides the colours that cut alone would have given them (the sides of one leaf
        inherit from that leaf only, ordered as the tree orders ids).
        """
        if self._chain is not None:
            return
        steps = self.tree.steps
        chain = [self.partition(j) for j in range(len(steps) + 1)]
        final = chain[-1].ravel()
        split = final.copy()
        nxt = int(final.max()) + 1 if final.size else 1
        for j, step in enumerate(steps):
            members, positive = self.sides(j)
            if not _accepted(step) and members.size and positive.any() and not positive.all():
                split[members[positive]] = nxt
                nxt += 1
        self._rejected_split = _raster_relabel(split)
        colours = lineage_hex([*chain, self._rejected_split.reshape(self.grid)])
        self._chain, self._rejected_colours = colours[:-1], colours[-1]

    def side_colors(self, i: int) -> tuple[str, str]:
        """``(this side, that side)`` colours of step ``i``: the colours the two sides take in the partition
        after the step when it is accepted, and would take when it is rejected (the node then stays one
        segment, in its own colour)."""
        if i in self._sides_cache:
            return self._sides_cache[i]
        members, positive = self.sides(i)
        before = self.partition(i).ravel()
        if not members.size or positive.all() or not positive.any():  # nothing to tell apart
            c = self.partition_colors(i)[int(before[members[0]])] if members.size else "#808080"
            out = (c, c)
        else:
            if _accepted(self.tree.steps[i]):
                after, colours = self.partition(i + 1).ravel(), self.partition_colors(i + 1)
            else:  # the colours the cut would have given (see _colour_chain)
                self._colour_chain()
                after, colours = self._rejected_split, self._rejected_colours
            out = (colours[int(after[members[positive][0]])], colours[int(after[members[~positive][0]])])
        self._sides_cache[i] = out
        return out

    def legend_props(self, i: int) -> dict[int, dict[str, Any]]:
        """The legend's two swatches at step ``i``: this side's and that side's colour."""
        pos, neg = self.side_colors(i)
        # x and y travel with every update: a view displayed again draws what the updates carried
        return {T_LEGEND_POS: {"x": [None], "y": [None], "marker": {"color": pos}},
                T_LEGEND_NEG: {"x": [None], "y": [None], "marker": {"color": neg}}}

    def step_props(self, i: int) -> dict[int, dict[str, Any]]:
        """Trace index -> properties for step ``i`` (0-based)."""
        s = self.tree.steps[i]
        h, w = self.grid
        members, positive = self.sides(i)
        fiedler = _as_np(s.fiedler).astype(np.float64).ravel()
        thr = float(s.threshold) if s.threshold is not None else np.nan
        split = np.zeros(self.n)
        fz = np.full(self.n, np.nan)
        if fiedler.size == members.size and members.size:
            fz[members] = fiedler
        if members.size:
            split[members] = np.where(positive, 1.0, 2.0)
        region = _as_np(getattr(s, "region", None)).astype(np.int64).ravel()
        if region.size > members.size:  # paper mode: nodes dropped by the published rule
            dropped = np.setdiff1d(region, members, assume_unique=True)
            split[dropped] = 3.0
        thresholds = _as_np(s.thresholds).astype(np.float64).ravel()
        ncuts = _as_np(s.ncut_values).astype(np.float64).ravel()
        finite = np.isfinite(ncuts)
        ncut = float(s.ncut) if s.ncut is not None else np.nan
        tau = float(self.tree.tau)
        xr, (_, ytop) = self.curve_ranges(i)
        zabs = float(np.nanmax(np.abs(fiedler - thr))) if fiedler.size and np.isfinite(thr) else 1.0
        zabs = zabs if zabs > 0 else 1.0
        part = self.partition(i + 1)
        k = int(part.max()) + 1 if part.size else 1
        acc = _accepted(s)
        pos, neg = self.side_colors(i)
        fiedler_props: dict[str, Any] = {"z": _round(fz.reshape(h, w)), "colorscale": _fiedler_colorscale(pos, neg)}
        if np.isfinite(thr):  # white is the chosen threshold, and the colour bar says so
            lo, hi = thr - zabs, thr + zabs
            fiedler_props.update(
                zmin=lo, zmax=hi, zmid=None,
                colorbar={"tickvals": [lo, thr, hi], "ticktext": [f"{lo:.2g}", "threshold", f"{hi:.2g}"]},
            )  # fmt: skip
        else:
            fiedler_props.update(zmin=None, zmax=None, zmid=None, colorbar={"tickvals": [], "ticktext": []})
        return {
            # every property a step needs, colour scales included: the static figure's frames are built from these
            T_SPLIT: {
                "z": split.reshape(h, w).astype(np.int8),
                "colorscale": _split_colorscale(pos, neg),
                "zmin": -0.5,
                "zmax": 3.5,
            },
            T_FIEDLER: fiedler_props,
            T_CURVE: {"x": _round(thresholds[finite]), "y": _round(ncuts[finite])},
            T_CHOSEN: {
                "x": [thr] if np.isfinite(thr) and np.isfinite(ncut) else [],
                "y": [ncut] if np.isfinite(thr) and np.isfinite(ncut) else [],
                "marker": {"color": ACCEPTED if acc else REJECTED},
            },
            T_TAU: {"x": xr, "y": [tau, tau], "text": ["", _tau_line_text(self.tree)]},
            T_THRESH: {"x": [thr, thr] if np.isfinite(thr) else [], "y": [0.0, ytop]},
            T_PARTITION: {
                "z": part,
                "zmin": -0.5,
                "zmax": k - 0.5,
                "colorscale": _partition_colorscale(self.partition_colors(i + 1)),
            },
            T_ICICLE: self.icicle_props(i),
            **self.legend_props(i),
        }

    def curve_ranges(self, i: int) -> tuple[list[float], list[float]]:
        """``(x range, y range)`` of the NCut panel at step ``i``: the step's whole sweep, the chosen
        threshold and the tau line, with room for their labels. Every frame carries its own."""
        s = self.tree.steps[i]
        thresholds = _as_np(s.thresholds).astype(np.float64).ravel()
        ncuts = _as_np(s.ncut_values).astype(np.float64).ravel()
        finite = np.isfinite(ncuts) & np.isfinite(thresholds) if thresholds.size == ncuts.size else np.isfinite(ncuts)
        xs = thresholds[finite] if thresholds.size == ncuts.size and finite.any() else thresholds
        thr = float(s.threshold) if s.threshold is not None else np.nan
        xs = np.concatenate([xs[np.isfinite(xs)], [thr] if np.isfinite(thr) else []])
        lo, hi = (float(xs.min()), float(xs.max())) if xs.size else (-1.0, 1.0)
        pad = 0.04 * (hi - lo) if hi > lo else max(abs(lo), 1e-6) * 0.1
        ytop = max(float(ncuts[np.isfinite(ncuts)].max()) if np.isfinite(ncuts).any() else 1.0, float(self.tree.tau))
        return [lo - pad, hi + pad], [0.0, ytop * 1.12]

    def layout_props(self, i: int) -> dict[str, Any]:
        """The layout of step ``i``: the NCut panel's axis ranges (the titles go with the annotations)."""
        xr, yr = self.curve_ranges(i)
        return {f"{_CURVE_X}.range": xr, f"{_CURVE_Y}.range": yr}

    def titles(self, i: int) -> list[str]:
        s = self.tree.steps[i]
        acc = _accepted(s)
        color = ACCEPTED if acc else REJECTED
        part = self.partition(i + 1)
        k = int(part.max()) + 1 if part.size else 1
        verdict = "accepted" if acc else "rejected"
        ncut = float(s.ncut) if s.ncut is not None else np.nan
        # the value is in the title, not beside the marker, where the curve or the threshold line crosses it
        if not np.isfinite(ncut):
            value = "NCut"
        elif _auto_rule(self.tree) == "dynamic":
            value = f"NCut {ncut:.3f} · τ auto"
        else:
            value = f"NCut {ncut:.3f} {'<' if acc else '≥'} {_tau_text(self.tree)}"
        return [
            f"sub-graph of step {i + 1}: {len(s.members)} px",
            "Fiedler vector (white: the threshold)",
            f"{value}: <span style='color:{color}'><b>{verdict}</b></span>",
            f"partition after step {i + 1}: {k} segment{'s' if k != 1 else ''}",
            f"tree of cuts: {len(self.tree.steps)} steps, {self.k_final} leaves (hatched)"
            + (" (click a node)" if self.interactive else ""),
        ]


# ----------------------------------------------------------------------------------------------------
# figure construction
# ----------------------------------------------------------------------------------------------------
def _background(image: Any, features: Any, grid: tuple[int, int], max_side: int) -> np.ndarray:
    if image is not None:
        return downscale(as_rgb(image), max_side)
    if features is not None:
        rgb = (pca_rgb(features) * 255).astype(np.uint8)
        return np.kron(rgb, np.ones((8, 8, 1), dtype=np.uint8))
    h, w = grid
    return np.full((h * 8, w * 8, 3), 200, np.uint8)


def _base_figure(
    data: _StepData, background: np.ndarray, *, widget: bool, height: int, width: int | None
) -> go.Figure:
    fig = make_subplots(
        rows=2,
        cols=3,
        specs=[[{}, {}, {}], [{}, {"colspan": 2}, None]],
        subplot_titles=data.titles(0),
        horizontal_spacing=0.1,
        vertical_spacing=0.13,  # room for the Fiedler colour bar and its title
        row_heights=[0.55, 0.45],
    )
    geom = grid_geometry(background.shape[:2], data.grid)
    h, w = data.grid
    fig.add_trace(image_trace(background, name="image"), row=1, col=1)
    fig.add_trace(
        go.Heatmap(
            z=np.zeros((h, w)), zmin=-0.5, zmax=3.5, showscale=False, name="sub-graph", hoverinfo="skip", **geom,
        ),
        row=1,
        col=1,
    )
    # on the image's own coordinates, like every other map of the image: its aspect ratio, cells aligned
    fig.add_trace(
        go.Heatmap(
            z=np.zeros((h, w)), name="Fiedler",
            colorbar={"orientation": "h", "thickness": 8, "tickfont": {"size": 9}, "yanchor": "top",
                      "xanchor": "center", "title": {"text": "Fiedler value", "side": "top", "font": {"size": 10}}},
            hovertemplate="Fiedler value %{z:.4f}<extra></extra>", **geom,
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(x=[], y=[], mode="lines", name="NCut(threshold)", line={"color": "#455a64", "width": 2},
                   hovertemplate="threshold %{x:.4f}<br>NCut %{y:.4f}<extra></extra>"),
        row=1,
        col=3,
    )
    fig.add_trace(
        go.Scatter(x=[], y=[], mode="markers", name="chosen", marker={"size": 11, "symbol": "diamond"},
                   cliponaxis=False,
                   hovertemplate="chosen threshold %{x:.4f}<br>NCut %{y:.4f}<extra></extra>"),
        row=1,
        col=3,
    )
    fig.add_trace(
        go.Scatter(x=[], y=[], mode="lines+text", name="τ", line={"color": "#6a1b9a", "dash": "dash", "width": 2},
                   textposition="middle right", textfont={"color": "#6a1b9a"}, hoverinfo="name",
                   cliponaxis=False),  # the label beside the panel, where no curve crosses it
        row=1,
        col=3,
    )
    fig.add_trace(
        go.Scatter(x=[], y=[], mode="lines", name="threshold", line={"color": "#757575", "dash": "dot"},
                   hoverinfo="skip"),
        row=1,
        col=3,
    )
    fig.add_trace(image_trace(background, name="image"), row=2, col=1)
    fig.add_trace(
        go.Heatmap(
            z=np.zeros((h, w)), showscale=False, name="partition",
            hovertemplate="segment %{z}<extra></extra>", **geom,
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=[], base=[], y=[], orientation="h", width=0.92, name="cuts", textposition="inside",
            insidetextanchor="middle", textfont={"color": "white"},
            hovertemplate="step %{customdata[0]} · %{customdata[1]} px<br>NCut %{customdata[2]} · "
            "%{customdata[3]}<extra></extra>",
        ),
        row=2,
        col=2,
    )
    # the legend of the step's colours, said once for the sub-graph, Fiedler and partition panels
    dropped = any(_as_np(getattr(st, "region", None)).size > len(st.members) for st in data.tree.steps)
    for name, colour, shown in (
        ("this side: Fiedler > threshold", "#808080", True),
        ("that side: Fiedler ≤ threshold", "#808080", True),
        ("outside the sub-graph", _OUTSIDE_SOLID, True),
        ("dropped by the paper rule", _DROPPED_RGBA, dropped),
    ):
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", name=name, showlegend=shown, hoverinfo="skip",
                       marker={"symbol": "square", "size": 12, "color": colour,
                               "line": {"width": 1, "color": "#9e9e9e"}}),
            row=1,
            col=1,
        )
    for tr in fig.data[:T_LEGEND_POS]:
        if "showlegend" in tr:
            tr.showlegend = False
    for r, c in ((1, 1), (1, 2), (2, 1)):
        style_image_axes(fig, r, c)
    # the Fiedler panel shows the outside of the sub-graph (no value there) in the sub-graph panel's dark
    fig.add_shape(type="rect", x0=-0.5, x1=background.shape[1] - 0.5, y0=-0.5, y1=background.shape[0] - 0.5,
                  fillcolor=_OUTSIDE_SOLID, line_width=0, layer="below", row=1, col=2)
    fig.update_xaxes(title_text="threshold on the Fiedler vector", row=1, col=3, title_font={"size": 11},
                     nticks=4)  # few ticks: they stay level in a narrow panel
    fig.update_yaxes(title_text="NCut", row=1, col=3, title_font={"size": 11})
    fig.update_xaxes(title_text="pixels", row=2, col=2, range=[0, data.n], showgrid=False,
                     title_font={"size": 11})
    max_depth = max(data.layout.depth) if data.layout.depth else 0
    fig.update_yaxes(title_text="depth", row=2, col=2, autorange="reversed", dtick=1,
                     range=[max_depth + 0.6, -0.6], title_font={"size": 11})
    fig.update_layout(
        height=height,
        width=width,
        margin={"l": 10, "r": _TAU_LABEL_ROOM, "t": 70, "b": 40},
        barmode="overlay",
        showlegend=True,
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 0.995, "yanchor": "top",
                "yref": "container", "font": {"size": 11}, "itemclick": False, "itemdoubleclick": False},
        uniformtext={"minsize": 9, "mode": "hide"},
        plot_bgcolor="white",
        hovermode="closest",
        clickmode="event",
    )
    fig.update_annotations(font_size=12)
    sub = fig.get_subplot(1, 2)
    fig.data[T_FIEDLER].colorbar.update(
        x=(sub.xaxis.domain[0] + sub.xaxis.domain[1]) / 2, len=0.8 * (sub.xaxis.domain[1] - sub.xaxis.domain[0]),
        y=sub.yaxis.domain[0] - 0.01,
    )
    curve = fig.get_subplot(1, 3)
    assert (curve.xaxis.plotly_name, curve.yaxis.plotly_name) == (_CURVE_X, _CURVE_Y)
    _apply(fig, data, 0)
    # The widget starts from the finished first frame: a FigureWidget edited before the front-end draws
    # it loses properties (a batched restyle resets the unchanged ones to plotly's defaults there).
    return go.FigureWidget(fig) if widget else fig


def _apply(fig: go.Figure, data: _StepData, i: int) -> None:
    for idx, props in data.step_props(i).items():
        fig.data[idx].update(props)
    for ann, text in zip(fig.layout.annotations, data.titles(i)):
        ann.text = text
    fig.layout.update(data.layout_props(i))


def cut_steps_figure(
    tree: Any,
    image: Any = None,
    *,
    features: Any = None,
    max_steps: int = 60,
    max_side: int = 192,
    height: int = 720,
    width: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """A static figure of every cut with a slider over the steps (needs no kernel; for HTML reports).

    Parameters
    ----------
    tree
        A :class:`~diffcut_lab.CutTree` built with ``grid=(h, w)``.
    image
        The segmented image (anything :func:`diffcut_lab.load_image` accepts); ``None`` shows the PCA
        colours of ``features`` or a grey canvas.
    features
        Optional ``(C, h, w)`` features, only used for the background when ``image`` is ``None``.
    max_steps
        At most this many steps get a slider position (the first ones in visiting order), which bounds
        the size of the figure in an HTML file.
    max_side
        Longer side of the displayed image.
    height, width
        Figure size in pixels.
    title
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        The figure shows the first step; the slider (or the play button) moves through the others.
    """
    _require_steps(tree)
    data = _StepData(tree, interactive=False)
    bg = _background(image, features, data.grid, max_side)
    fig = _base_figure(data, bg, widget=False, height=height, width=width)
    n = min(len(tree.steps), max_steps)
    frames = []
    for i in range(n):
        props = data.step_props(i)
        xr, yr = data.curve_ranges(i)
        frame_layout = {
            "annotations": [dict(a.to_plotly_json(), text=t) for a, t in zip(fig.layout.annotations, data.titles(i))],
            _CURVE_X: {"range": xr},
            _CURVE_Y: {"range": yr},
        }
        frames.append(
            go.Frame(
                name=str(i + 1),
                data=[type(fig.data[idx])(**props[idx]) for idx in _DYNAMIC],
                traces=_DYNAMIC,
                layout=frame_layout,
            )
        )
    fig.frames = frames
    anim = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    fig.update_layout(
        # the title on the first line (12 px from the top), the legend on its own line under it (42 px)
        title={"text": title or f"recursive NCut: {len(tree.steps)} steps, {data.k_final} segments "
                                 f"({_tau_text(tree)})", "y": 1 - 12 / height, "yanchor": "top", "yref": "container"},
        margin={"t": 100, "b": 110},
        # the step's legend on a line of its own under the title (a narrow export keeps both whole)
        legend={"y": 1 - 42 / height, "x": 0.0, "xanchor": "left"},
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "step "},
                "pad": {"t": 45},
                "len": 0.9,
                "x": 0.1,
                "steps": [{"label": str(i + 1), "method": "animate", "args": [[str(i + 1)], anim]}
                          for i in range(n)],
            }
        ],
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 0,
                "yanchor": "top",
                "pad": {"t": 55},
                "showactive": False,
                "buttons": [
                    {"label": "▶", "method": "animate",
                     "args": [None, dict(anim, frame={"duration": 600, "redraw": True}, fromcurrent=True)]},
                    {"label": "❚❚", "method": "animate", "args": [[None], anim]},
                ],
            }
        ],
    )
    return fig


def cut_tree_figure(tree: Any, *, height: int = 320, title: str | None = None) -> go.Figure:
    """The tree of cuts alone, as an icicle: one bar per step (x: pixels covered, y: depth) in its region's
    colour by its place in the tree (the colours of the stepper's partition panel, a final segment's bar in
    the segment's colour); a rejected cut (the node is a final segment) is hatched."""
    data = _StepData(tree)
    props = data.icicle_props(len(tree.steps) - 1)
    props["marker"]["line"] = {"width": 0.5, "color": "white"}
    fig = go.Figure(
        go.Bar(orientation="h", width=0.92, name="cuts",
               hovertemplate="step %{customdata[0]} · %{customdata[1]} px<br>NCut %{customdata[2]} · "
               "%{customdata[3]}<extra></extra>", **props)
    )
    max_depth = max(data.layout.depth) if data.layout.depth else 0
    fig.update_layout(
        title=title or f"tree of cuts: {len(tree.steps)} steps, {data.k_final} segments ({_tau_text(tree)})",
        height=height, barmode="overlay", plot_bgcolor="white", margin={"l": 10, "r": 10, "t": 50, "b": 40},
        xaxis={"title": "pixels", "range": [0, data.n], "showgrid": False},
        yaxis={"title": "depth", "range": [max_depth + 0.6, -0.6], "dtick": 1},
    )
    return fig


# ----------------------------------------------------------------------------------------------------
# the app
# ----------------------------------------------------------------------------------------------------
class CutStepper:
    """An ipywidgets app to step through each recursive cut of a tree (slider, previous/next, play).

    ``cut_stepper(...)`` is the same class under the function-style name.

    Parameters
    ----------
    tree
        A :class:`~diffcut_lab.pipeline.Segmentation` -- its tree, image, features and (for an
        attention-walk cut) attention probabilities: every slider then recomputes --, or a
        :class:`~diffcut_lab.CutTree` built with ``grid=(h, w)``. A K-way tree has no steps: an error says
        so.
    image
        The segmented image (default: the Segmentation's); ``None`` shows the PCA colours of ``features``
        (or a grey canvas).
    features
        The ``(C, h, w)`` features the tree was cut from (default: the Segmentation's). With them, ``alpha``
        can be changed, ``tau`` raised above the tree's tau and ``tau="auto"`` switched on or off: the cuts
        are recomputed by the segmentation core (:func:`~diffcut_lab.segmentation.recut`) with every other
        setting of the tree (mode, min_size, max_depth, solver, knn, affinity and walk_steps, partition,
        auto_rule); without them ``tau`` can only be lowered (pruning, no recomputation).
    attention
        ``(N, N)`` self-attention probabilities of the layer (default: the Segmentation's): an
        attention-walk tree (``affinity="attention"``) is cut again from them, and without them it can only
        be pruned.
    alpha
        The affinity exponent the tree was computed with (default: the tree's own, recorded by
        :func:`~diffcut_lab.segmentation.cut_tree`, else 10).
    tau_range, alpha_range
        Slider ranges.
    max_side
        Longer side of the displayed image.
    height, width
        Size of the figure in pixels.

    Attributes
    ----------
    slider, prev_button, next_button, tau_slider, auto_box, alpha_slider, figure, status, info, tree, widget
        What a notebook (or a test) can drive or read: the 1-based step slider, the buttons, the tau slider,
        the "τ auto" box, the alpha slider (``None`` without features), the plotly ``FigureWidget``, the
        HTML status and note lines, the tree shown now and the whole app. Display the object (last
        expression of a cell) to use it; drive it from code with ``show_step``, ``set_tau``, ``set_auto``
        and ``set_alpha``.

    Notes
    -----
    A ``tau="auto"`` tree stays automatic through an alpha change. Its tau slider is disabled while
    "τ auto" is ticked (with the dynamic rule each cut was decided by the rule, so pruning would give a
    tree no setting cuts); unticking it, or :meth:`set_tau`, switches explicitly to a fixed tau, which the
    note line says. An attention-walk tree has no alpha (the walk does not use it): its alpha slider is
    disabled.

    Examples
    --------
    >>> import diffcut_lab as dl  # doctest: +SKIP
    >>> seg = dl.DiffCut(bb, tau="auto", refine="none").segment(image)  # doctest: +SKIP
    >>> cut_stepper(seg)  # doctest: +SKIP
    >>> tree = dl.cut_tree(feats, dl.DiffCutConfig(tau=0.5))  # doctest: +SKIP
    >>> cut_stepper(tree, image, features=feats)  # doctest: +SKIP
    """

    def __init__(
        self,
        tree: Any,
        image: Any = None,
        *,
        features: Any = None,
        attention: Any = None,
        alpha: float | None = None,
        tau_range: tuple[float, float] = (0.05, 1.0),
        alpha_range: tuple[float, float] = (1.0, 20.0),
        max_side: int = 192,
        height: int = 700,
        width: int | None = None,
    ) -> None:
        import ipywidgets as widgets

        from ..pipeline import Segmentation

        if isinstance(tree, Segmentation):
            seg = tree
            tree = seg.tree
            image = seg.image if image is None else image
            features = seg.features if features is None else features
            attention = seg.attention if attention is None else attention
        _require_steps(tree)
        self._features = features
        self._attention = attention
        self._walk = tree.params.get("affinity") == "attention"
        #: whether the cuts can be recomputed: the features, and for an attention-walk tree its attention
        self.recomputable = features is not None and (attention is not None or not self._walk)
        self._grid = _grid_of(tree)
        self._full = tree  # the deepest tree computed so far for the current alpha (prune it for smaller tau)
        self.tree = tree
        self.alpha = float(alpha if alpha is not None else tree.params.get("alpha", 10.0))
        self.last_update_s = 0.0
        self._data = _StepData(tree)
        self._busy = False
        self._syncing = False
        bg = _background(image, features, self._grid, max_side)
        self.figure = _base_figure(self._data, bg, widget=True, height=height, width=width)
        self.figure.data[T_ICICLE].on_click(self._on_tree_click)

        n = len(tree.steps)
        self.slider = widgets.IntSlider(
            value=1, min=1, max=n, step=1, description="cut", continuous_update=True,
            layout=widgets.Layout(width="420px"),
        )
        self.prev_button = widgets.Button(description="◀ prev", tooltip="previous cut",
                                          layout=widgets.Layout(width="80px"))
        self.next_button = widgets.Button(description="next ▶", tooltip="next cut",
                                          layout=widgets.Layout(width="80px"))
        self.play = widgets.Play(value=1, min=1, max=n, interval=700, tooltip="play through the cuts",
                                 layout=widgets.Layout(width="150px"))
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))
        tau = float(tree.tau)
        hi_tau = max(tau_range[1], tau) if self.recomputable else max(tau, tau_range[0])
        self.tau_slider = widgets.FloatSlider(
            value=tau, min=tau_range[0], max=hi_tau, step=0.01, description="τ",
            continuous_update=False, readout_format=".2f", layout=widgets.Layout(width="330px"),
        )
        self.auto_box = widgets.Checkbox(
            value=self.auto, description="τ auto", indent=False, disabled=not self.recomputable,
            tooltip="tau 'auto': a rule decides each cut (DiffCutConfig.auto_rule); recomputes",
            layout=widgets.Layout(width="90px"),
        )
        self.alpha_slider = None
        if features is not None:
            self.alpha_slider = widgets.FloatSlider(
                value=self.alpha, min=alpha_range[0], max=max(alpha_range[1], self.alpha), step=0.5,
                description="α", continuous_update=False, readout_format=".1f",
                disabled=self._walk or not self.recomputable, layout=widgets.Layout(width="330px"),
            )
        self.info = widgets.HTML()

        self.slider.observe(self._on_slider, names="value")
        self.prev_button.on_click(lambda _b: self.show_step(self.step - 1))
        self.next_button.on_click(lambda _b: self.show_step(self.step + 1))
        self.tau_slider.observe(self._on_tau, names="value")
        self.auto_box.observe(self._on_auto, names="value")
        if self.alpha_slider is not None:
            self.alpha_slider.observe(self._on_alpha, names="value")

        controls = [self.tau_slider, self.auto_box] + ([self.alpha_slider] if self.alpha_slider is not None else [])
        self.info.layout = widgets.Layout(margin="0 0 0 12px")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.prev_button, self.slider, self.next_button, self.play],
                             layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
                self.status,
                # the sliders wrap as a group on narrow screens; the recompute note has a line of its own
                widgets.HBox(controls, layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
                self.info,
                self.figure,
            ]
        )
        self.widget.add_class("diffcut-cut-stepper")
        self._sync_controls()
        self._write_info("")
        self._render_status()  # the figure already shows step 1 (see _base_figure)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The step shown now, 1-based."""
        return int(self.slider.value)

    @property
    def auto(self) -> bool:
        """Whether the tree shown now was cut with ``tau="auto"``."""
        return _auto_rule(self.tree) is not None

    def show_step(self, k: int) -> None:
        """Show step ``k`` (1-based; clamped to the tree's steps)."""
        k = int(min(max(k, 1), len(self.tree.steps)))
        if k == self.slider.value:
            self._render()
        else:
            self.slider.value = k  # triggers _render through the observer

    def set_tau(self, tau: float) -> None:
        """Show the tree for a fixed ``tau``: prune the current tree when ``tau`` is not larger than the tau
        it was computed with (no recomputation), otherwise recompute from the features.

        On a ``tau="auto"`` tree this switches explicitly to a fixed tau (the note line says so): with the
        dynamic rule the cuts are recomputed at ``tau``, since the rule decided each of them; the stable
        rule's tree is the fixed-tau tree of its tau, pruned for a smaller one.

        Raises
        ------
        ParameterError
            When the cuts would have to be recomputed and the features (or, for an attention-walk tree,
            the attention probabilities) were not given.
        """
        tau = float(tau)
        was_auto = self.auto
        t0 = time.perf_counter()
        if tau <= float(self._full.tau) + 1e-12 and _auto_rule(self._full) != "dynamic":
            tree = self._full.prune(tau)
            what = f"τ = {tau:.2f}: pruned"
        elif self.recomputable:
            self._full = self._recompute(tau=tau)
            tree = self._full
            what = f"τ = {tau:.2f}: recomputed"
        else:
            raise ParameterError(self._why_not_recomputable(
                f"tau={tau} needs the cuts recomputed ("
                + ("the tree was cut with tau='auto' by the dynamic rule, which decided each cut"
                   if _auto_rule(self._full) == "dynamic" else f"it is larger than the tree's tau {self._full.tau:g}")
                + ")"
            ))  # fmt: skip
        if was_auto:
            what += f" with a fixed τ instead of τ auto ({self.tree.params.get('auto_rule', 'dynamic')} rule)"
        self._set_tree(tree, time.perf_counter() - t0, what)

    def set_auto(self, on: bool = True) -> None:
        """Switch ``tau="auto"`` on (recompute with the tree's ``auto_rule``) or off (the fixed tau of the
        tau slider, :meth:`set_tau`).

        Raises
        ------
        ParameterError
            Without the features (or, for an attention-walk tree, the attention probabilities).
        """
        if bool(on) == self.auto:
            self._sync_controls()
            return
        if not on:
            self.set_tau(float(self.tau_slider.value))
            return
        if not self.recomputable:
            raise ParameterError(self._why_not_recomputable("tau='auto' needs the cuts recomputed"))
        t0 = time.perf_counter()
        self._full = self._recompute(tau=AUTO)
        rule = self._full.params.get("auto_rule", "dynamic")
        self._set_tree(self._full, time.perf_counter() - t0, f"τ auto ({rule} rule): recomputed")

    def set_alpha(self, alpha: float) -> None:
        """Recompute the affinity (power ``alpha``) and the cuts from the features, with every other
        setting of the tree shown now (a ``tau="auto"`` tree stays automatic).

        Raises
        ------
        ParameterError
            Without the features (or, for an attention-walk tree, the attention probabilities).
        """
        if not self.recomputable:
            raise ParameterError(self._why_not_recomputable("changing alpha needs the cuts recomputed"))
        t0 = time.perf_counter()
        self.alpha = float(alpha)
        self._full = self._recompute()
        self._set_tree(self._full, time.perf_counter() - t0, f"α = {self.alpha:.1f}: recomputed")

    # -- internals ----------------------------------------------------------------------------------------
    def _why_not_recomputable(self, what: str) -> str:
        if self._features is None:
            return f"{what}: pass features= to cut_stepper (or pass it the Segmentation)."
        return (f"{what}: this tree walks on the layer's self-attention; pass attention= (the '<attn1>.probs' "
                "capture of the same image) to cut_stepper, or pass it the Segmentation, which keeps them.")

    def _sync(self, widget: Any, value: Any) -> None:
        """Move a widget to ``value`` without triggering its observer (the change is already applied)."""
        if isinstance(value, bool) and bool(widget.value) == value:
            return
        if not isinstance(value, bool) and abs(float(widget.value) - value) <= 1e-9:
            return
        self._syncing = True
        try:
            widget.value = value
        finally:
            self._syncing = False

    def _sync_controls(self) -> None:
        """The controls show the tree: its tau (its own, read-only while tau is "auto"), auto, alpha."""
        if float(self.tree.tau) > self.tau_slider.max:
            self.tau_slider.max = float(self.tree.tau)
        self._sync(self.tau_slider, float(self.tree.tau))
        self.tau_slider.disabled = self.auto
        self._sync(self.auto_box, self.auto)
        if self.alpha_slider is not None:
            self._sync(self.alpha_slider, self.alpha)

    def _on_tau(self, change: dict) -> None:
        if not self._syncing:
            self.set_tau(change["new"])

    def _on_auto(self, change: dict) -> None:
        if not self._syncing:
            self.set_auto(bool(change["new"]))

    def _on_alpha(self, change: dict) -> None:
        if not self._syncing:
            self.set_alpha(change["new"])

    def _recompute(self, **changes: Any) -> Any:
        from ..segmentation import recut

        # every setting of the tree shown now (mode, min_size, max_depth, solver, knn, affinity, walk_steps,
        # partition, auto_rule, and tau itself, "auto" included) is kept unless changed here
        return recut(self.tree, self._features, attention=self._attention, alpha=self.alpha, **changes)

    def _write_info(self, what: str) -> None:
        notes = []
        rule = _auto_rule(self.tree)
        if rule == "dynamic":
            notes.append(f"τ auto: the dynamic rule decided each cut below τ {float(self.tree.tau):.2f}, where the "
                         "τ slider rests; "
                         + ("untick it to cut at a fixed τ (recomputed)"
                            if self.recomputable else "a fixed τ needs the cuts recomputed (pass features=)"))
        elif rule == "stable":
            notes.append(f"τ auto: the stable rule chose τ {float(self.tree.tau):.2f}; untick it to move τ")
        if self._walk:
            notes.append("the attention walk has no α" + ("" if self.recomputable else
                         "; without its attention probabilities (attention=) τ can only be lowered"))
        elif not self.recomputable:
            notes.append(f"the τ slider starts at its maximum, the tree's τ {float(self.tree.tau):.2f}: without "
                         "features= τ can only be lowered (pruning)")
        parts = [what] if what else []
        parts += notes
        self.info.value = f"<span style='color:#555'>{' · '.join(parts)}</span>" if parts else ""

    def _set_tree(self, tree: Any, seconds: float, what: str) -> None:
        old_step = self.step
        self.tree = tree
        self._data = _StepData(tree)
        n = max(len(tree.steps), 1)
        self.last_update_s = seconds
        self._sync_controls()
        self._write_info(f"{what} in {1000 * seconds:.0f} ms · {len(tree.steps)} steps · {tree.n_segments} segments")
        max_depth = max(self._data.layout.depth) if self._data.layout.depth else 0
        with self.figure.batch_update():
            self.figure.get_subplot(2, 2).yaxis.range = [max_depth + 0.6, -0.6]
        # move the slider bounds without rendering twice
        self._busy = True
        try:
            self.play.max = n
            if self.slider.value > n:
                self.slider.value = n
            self.slider.max = n
        finally:
            self._busy = False
        self.show_step(min(old_step, n))

    def _on_slider(self, change: dict) -> None:
        if not self._busy:
            self._render()

    def _on_tree_click(self, trace: Any, points: Any, state: Any) -> None:
        inds = list(getattr(points, "point_inds", []) or [])
        if inds:
            self.show_step(int(inds[0]) + 1)

    def _render_status(self) -> None:
        i = self.step - 1
        s = self.tree.steps[i]
        color = ACCEPTED if _accepted(s) else REJECTED
        head, verdict, tail = (html.escape(t) for t in _summary_parts(self.tree, i))  # the verdict once, in its colour
        self.status.value = (
            f"<b style='font-size:14px'>{head} → "
            f"<span style='background:{color};color:white;border-radius:3px;padding:1px 6px'>{verdict}</span>"
            f"{tail}</b>"
        )

    def _render(self) -> None:
        self._render_status()
        with self.figure.batch_update():
            _apply(self.figure, self._data, self.step - 1)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return app_mimebundle(self.widget, [self.figure], **kwargs)


cut_stepper = CutStepper  # the function-style name the notebooks and docs use
