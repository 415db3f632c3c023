"""The step-through figure of a recursive normalized cut, and the tree of cuts alone.

Each recorded :class:`~diffcut_lab.CutStep` is shown as five panels:

* the sub-graph being cut, over the image (outside dimmed, the two proposed sides coloured),
* its Fiedler vector as a heatmap on the feature grid,
* NCut against the threshold of the sweep, with the chosen threshold and the ``tau`` line,
* the partition after this step (``CutTree.labels_at``),
* the tree of cuts as an icicle (x: pixels, y: depth; rejected cuts, the final segments, hatched).

:func:`cut_steps_figure` renders all of this into one plotly figure with a slider (works in exported
HTML, no kernel needed); the app :func:`~diffcut_lab.viz.stepper.cut_stepper` starts from the same figure
(:func:`base_figure`). What each step shows is computed in :mod:`diffcut_lab.viz._step_data`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..colors import pca_rgb
from ._common import as_rgb, downscale, grid_geometry, image_trace, style_image_axes
from ._step_data import (
    CURVE_X,
    CURVE_Y,
    DROPPED_RGBA,
    DYNAMIC,
    N_TRACES,
    OUTSIDE_SOLID,
    T_FIEDLER,
    T_LEGEND_POS,
    StepData,
    as_np,
    require_steps,
    tau_text,
)
from .icicle import hatch_trace, icicle_trace

__all__ = ["base_figure", "cut_steps_figure", "cut_tree_figure"]

#: pixels right of the NCut panel for the tau line's label (exported PNGs keep it whole)
_TAU_LABEL_ROOM = 90
#: how the static figure's slider and play button move between steps (no transition, drawn again)
_ANIMATE = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}


def background(image: Any, features: Any, grid: tuple[int, int], max_side: int) -> np.ndarray:
    """The picture under the maps: the image, else the PCA colours of the features, else a grey canvas."""
    if image is not None:
        return downscale(as_rgb(image), max_side)
    if features is not None:
        rgb = (pca_rgb(features) * 255).astype(np.uint8)
        return np.kron(rgb, np.ones((8, 8, 1), dtype=np.uint8))
    h, w = grid
    return np.full((h * 8, w * 8, 3), 200, np.uint8)


# ----------------------------------------------------------------------------------------------------
# the traces, in the order of the trace indices of _step_data
# ----------------------------------------------------------------------------------------------------
def _add_cut_maps(fig: go.Figure, data: StepData, bg: np.ndarray) -> None:
    """The image, the sub-graph over it, and the Fiedler vector (traces 0-2)."""
    geom = grid_geometry(bg.shape[:2], data.grid)
    h, w = data.grid
    fig.add_trace(image_trace(bg, name="image"), row=1, col=1)
    fig.add_trace(
        go.Heatmap(
            z=np.zeros((h, w)), zmin=-0.5, zmax=3.5, showscale=False, name="sub-graph", hoverinfo="skip", **geom,
        ),
        row=1,
        col=1,
    )  # fmt: skip
    # on the image's own coordinates, like every other map of the image: its aspect ratio, cells aligned
    colorbar = {"orientation": "h", "thickness": 8, "tickfont": {"size": 9}, "yanchor": "top", "xanchor": "center",
                "title": {"text": "Fiedler value", "side": "top", "font": {"size": 10}}}  # fmt: skip
    fig.add_trace(
        go.Heatmap(z=np.zeros((h, w)), name="Fiedler", colorbar=colorbar,
                   hovertemplate="Fiedler value %{z:.4f}<extra></extra>", **geom),
        row=1,
        col=2,
    )  # fmt: skip


def _add_curve(fig: go.Figure) -> None:
    """The NCut panel: the sweep, the chosen threshold, the tau line and the threshold line (traces 3-6)."""
    for trace in (
        go.Scatter(x=[], y=[], mode="lines", name="NCut(threshold)", line={"color": "#455a64", "width": 2},
                   hovertemplate="threshold %{x:.4f}<br>NCut %{y:.4f}<extra></extra>"),
        go.Scatter(x=[], y=[], mode="markers", name="chosen", marker={"size": 11, "symbol": "diamond"},
                   cliponaxis=False,
                   hovertemplate="chosen threshold %{x:.4f}<br>NCut %{y:.4f}<extra></extra>"),
        go.Scatter(x=[], y=[], mode="lines+text", name="τ", line={"color": "#6a1b9a", "dash": "dash", "width": 2},
                   textposition="middle right", textfont={"color": "#6a1b9a"}, hoverinfo="name",
                   cliponaxis=False),  # the label beside the panel, where no curve crosses it
        go.Scatter(x=[], y=[], mode="lines", name="threshold", line={"color": "#757575", "dash": "dot"},
                   hoverinfo="skip"),
    ):  # fmt: skip
        fig.add_trace(trace, row=1, col=3)


def _add_partition_and_tree(fig: go.Figure, data: StepData, bg: np.ndarray) -> None:
    """The image, the partition over it, and the nodes of the tree of cuts (traces 7-9)."""
    h, w = data.grid
    fig.add_trace(image_trace(bg, name="image"), row=2, col=1)
    fig.add_trace(
        go.Heatmap(z=np.zeros((h, w)), showscale=False, name="partition",
                   hovertemplate="segment %{z}<extra></extra>", **grid_geometry(bg.shape[:2], data.grid)),
        row=2,
        col=1,
    )  # fmt: skip
    fig.add_trace(
        icicle_trace(x=[], base=[], y=[], textposition="inside", insidetextanchor="middle",
                     textfont={"color": "white"}),
        row=2,
        col=2,
    )  # fmt: skip


def _add_legend(fig: go.Figure, data: StepData) -> None:
    """The legend of the step's colours, said once for the sub-graph, Fiedler and partition panels (traces
    10-13: this side, that side, outside, dropped); the other traces have no entry."""
    dropped = any(as_np(getattr(st, "region", None)).size > len(st.members) for st in data.tree.steps)
    for name, colour, shown in (
        ("this side: Fiedler > threshold", "#808080", True),
        ("that side: Fiedler ≤ threshold", "#808080", True),
        ("outside the sub-graph", OUTSIDE_SOLID, True),
        ("dropped by the paper rule", DROPPED_RGBA, dropped),
    ):
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", name=name, showlegend=shown, hoverinfo="skip",
                       marker={"symbol": "square", "size": 12, "color": colour,
                               "line": {"width": 1, "color": "#9e9e9e"}}),
            row=1,
            col=1,
        )  # fmt: skip
    for tr in fig.data[:T_LEGEND_POS]:
        if "showlegend" in tr:
            tr.showlegend = False


def _style_axes(fig: go.Figure, data: StepData, bg: np.ndarray) -> None:
    """Image panels with square pixels, the NCut and tree panels' axis titles and ranges."""
    for r, c in ((1, 1), (1, 2), (2, 1)):
        style_image_axes(fig, r, c)
    # the Fiedler panel shows the outside of the sub-graph (no value there) in the sub-graph panel's dark
    fig.add_shape(type="rect", x0=-0.5, x1=bg.shape[1] - 0.5, y0=-0.5, y1=bg.shape[0] - 0.5,
                  fillcolor=OUTSIDE_SOLID, line_width=0, layer="below", row=1, col=2)  # fmt: skip
    fig.update_xaxes(title_text="threshold on the Fiedler vector", row=1, col=3, title_font={"size": 11},
                     nticks=4)  # few ticks: they stay level in a narrow panel  # fmt: skip
    fig.update_yaxes(title_text="NCut", row=1, col=3, title_font={"size": 11})
    fig.update_xaxes(
        title_text="pixels", row=2, col=2, range=[0, data.n], showgrid=False, title_font={"size": 11}
    )
    fig.update_yaxes(title_text="depth", row=2, col=2, autorange="reversed", dtick=1,
                     range=[_max_depth(data) + 0.6, -0.6], title_font={"size": 11})  # fmt: skip


