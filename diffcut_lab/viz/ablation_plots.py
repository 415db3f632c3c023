"""Plots of ablation results (plotly): the layer x timestep heatmap, tau/alpha sensitivity curves (the
paper's Figs. 5, 7 and 8) and method comparison bars.

Every function takes either the per-image rows of :func:`~diffcut_lab.ablation.run_ablation` or the
output of :func:`~diffcut_lab.ablation.summarize`, narrows it with ``select`` (column -> value or list of
values), and draws the scores :func:`~diffcut_lab.ablation.summary.cells` computes for the configuration
columns it does not plot: with ``tune_images`` and ``test_images`` (``reduce="tuned"``) the configuration
of each cell is chosen on some images and scored on others, the toolkit's one selection rule
(:func:`~diffcut_lab.ablation.summary.choose`, as the layer ranking and the methods table use it);
``reduce="max"`` applies the same rule to every image at once (the in-sample best: optimistic, and the
title says so when a cell holds more than one configuration); ``reduce="mean"`` averages them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..ablation.summary import cells
from ..errors import ParameterError
from ..hook_points import forward_order, short_layer_name

__all__ = ["method_bars", "miou_heatmap", "sensitivity"]


def _rows(df: pd.DataFrame, select: Mapping[str, Any] | None) -> pd.DataFrame:
    """The rows that ``select`` (column -> value or values) keeps."""
    for col, value in (select or {}).items():
        if col not in df.columns:
            raise ParameterError(f"select names column {col!r}; the table has {list(df.columns)}")
        values = value if isinstance(value, (list, tuple, set)) else [value]
        df = df[df[col].isin(values)]
    if df.empty:
        raise ParameterError("no rows left to plot (check select=)")
    return df


def _cells(df: pd.DataFrame, keys: Sequence[str], reduce: str | None, tune_images: Sequence[Any] | None,
           test_images: Sequence[Any] | None) -> tuple[pd.DataFrame, str]:  # fmt: skip
    """The library's scores of each cell and the words that say how they were chosen."""
    how = reduce or ("tuned" if tune_images is not None or test_images is not None else "max")
    s = cells(df, list(keys), reduce=how, select=None if tune_images is None else list(tune_images),
              test=None if test_images is None else list(test_images))  # fmt: skip
    several = bool((s["n_choices"] > 1).any())
    if how == "tuned":
        note = f"settings chosen on {len(tune_images)} images, scored on {len(test_images)} others"
    elif how == "mean":
        note = "mean over the other settings" if several else ""
    else:
        note = "best of the other settings on the same images (optimistic)" if several else ""
    return s, note


def _layers_sorted(values: Sequence[str]) -> list[str]:
    aliases = [v for v in values if "." not in v]
    names = sorted((v for v in values if "." in v), key=forward_order)
    return sorted(aliases) + names


def _hover(row: pd.Series, cols: Sequence[str]) -> str:
    parts = []
    for c in cols:
        if c in row and not (isinstance(row[c], float) and np.isnan(row[c])) and row[c] != "":
            parts.append(f"{c}={row[c]:g}" if isinstance(row[c], float) else f"{c}={row[c]}")
    return "<br>".join(parts)


#: how every mIoU axis is labelled: one definition (TP/FP/FN pooled over the dataset, published
#: Hungarian matching) and one unit (a fraction) across the toolkit
MIOU_TITLE = "mIoU (pooled over images, 0-1)"

_CONFIG = ("method", "alpha", "tau", "mode", "refine", "layer", "timestep")


