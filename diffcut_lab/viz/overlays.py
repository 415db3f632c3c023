"""Segments painted over their image, with a legend and hover details."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..colors import blend_labels, label_hex, lineage_hex
from ..errors import ParameterError
from ._common import (
    as_labels,
    as_rgb,
    downscale,
    fit_labels,
    grid_geometry,
    image_trace,
    seen_colors,
    style_image_axes,
)

__all__ = ["compare_overlays", "overlay", "overlay_traces"]


def overlay_traces(
    image: Any,
    labels: Any,
    *,
    opacity: float = 0.5,
    max_side: int = 384,
    legend: bool = True,
    legendgroup: str | None = None,
    names: Mapping[int, str] | Sequence[str] | None = None,
    hover_side: int = 96,
    colors: Sequence[str] | None = None,
) -> list[go.BaseTraceType]:
    """Traces of one overlay: the blended picture, a transparent hover layer and legend entries.

    Parameters
    ----------
    image
        Anything :func:`diffcut_lab.load_image` accepts; ``(H, W, 3)`` uint8 is used as is.
    labels
        ``(h, w)`` integer segment ids (any resolution; nearest-resized onto the image).
    opacity
        Weight of the segment colours over the image.
    max_side
        The picture is shrunk to this longer side for display (figures stay small in reports).
    legend
        Add one legend entry per segment (colour, id, size in pixels and percent).
    legendgroup
        Legend group of the entries (to tell several overlays in one figure apart).
    names
        Optional segment names (id -> name), e.g. class names of a ground truth.
    hover_side
        The hover layer has at most this many cells a side (keeps HTML reports small).
    colors
        ``"#rrggbb"`` of each id (indexable by the label, e.g. one list of
        :func:`diffcut_lab.colors.lineage_hex`); default: the toolkit's palette. The legend swatches show
        the same colours as the picture.
    """
    rgb = as_rgb(image)
    lab = as_labels(labels)
    H, W = rgb.shape[:2]
    small = downscale(rgb, max_side)
    h_img, w_img = small.shape[:2]
    # hover on a coarse grid (at most hover_side cells a side): enough to point at a segment, and small
    hover_shape = (min(lab.shape[0], h_img, hover_side), min(lab.shape[1], w_img, hover_side))
    hover_lab = fit_labels(lab, hover_shape)
    ids, counts = np.unique(lab, return_counts=True)
    scale = (H * W) / lab.size  # size in input-image pixels
    sizes = dict(zip(ids.tolist(), (counts * scale).round().astype(int).tolist()))
    total = H * W

    name_of = _namer(names)
    lab_small = fit_labels(lab, (h_img, w_img))  # the labels on the displayed picture
    painted = blend_labels(small, lab_small, opacity, colors=colors)
    traces: list[go.BaseTraceType] = [image_trace(painted, name="overlay")]
    size_of = np.zeros(int(lab.max()) + 1 if lab.size else 1, dtype=np.int64)
    size_of[ids] = [sizes[k] for k in ids.tolist()]
    size_grid = size_of[hover_lab]
    custom = np.dstack([size_grid, np.round(100 * size_grid / total, 1)])
    hover: dict[str, Any] = {
        "hovertemplate": "segment %{z}<br>%{customdata[0]} px, %{customdata[1]}%<extra></extra>"
    }
    if names is not None:
        hover = {
            "text": np.vectorize(name_of, otypes=[object])(hover_lab),
            "hovertemplate": "%{text} (id %{z})<br>%{customdata[0]} px, %{customdata[1]}%<extra></extra>",
        }
    traces.append(
        go.Heatmap(z=hover_lab, customdata=custom, showscale=False, opacity=0.0,
                   colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]], name="segments", **hover,
                   **grid_geometry((h_img, w_img), hover_shape))
    )  # fmt: skip
    if legend:
        palette = list(colors) if colors is not None else label_hex(int(lab.max()) + 1 if lab.size else 1)
        seen = seen_colors(blend_labels(small, lab_small, opacity, edges=False, colors=colors), lab_small)
        for k in ids.tolist():
            label = f"{name_of(k)}: {sizes[k]:,} px ({100 * sizes[k] / total:.1f}%)"
            group_title = legendgroup if legendgroup and k == ids[0] else None
            traces.append(_swatch(label, seen.get(k, palette[k]), legendgroup, group_title))
    return traces


def _namer(names: Mapping[int, str] | Sequence[str] | None) -> Any:
    """The name of segment ``k``: from ``names`` (a mapping or a sequence), else ``segment k``."""

    def name_of(k: int) -> str:
        if names is None:
            return f"segment {k}"
        if isinstance(names, Mapping):
            return str(names.get(k, f"segment {k}"))
        return str(names[k]) if 0 <= k < len(names) else f"segment {k}"

    return name_of


def _swatch(name: str, colour: str, legendgroup: str | None, group_title: str | None) -> go.Scatter:
    """A legend entry: a square of ``colour`` (no point drawn)."""
    return go.Scatter(x=[None], y=[None], mode="markers", marker={"symbol": "square", "size": 12, "color": colour},
                      name=name, legendgroup=legendgroup, legendgrouptitle_text=group_title, showlegend=True,
                      hoverinfo="skip")  # fmt: skip


def overlay(
    image: Any,
    labels: Any,
    *,
    title: str | None = None,
    opacity: float = 0.5,
    max_side: int = 384,
    names: Mapping[int, str] | Sequence[str] | None = None,
    height: int = 420,
    colors: Sequence[str] | None = None,
) -> go.Figure:
    """Segments over the image, one legend entry per segment; hover shows segment id and size.

    Parameters
    ----------
    image
        Anything :func:`diffcut_lab.load_image` accepts (path, PIL image, array, tensor).
    labels
        ``(h, w)`` integer segment ids, e.g. ``Segmentation.labels`` or ``CutTree.labels`` (a coarser
        grid is nearest-resized onto the image).
    title
        Figure title; by default the number of segments.
    opacity
        Weight of the segment colours.
    max_side
        Longer side of the displayed picture in pixels.
    names
        Optional segment names (id -> name).
    height
        Figure height in pixels.
    colors
        ``"#rrggbb"`` of each id (e.g. from :func:`diffcut_lab.colors.lineage_hex`); default: the palette.

    Returns
    -------
    plotly.graph_objects.Figure
        A static figure (works in exported HTML without a kernel).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((64, 64, 3), np.uint8)
    >>> lab = np.zeros((8, 8), np.int64); lab[:, 4:] = 1
    >>> fig = overlay(img, lab)
    >>> len(fig.data)  # picture, hover layer, two legend entries
    4
    """
    lab = as_labels(labels)
    rgb = as_rgb(image)
    traces = overlay_traces(rgb, lab, opacity=opacity, max_side=max_side, names=names, colors=colors)
    fig = go.Figure(traces)
    n = len(np.unique(lab))
    # as wide as the picture plus its legend: the legend sits beside the image, not across the page
    aspect = rgb.shape[1] / rgb.shape[0]
    longest = max((len(t.name) for t in traces[2:]), default=10)
    width = int(10 + (height - 60) * aspect + 40 + 7 * longest + 40 + 10)
    fig.update_layout(
        title=title if title is not None else f"{n} segment{'s' if n != 1 else ''}",
        height=height,
        width=width,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"title": {"text": "segments"}, "itemclick": False, "itemdoubleclick": False},
        plot_bgcolor="white",
    )
    style_image_axes(fig)
    return fig


def compare_overlays(
    image: Any,
    labelings: Mapping[str, Any],
    *,
    title: str | None = None,
    opacity: float = 0.5,
    max_side: int = 320,
    height: int = 380,
    lineage: bool = True,
    legend: bool = False,
) -> go.Figure:
    """Several segmentations of the same image side by side (e.g. ``{"paper": ..., "fixed": ...}``).

    Parameters
    ----------
    image
        The image all labelings belong to.
    labelings
        Panel title -> ``(h, w)`` label map, in the order the panels are drawn (coarse to fine reads best).
    title
        Figure title.
    opacity, max_side, height
        As in :func:`overlay`.
    lineage
        Colour the segments by :func:`diffcut_lab.colors.lineage_hex` over the labelings in their order: a
        segment present in two panels keeps its colour (a tree pruned at several taus), its parts take
        nearby hues, and an unrelated segmentation is matched to the previous one region by region.
        ``False``: every panel in the palette's order of ids (needs no ids ``>= 0``).
    legend
        One legend entry per segment and panel (grouped by panel title), in the colours of the panels.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per labeling, titled with its name and number of segments.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((32, 48, 3), np.uint8)
    >>> coarse = np.zeros((4, 6), np.int64); coarse[:, 3:] = 1
    >>> fine = coarse.copy(); fine[2:, 3:] = 2
    >>> fig = compare_overlays(img, {"tau=0.3": coarse, "tau=0.6": fine}, legend=True)
    >>> left = [t.marker.color for t in fig.data if t.name.startswith("segment 0")]
    >>> left[0] == left[1]  # the left half persists: one colour in both panels
    True
    """
    if not labelings:
        raise ParameterError("compare_overlays needs at least one labeling")
    labs = {name: as_labels(lab) for name, lab in labelings.items()}
    colours: list[list[str] | None] = [None] * len(labs)
    if lineage:
        try:
            colours = list(lineage_hex(list(labs.values())))
        except ParameterError as err:
            raise ParameterError(f"{err} Pass lineage=False to colour such labels by the palette.") from None
    titles = []
    for name, lab in labs.items():
        n = len(np.unique(lab))
        titles.append(f"{name}: {n} segment{'s' if n != 1 else ''}")
    fig = make_subplots(rows=1, cols=len(labs), subplot_titles=titles, horizontal_spacing=0.02)
    for col, (name, lab) in enumerate(labs.items(), start=1):
        traces = overlay_traces(image, lab, opacity=opacity, max_side=max_side, legend=legend,
                                legendgroup=name if legend else None, colors=colours[col - 1])  # fmt: skip
        for tr in traces:
            fig.add_trace(tr, row=1, col=col)
        style_image_axes(fig, 1, col)
    fig.update_layout(
        title=title, height=height, margin={"l": 10, "r": 10, "t": 60, "b": 10}, showlegend=legend
    )
    if legend:
        fig.update_layout(legend={"itemclick": False, "itemdoubleclick": False, "groupclick": "toggleitem"})
    return fig