def _style_layout(fig: go.Figure, height: int, width: int | None) -> None:
    """Size, margins, the legend's place, and the Fiedler colour bar under its panel."""
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
    )  # fmt: skip
    fig.update_annotations(font_size=12)
    sub = fig.get_subplot(1, 2)
    fig.data[T_FIEDLER].colorbar.update(
        x=(sub.xaxis.domain[0] + sub.xaxis.domain[1]) / 2, len=0.8 * (sub.xaxis.domain[1] - sub.xaxis.domain[0]),
        y=sub.yaxis.domain[0] - 0.01,
    )  # fmt: skip
    curve = fig.get_subplot(1, 3)
    assert (curve.xaxis.plotly_name, curve.yaxis.plotly_name) == (CURVE_X, CURVE_Y)


def _max_depth(data: StepData) -> int:
    return max(data.layout.depth) if data.layout.depth else 0


def base_figure(data: StepData, bg: np.ndarray, *, widget: bool, height: int, width: int | None) -> go.Figure:
    """The five panels showing step 1 of ``data``'s tree over the picture ``bg``; a ``FigureWidget`` for
    the app (``widget``)."""
    fig = make_subplots(
        rows=2,
        cols=3,
        specs=[[{}, {}, {}], [{}, {"colspan": 2}, None]],
        subplot_titles=data.titles(0),
        horizontal_spacing=0.1,
        vertical_spacing=0.13,  # room for the Fiedler colour bar and its title
        row_heights=[0.55, 0.45],
    )
    _add_cut_maps(fig, data, bg)
    _add_curve(fig)
    _add_partition_and_tree(fig, data, bg)
    _add_legend(fig, data)
    fig.add_trace(hatch_trace(x=[], base=[], y=[]), row=2, col=2)
    assert len(fig.data) == N_TRACES
    _style_axes(fig, data, bg)
    _style_layout(fig, height, width)
    apply_step(fig, data, 0)
    # The widget starts from the finished first frame: a FigureWidget edited before the front-end draws
    # it loses properties (a batched restyle resets the unchanged ones to plotly's defaults there).
    return go.FigureWidget(fig) if widget else fig