def miou_heatmap(
    df: pd.DataFrame,
    *,
    x: str = "timestep",
    y: str = "layer",
    select: Mapping[str, Any] | None = None,
    reduce: str | None = None,
    title: str | None = None,
    tune_images: Sequence[Any] | None = None,
    test_images: Sequence[Any] | None = None,
) -> go.Figure:
    """Dataset-level mIoU over two configuration columns (default: layer x timestep).

    Cells show the dataset-pooled mIoU (0-1, the published metric) of
    :func:`~diffcut_lab.ablation.summary.cells`; the hover names each cell's chosen configuration.
    ``reduce``: ``"tuned"`` (the default when ``tune_images`` and ``test_images`` are given: chosen on
    those, scored on these), ``"max"`` (the default otherwise: the in-sample best) or ``"mean"``.
    """
    s, note = _cells(_rows(df, select), [y, x], reduce, tune_images, test_images)
    xs = sorted(s[x].unique().tolist())
    ys = _layers_sorted(s[y].unique().tolist()) if y == "layer" else sorted(s[y].unique().tolist())
    z = np.full((len(ys), len(xs)), np.nan)
    text = [["" for _ in xs] for _ in ys]
    for _, row in s.iterrows():
        i, j = ys.index(row[y]), xs.index(row[x])
        z[i, j] = row["miou"]
        text[i][j] = _hover(row, [c for c in _CONFIG if c not in (x, y)])
    ylabels = [short_layer_name(v) for v in ys] if y == "layer" else [str(v) for v in ys]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[str(v) for v in xs], y=ylabels, colorscale="Viridis", colorbar={"title": "mIoU"},
            text=text, texttemplate="%{z:.3f}", hovertemplate=f"{y}=%{{y}}<br>{x}=%{{x}}<br>mIoU=%{{z:.3f}}"
            "<br>%{text}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=title or f"{MIOU_TITLE} over {y} x {x}" + (f", {note}" if note else ""),
        xaxis={"title": x, "type": "category"},
        yaxis={"title": y, "autorange": "reversed", "type": "category"},
        template="plotly_white",
    )
    return fig


def sensitivity(
    df: pd.DataFrame,
    *,
    x: str = "tau",
    color: str = "alpha",
    select: Mapping[str, Any] | None = None,
    reduce: str | None = None,
    title: str | None = None,
    tune_images: Sequence[Any] | None = None,
    test_images: Sequence[Any] | None = None,
) -> go.Figure:
    """mIoU curves over one setting, one curve per value of another.

    Defaults give the paper's tau / alpha sensitivity (Figs. 5 and 8: a larger alpha widens the range of
    good tau); ``x="timestep"`` gives Fig. 7 (mIoU against the noising timestep). ``reduce``,
    ``tune_images`` and ``test_images`` as :func:`miou_heatmap`.
    """
    s = _rows(df, select)
    if x in ("tau", "alpha") or color in ("tau", "alpha"):
        s = s[s["method"] == "diffcut"] if "method" in s.columns else s
    s, note = _cells(s, [color, x], reduce, tune_images, test_images)
    fig = go.Figure()
    for value, g in s.groupby(color, sort=True, dropna=False):
        g = g.sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=g[x], y=g["miou"], mode="lines+markers", name=f"{color}={value:g}"
                if isinstance(value, float) else f"{color}={value}",
                text=[_hover(r, [c for c in _CONFIG if c not in (x, color)]) for _, r in g.iterrows()],
                hovertemplate=f"{x}=%{{x}}<br>mIoU=%{{y:.3f}}<br>%{{text}}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title or f"mIoU sensitivity to {x} per {color}" + (f" ({note})" if note else ""),
        xaxis_title=x,
        yaxis={"title": MIOU_TITLE, "rangemode": "tozero"},
        template="plotly_white",
        legend_title=color,
    )
    return fig


def method_bars(
    df: pd.DataFrame,
    *,
    by: str = "method",
    color: str | None = "refine",
    select: Mapping[str, Any] | None = None,
    reduce: str | None = None,
    title: str | None = None,
    tune_images: Sequence[Any] | None = None,
    test_images: Sequence[Any] | None = None,
) -> go.Figure:
    """mIoU per method, grouped bars per ``color`` (default: refinement); ``reduce``, ``tune_images`` and
    ``test_images`` as :func:`miou_heatmap`."""
    keys = [by] if color is None else [by, color]
    s, note = _cells(_rows(df, select), keys, reduce, tune_images, test_images)
    fig = go.Figure()
    groups = [(None, s)] if color is None else list(s.groupby(color, sort=True, dropna=False))
    for value, g in groups:
        fig.add_trace(
            go.Bar(
                x=g[by].astype(str), y=g["miou"], name="mIoU" if value is None else f"{color}={value}",
                text=[f"{m:.3f}" for m in g["miou"]], textposition="outside",
                hovertext=[_hover(r, [c for c in _CONFIG if c not in keys]) for _, r in g.iterrows()],
            )
        )  # fmt: skip
    fig.update_layout(
        barmode="group",
        title=title or f"mIoU per {by}" + (f" ({note})" if note else ""),
        xaxis_title=by,
        yaxis_title=MIOU_TITLE,
        template="plotly_white",
    )
    return fig
