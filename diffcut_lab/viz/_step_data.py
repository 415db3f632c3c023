"""What each recorded cut of a tree shows in the step-through views: the trace updates of every panel,
the panel titles and the one-line summary (computed once per tree, cached; no figure is built here).

Shared by the static figure (:mod:`diffcut_lab.viz.step_figure`) and the app
(:mod:`diffcut_lab.viz.stepper`). One colour means one thing: each segment has its colour by its place
in the tree (:func:`~diffcut_lab.colors.lineage_hex` over the partitions after each step), in the
partition panel and the icicle alike, and at each step the two sides of the cut have the colours they
take (or, for a rejected cut, would take) in the partition.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..colors import lineage_hex
from ..errors import ParameterError
from ..label_maps import relabel_raster
from ..options import AUTO
from ._common import ACCEPTED, HIGHLIGHT, REJECTED
from .icicle import icicle_layout

__all__ = [
    "CURVE_X",
    "CURVE_Y",
    "DROPPED_RGBA",
    "DYNAMIC",
    "N_TRACES",
    "OUTSIDE_SOLID",
    "PAINT_OPACITY",
    "StepData",
    "as_np",
    "auto_rule",
    "grid_of",
    "is_accepted",
    "require_steps",
    "step_summary",
    "summary_parts",
    "tau_text",
]

# trace order of the stepper figure (indices are relied on by updates and by the slider frames):
# 0 image, 1 sub-graph, 2 Fiedler vector, 3 NCut curve, 4 chosen threshold, 5 tau line, 6 threshold line,
# 7 image under the partition, 8 partition, 9 tree of cuts, 10-13 the step's legend (this side, that side,
# outside, dropped), 14 the tree's hatching (over 9)
T_SPLIT, T_FIEDLER, T_CURVE, T_CHOSEN, T_TAU, T_THRESH = range(1, 7)
T_PARTITION, T_ICICLE = 8, 9
T_LEGEND_POS, T_LEGEND_NEG = 10, 11  # one colour for each side of the cut, said once for every panel
T_HATCH = 14
N_TRACES = 15
DYNAMIC = [T_SPLIT, T_FIEDLER, T_CURVE, T_CHOSEN, T_TAU, T_THRESH, T_PARTITION, T_ICICLE, T_LEGEND_POS,
            T_LEGEND_NEG, T_HATCH]  # fmt: skip

#: weight of a segment's (or a side's) colour over the image, the same in the sub-graph and partition panels
PAINT_OPACITY = 0.55
#: outside the sub-graph being cut: dimmed in the sub-graph panel, the same dark in the Fiedler panel
_OUTSIDE_RGBA = "rgba(15,15,25,0.72)"
OUTSIDE_SOLID = "#3a3a44"
#: nodes the published rule drops from a sub-graph (paper mode): a grey no segment colour takes
DROPPED_RGBA = "rgba(236,236,236,0.9)"
CURVE_X, CURVE_Y = "xaxis3", "yaxis3"  # the NCut panel's axes (row 1, column 3 of the figure's grid)


def require_steps(tree: Any) -> None:
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


def auto_rule(tree: Any) -> str | None:
    """The automatic rule of a ``tau="auto"`` tree (``"dynamic"`` or ``"stable"``), None for a fixed tau."""
    if tree.params.get("tau") != AUTO:
        return None
    return str(tree.params.get("auto_rule", "dynamic"))


def tau_text(tree: Any) -> str:
    """How the tree's tau reads on the panels: ``τ 0.50``, ``τ auto`` (the dynamic rule decides each cut
    below :data:`~diffcut_lab.options.AUTO_TAU`), ``τ 0.47 (auto)`` (the stable rule's tau)."""
    rule = auto_rule(tree)
    if rule == "dynamic":
        return "τ auto"
    return f"τ {float(tree.tau):.2f}" + (" (auto)" if rule else "")


def _decision(tree: Any, s: Any) -> str:
    """Why step ``s`` was cut or not, in a few words: NCut against tau, or the dynamic rule's verdict."""
    ncut = _fmt(float(s.ncut) if s.ncut is not None else np.nan)
    if auto_rule(tree) == "dynamic":
        # the step's reason without its verdict, its NCut (shown already) and its details in brackets
        why = str(getattr(s, "reason", "") or "").split(" (")[0].split(" [")[0]
        why = re.sub(r"^ncut \S+ ", "", re.sub(r"^(accepted|rejected|stopped): ", "", why))
        return f"NCut {ncut} · τ auto ({why})" if why else f"NCut {ncut} · τ auto"
    return f"NCut {ncut} {'<' if is_accepted(s) else '≥'} {tau_text(tree)}"


def grid_of(tree: Any) -> tuple[int, int]:
    grid = getattr(tree, "grid", None)
    if grid is None:
        n = int(np.asarray(tree.labels).size)
        side = math.isqrt(n)
        if side * side != n:
            raise ParameterError(
                "the tree has no grid and its size is not a square: pass a tree built with grid="
            )
        return (side, side)
    return (int(grid[0]), int(grid[1]))


def as_np(x: Any) -> np.ndarray:
    if x is None:
        return np.zeros(0)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _round(a: np.ndarray, nd: int = 4) -> np.ndarray:
    return np.round(a.astype(np.float64), nd)


def is_accepted(step: Any) -> bool:
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
    return _band_scale(
        [_OUTSIDE_RGBA, _rgba(positive, PAINT_OPACITY), _rgba(negative, PAINT_OPACITY), DROPPED_RGBA]
    )


def _fiedler_colorscale(positive: str, negative: str) -> list[list[Any]]:
    """The Fiedler panel's scale: that side's colour below the threshold, white at it, this side's above."""
    return [[0.0, negative], [0.5, "#ffffff"], [1.0, positive]]


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def step_summary(tree: Any, i: int) -> str:
    """One line describing step ``i`` (0-based) of ``tree``."""
    head, verdict, tail = summary_parts(tree, i)
    return f"{head} → {verdict}{tail}"


def summary_parts(tree: Any, i: int) -> tuple[str, str, str]:
    """The summary of step ``i`` in three parts: what was cut and why, the verdict, what was dropped."""
    steps = tree.steps
    s = steps[i]
    verdict = "accepted: split" if is_accepted(s) else "rejected: leaf"
    head = f"step {i + 1} of {len(steps)} · depth {int(s.depth)} · {len(s.members)} px · {_decision(tree, s)}"
    region = getattr(s, "region", None)
    tail = ""
    if region is not None and len(region) > len(s.members):
        tail = f" · {len(region) - len(s.members)} px dropped (paper rule)"
    return head, verdict, tail


def _tau_line_text(tree: Any) -> str:
    """The label of the NCut panel's tau line (for the dynamic rule, the ceiling below which it decides)."""
    if auto_rule(tree) == "dynamic":
        return f"τ auto ≤ {float(tree.tau):.2f}"
    return f"τ = {float(tree.tau):.2f}" + (" (auto)" if auto_rule(tree) else "")


class StepData:
    """Computes the trace updates of every step of one tree (cached), for the figure builders."""

    def __init__(self, tree: Any, *, interactive: bool = True) -> None:
        self.tree = tree
        self.interactive = interactive
        self.grid = grid_of(tree)
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
    def _opacities(self, current: int) -> list[float]:
        """Each node's opacity: the steps up to ``current`` in full, the ones still to come faded."""
        return [1.0 if j <= current else 0.3 for j in range(len(self.tree.steps))]

    def icicle_props(self, current: int) -> dict[str, Any]:
        """The nodes of the tree of cuts at step ``current``: each in its region's colour, the current one
        outlined."""
        steps = self.tree.steps
        lay = self.layout
        colors = self.node_colors()
        opac = self._opacities(current)
        line_w = [4 if j == current else 0.5 for j in range(len(steps))]
        line_c = [HIGHLIGHT if j == current else "white" for j in range(len(steps))]
        ncuts = [float(s.ncut) if s.ncut is not None else float("nan") for s in steps]
        custom = np.array(
            [
                [j + 1, lay.size[j], _fmt(ncuts[j]), "accepted" if is_accepted(s) else "rejected"]
                for j, s in enumerate(steps)
            ],
            dtype=object,
        ).reshape(len(steps), 4)
        return {
            "x": list(lay.size),
            "text": [str(j + 1) for j in range(len(steps))],
            "base": list(lay.offset),
            "y": list(lay.depth),
            "customdata": custom,
            "marker": {"color": colors, "opacity": opac, "line": {"width": line_w, "color": line_c}},
        }

    def hatch_props(self, current: int) -> dict[str, Any]:
        """The hatching over the nodes at step ``current``: a rejected cut leaves a final segment, hatched
        (the verdict's own colours stay in the titles); faded like the node under it."""
        lay = self.layout
        return {
            "x": list(lay.size),
            "base": list(lay.offset),
            "y": list(lay.depth),
            "marker": {"opacity": self._opacities(current),
                       "pattern": {"shape": ["" if is_accepted(s) else "/" for s in self.tree.steps]}},
        }  # fmt: skip

    # -- one step -------------------------------------------------------------------------------------
    def partition(self, k: int) -> np.ndarray:
        if k not in self._partition_cache:
            self._partition_cache[k] = np.asarray(self.tree.labels_at(k)).reshape(self.grid)
        return self._partition_cache[k]

    def sides(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(members, positive)`` of step ``i``: the sub-graph's flat pixel ids and the mask of this side
        (the Fiedler vector above the chosen threshold)."""
        s = self.tree.steps[i]
        members = as_np(s.members).astype(np.int64).ravel()
        fiedler = as_np(s.fiedler).astype(np.float64).ravel()
        thr = float(s.threshold) if s.threshold is not None else np.nan
        positive = as_np(getattr(s, "positive", None)).astype(bool).ravel()
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
                self.partition_colors(j)[int(self.partition(j).ravel()[int(as_np(s.members).ravel()[0])])]
                if as_np(s.members).size
                else "#808080"
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
            if not is_accepted(step) and members.size and positive.any() and not positive.all():
                split[members[positive]] = nxt
                nxt += 1
        self._rejected_split = relabel_raster(split)
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
            if is_accepted(self.tree.steps[i]):
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
        return {
            T_LEGEND_POS: {"x": [None], "y": [None], "marker": {"color": pos}},
            T_LEGEND_NEG: {"x": [None], "y": [None], "marker": {"color": neg}},
        }

    def step_props(self, i: int) -> dict[int, dict[str, Any]]:
        """Trace index -> properties for step ``i`` (0-based): every property a step needs, colour scales
        included (the static figure's frames are built from these)."""
        return {
            T_SPLIT: self.split_props(i),
            T_FIEDLER: self.fiedler_props(i),
            **self.curve_props(i),
            T_PARTITION: self.partition_props(i),
            T_ICICLE: self.icicle_props(i),
            T_HATCH: self.hatch_props(i),
            **self.legend_props(i),
        }

    def split_props(self, i: int) -> dict[str, Any]:
        """The sub-graph panel at step ``i``: 0 outside, 1 this side, 2 that side, 3 dropped (paper mode)."""
        s = self.tree.steps[i]
        members, positive = self.sides(i)
        split = np.zeros(self.n)
        if members.size:
            split[members] = np.where(positive, 1.0, 2.0)
        region = as_np(getattr(s, "region", None)).astype(np.int64).ravel()
        if region.size > members.size:  # paper mode: nodes dropped by the published rule
            dropped = np.setdiff1d(region, members, assume_unique=True)
            split[dropped] = 3.0
        pos, neg = self.side_colors(i)
        return {"z": split.reshape(self.grid).astype(np.int8), "colorscale": _split_colorscale(pos, neg),
                "zmin": -0.5, "zmax": 3.5}  # fmt: skip

    def fiedler_props(self, i: int) -> dict[str, Any]:
        """The Fiedler panel at step ``i``: the vector on the sub-graph's pixels, white at the threshold."""
        s = self.tree.steps[i]
        members, _ = self.sides(i)
        fiedler = as_np(s.fiedler).astype(np.float64).ravel()
        thr = float(s.threshold) if s.threshold is not None else np.nan
        fz = np.full(self.n, np.nan)
        if fiedler.size == members.size and members.size:
            fz[members] = fiedler
        zabs = float(np.nanmax(np.abs(fiedler - thr))) if fiedler.size and np.isfinite(thr) else 1.0
        zabs = zabs if zabs > 0 else 1.0
        pos, neg = self.side_colors(i)
        props: dict[str, Any] = {
            "z": _round(fz.reshape(self.grid)),
            "colorscale": _fiedler_colorscale(pos, neg),
        }
        if np.isfinite(thr):  # white is the chosen threshold, and the colour bar says so
            lo, hi = thr - zabs, thr + zabs
            props.update(
                zmin=lo, zmax=hi, zmid=None,
                colorbar={"tickvals": [lo, thr, hi], "ticktext": [f"{lo:.2g}", "threshold", f"{hi:.2g}"]},
            )  # fmt: skip
        else:
            props.update(zmin=None, zmax=None, zmid=None, colorbar={"tickvals": [], "ticktext": []})
        return props

    def curve_props(self, i: int) -> dict[int, dict[str, Any]]:
        """The NCut panel at step ``i``: the sweep, the chosen threshold, the tau line, the threshold line."""
        s = self.tree.steps[i]
        thr = float(s.threshold) if s.threshold is not None else np.nan
        thresholds = as_np(s.thresholds).astype(np.float64).ravel()
        ncuts = as_np(s.ncut_values).astype(np.float64).ravel()
        finite = np.isfinite(ncuts)
        ncut = float(s.ncut) if s.ncut is not None else np.nan
        tau = float(self.tree.tau)
        xr, (_, ytop) = self.curve_ranges(i)
        chosen = np.isfinite(thr) and np.isfinite(ncut)
        return {
            T_CURVE: {"x": _round(thresholds[finite]), "y": _round(ncuts[finite])},
            T_CHOSEN: {
                "x": [thr] if chosen else [],
                "y": [ncut] if chosen else [],
                "marker": {"color": ACCEPTED if is_accepted(s) else REJECTED},
            },
            T_TAU: {"x": xr, "y": [tau, tau], "text": ["", _tau_line_text(self.tree)]},
            T_THRESH: {"x": [thr, thr] if np.isfinite(thr) else [], "y": [0.0, ytop]},
        }

    def partition_props(self, i: int) -> dict[str, Any]:
        """The partition panel after step ``i``: each segment in its lineage colour."""
        part = self.partition(i + 1)
        k = int(part.max()) + 1 if part.size else 1
        return {"z": part, "zmin": -0.5, "zmax": k - 0.5,
                "colorscale": _partition_colorscale(self.partition_colors(i + 1))}  # fmt: skip

    def curve_ranges(self, i: int) -> tuple[list[float], list[float]]:
        """``(x range, y range)`` of the NCut panel at step ``i``: the step's whole sweep, the chosen
        threshold and the tau line, with room for their labels. Every frame carries its own."""
        s = self.tree.steps[i]
        thresholds = as_np(s.thresholds).astype(np.float64).ravel()
        ncuts = as_np(s.ncut_values).astype(np.float64).ravel()
        finite = (
            np.isfinite(ncuts) & np.isfinite(thresholds)
            if thresholds.size == ncuts.size
            else np.isfinite(ncuts)
        )
        xs = thresholds[finite] if thresholds.size == ncuts.size and finite.any() else thresholds
        thr = float(s.threshold) if s.threshold is not None else np.nan
        xs = np.concatenate([xs[np.isfinite(xs)], [thr] if np.isfinite(thr) else []])
        lo, hi = (float(xs.min()), float(xs.max())) if xs.size else (-1.0, 1.0)
        pad = 0.04 * (hi - lo) if hi > lo else max(abs(lo), 1e-6) * 0.1
        ytop = max(
            float(ncuts[np.isfinite(ncuts)].max()) if np.isfinite(ncuts).any() else 1.0, float(self.tree.tau)
        )
        return [lo - pad, hi + pad], [0.0, ytop * 1.12]

    def layout_props(self, i: int) -> dict[str, Any]:
        """The layout of step ``i``: the NCut panel's axis ranges (the titles go with the annotations)."""
        xr, yr = self.curve_ranges(i)
        return {f"{CURVE_X}.range": xr, f"{CURVE_Y}.range": yr}

    def titles(self, i: int) -> list[str]:
        s = self.tree.steps[i]
        acc = is_accepted(s)
        color = ACCEPTED if acc else REJECTED
        part = self.partition(i + 1)
        k = int(part.max()) + 1 if part.size else 1
        verdict = "accepted" if acc else "rejected"
        ncut = float(s.ncut) if s.ncut is not None else np.nan
        # the value is in the title, not beside the marker, where the curve or the threshold line crosses it
        if not np.isfinite(ncut):
            value = "NCut"
        elif auto_rule(self.tree) == "dynamic":
            value = f"NCut {ncut:.3f} · τ auto"
        else:
            value = f"NCut {ncut:.3f} {'<' if acc else '≥'} {tau_text(self.tree)}"
        return [
            f"sub-graph of step {i + 1}: {len(s.members)} px",
            "Fiedler vector (white: the threshold)",
            f"{value}: <span style='color:{color}'><b>{verdict}</b></span>",
            f"partition after step {i + 1}: {k} segment{'s' if k != 1 else ''}",
            f"tree of cuts: {len(self.tree.steps)} steps, {self.k_final} leaves (hatched)"
            + (" (click a node)" if self.interactive else ""),
        ]