def apply_step(fig: go.Figure, data: StepData, i: int) -> None:
    """Show step ``i`` (0-based) in a figure made by :func:`base_figure`."""
    for idx, props in data.step_props(i).items():
        fig.data[idx].update(props)
    for ann, text in zip(fig.layout.annotations, data.titles(i)):
        ann.text = text
    fig.layout.update(data.layout_props(i))


# ----------------------------------------------------------------------------------------------------
# the static figure
# ----------------------------------------------------------------------------------------------------
def _frames(fig: go.Figure, data: StepData, n: int) -> list[go.Frame]:
    """One frame per step (the first ``n``): the dynamic traces, the titles and the NCut panel's ranges."""
    frames = []
    for i in range(n):
        props = data.step_props(i)
        xr, yr = data.curve_ranges(i)
        frame_layout = {
            "annotations": [dict(a.to_plotly_json(), text=t) for a, t in zip(fig.layout.annotations, data.titles(i))],
            CURVE_X: {"range": xr},
            CURVE_Y: {"range": yr},
        }  # fmt: skip
        frames.append(
            go.Frame(
                name=str(i + 1),
                data=[type(fig.data[idx])(**props[idx]) for idx in DYNAMIC],
                traces=DYNAMIC,
                layout=frame_layout,
            )
        )
    return frames


def _slider_and_buttons(n: int) -> dict[str, Any]:
    """The layout of the step slider and the play/pause buttons under the panels."""
    play = dict(_ANIMATE, frame={"duration": 600, "redraw": True}, fromcurrent=True)
    return {
        "sliders": [
            {
                "active": 0,
                "currentvalue": {"prefix": "step "},
                "pad": {"t": 45},
                "len": 0.9,
                "x": 0.1,
                "steps": [
                    {"label": str(i + 1), "method": "animate", "args": [[str(i + 1)], _ANIMATE]}
                    for i in range(n)
                ],
            }
        ],
        "updatemenus": [
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 0,
                "yanchor": "top",
                "pad": {"t": 55},
                "showactive": False,
                "buttons": [
                    {"label": "▶", "method": "animate", "args": [None, play]},
                    {"label": "❚❚", "method": "animate", "args": [[None], _ANIMATE]},
                ],
            }
        ],
    }


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
    require_steps(tree)
    data = StepData(tree, interactive=False)
    fig = base_figure(data, background(image, features, data.grid, max_side), widget=False, height=height,
                      width=width)  # fmt: skip
    n = min(len(tree.steps), max_steps)
    fig.frames = _frames(fig, data, n)
    fig.update_layout(
        # the title on the first line (12 px from the top), the legend on its own line under it (42 px)
        title={"text": title or f"recursive NCut: {len(tree.steps)} steps, {data.k_final} segments "
                                 f"({tau_text(tree)})", "y": 1 - 12 / height, "yanchor": "top", "yref": "container"},
        margin={"t": 100, "b": 110},
        # the step's legend on a line of its own under the title (a narrow export keeps both whole)
        legend={"y": 1 - 42 / height, "x": 0.0, "xanchor": "left"},
        **_slider_and_buttons(n),
    )  # fmt: skip
    return fig


def cut_tree_figure(tree: Any, *, height: int = 320, title: str | None = None) -> go.Figure:
    """The tree of cuts alone, as an icicle: one bar per step (x: pixels covered, y: depth) in its region's
    colour by its place in the tree (the colours of the stepper's partition panel, a final segment's bar in
    the segment's colour); a rejected cut (the node is a final segment) is hatched."""
    data = StepData(tree)
    last = len(tree.steps) - 1
    props = data.icicle_props(last)
    props["marker"]["line"] = {"width": 0.5, "color": "white"}
    fig = go.Figure([icicle_trace(**props), hatch_trace(**data.hatch_props(last))])
    fig.update_layout(
        title=title or f"tree of cuts: {len(tree.steps)} steps, {data.k_final} segments ({tau_text(tree)})",
        height=height, barmode="overlay", plot_bgcolor="white", margin={"l": 10, "r": 10, "t": 50, "b": 40},
        xaxis={"title": "pixels", "range": [0, data.n], "showgrid": False},
        yaxis={"title": "depth", "range": [_max_depth(data) + 0.6, -0.6], "dtick": 1},
        showlegend=False,
    )  # fmt: skip
    return fig
