"""Compare captured layers and timesteps: PCA colours of the features, DiffCut segments, mIoU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..hook_points import forward_order, layer_stage, short_layer_name
from ._common import (
    as_labels,
    as_rgb,
    blend_labels,
    downscale,
    image_trace,
    pca_rgb,
    resize_labels,
    style_image_axes,
)

__all__ = ["SORT_KEYS", "layer_grid", "layer_scores"]

#: orders ``layer_grid`` and ``layer_scores`` accept for ``sort_by``
SORT_KEYS = ("stage", "miou", "segments", "resolution", "name")


def _select(cache: Any, layers: Sequence[str] | None, timesteps: Sequence[int] | None) -> tuple[list, list]:
    all_layers = list(cache.layers)
    chosen = list(layers) if layers is not None else all_layers
    missing = [name for name in chosen if name not in all_layers]
    if missing:
        from ..errors import UnknownLayerError

        raise UnknownLayerError(f"layers {missing} are not in this cache; it holds {all_layers}")
    ts = list(timesteps) if timesteps is not None else list(cache.timesteps)
    return chosen, ts


def _features(cache: Any, layer: str, t: int, index: int) -> np.ndarray | None:
    x = cache[layer, t]
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 4:  # attention probabilities (B, N, N) have no spatial layout of channels
        return None
    return x[index]


def _config(config: Any, settings: dict[str, Any]) -> Any:
    from ..config import DiffCutConfig

    return (config if config is not None else DiffCutConfig()).replace(**settings)


def _num_classes(gt: np.ndarray, ignore_index: int) -> int:
    valid = gt[(gt != ignore_index) & (gt >= 0)]
    return int(valid.max()) + 1 if valid.size else 1


def layer_scores(
    cache: Any,
    gt: Any = None,
    *,
    layers: Sequence[str] | None = None,
    timesteps: Sequence[int] | None = None,
    images: Sequence[int] | None = None,
    config: Any = None,
    ignore_index: int = 255,
    sort_by: str = "stage",
    keep_labels: bool = False,
    **settings: Any,
) -> pd.DataFrame:
    """DiffCut on every captured layer and timestep: one row per (layer, timestep, image).

    Parameters
    ----------
    cache
        A :class:`~diffcut_lab.FeatureCache` with ``(B, C, h, w)`` features.
    gt
        Optional ground truth: one ``(H, W)`` map per image of the batch (a ``(B, H, W)`` array or a list).
        Predictions are made at its size by the segmentation core (upsampling and refinement as
        ``config`` says, guided by ``cache.images``) and scored with :func:`diffcut_lab.hungarian_miou`
        (the published matching).
    layers, timesteps, images
        Subsets of the cache (default: everything; ``images`` are batch indices).
    config : DiffCutConfig, optional
        The settings (default ``DiffCutConfig()``); the layer and timestep come from the cache.
    **settings
        DiffCutConfig fields that override ``config`` (``alpha=5``, ``tau=0.3``, ``refine="none"``).
    ignore_index
        Ground-truth id left out of the score.
    sort_by
        One of :data:`SORT_KEYS`.
    keep_labels
        Keep the ``(h, w)`` labels in a ``labels`` column (used by :func:`layer_grid`).

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, short, stage, resolution, channels, timestep, image, n_segments, miou``.
    """
    from .. import segmentation as core
    from ..metrics import hungarian_miou

    cfg = _config(config, settings)
    chosen, ts = _select(cache, layers, timesteps)
    gts = None
    if gt is not None:
        gts = [as_labels(g) for g in (gt if isinstance(gt, (list, tuple)) or np.ndim(gt) == 3 else [gt])]
    rows = []
    for layer in chosen:
        for t in ts:
            x = cache[layer, t]
            batch = x.shape[0]
            idx = list(images) if images is not None else list(range(batch))
            for i in idx:
                f = _features(cache, layer, t, i)
                if f is None:
                    continue
                labels = core.grid_labels(core.cut_tree(f, cfg))
                miou = np.nan
                if gts is not None and i < len(gts):
                    g = gts[i]
                    x = None if cache.images is None else cache.images[i]
                    pred = core.pixel_labels(labels, f, g.shape, cfg, region=x, x=x)
                    miou = hungarian_miou(pred, g, num_classes=_num_classes(g, ignore_index),
                                          ignore_index=ignore_index).miou
                row = {
                    "layer": layer,
                    "short": short_layer_name(layer),
                    "stage": layer_stage(layer),
                    "resolution": f"{f.shape[1]}x{f.shape[2]}",
                    "channels": int(f.shape[0]),
                    "timestep": int(t),
                    "image": int(i),
                    "n_segments": int(labels.max()) + 1,
                    "miou": float(miou),
                }
                if keep_labels:
                    row["labels"] = labels
                    row["features"] = f
                rows.append(row)
    df = pd.DataFrame(rows)
    return _sort(df, sort_by)


def _sort(df: pd.DataFrame, sort_by: str) -> pd.DataFrame:
    if sort_by not in SORT_KEYS:
        from ..errors import ParameterError

        raise ParameterError(f"sort_by={sort_by!r}; expected one of {SORT_KEYS}")
    if df.empty:
        return df
    order = {name: i for i, name in enumerate(sorted(df["layer"].unique(), key=forward_order))}
    df = df.assign(_forward=df["layer"].map(order))
    if sort_by == "stage":
        keys, asc = ["_forward", "timestep", "image"], [True, True, True]
    elif sort_by == "miou":
        mean = df.groupby("layer")["miou"].transform("mean")
        df = df.assign(_key=mean)
        keys, asc = ["_key", "_forward", "timestep", "image"], [False, True, True, True]
    elif sort_by == "segments":
        df = df.assign(_key=df.groupby("layer")["n_segments"].transform("mean"))
        keys, asc = ["_key", "_forward", "timestep", "image"], [False, True, True, True]
    elif sort_by == "resolution":
        px = df["resolution"].str.split("x").map(lambda p: int(p[0]) * int(p[1]))
        df = df.assign(_key=px)
        keys, asc = ["_key", "_forward", "timestep", "image"], [True, True, True, True]
    else:
        keys, asc = ["layer", "timestep", "image"], [True, True, True]
    df = df.sort_values(keys, ascending=asc, kind="stable")
    return df.drop(columns=[c for c in ("_forward", "_key") if c in df.columns]).reset_index(drop=True)


def layer_grid(
    cache: Any,
    image: Any = None,
    gt: Any = None,
    *,
    image_index: int = 0,
    layers: Sequence[str] | None = None,
    timesteps: Sequence[int] | None = None,
    config: Any = None,
    sort_by: str = "stage",
    tile: int = 112,
    ignore_index: int = 255,
    **settings: Any,
) -> go.Figure:
    """Every captured layer (rows) and timestep (column pairs): PCA colours of the features next to the
    DiffCut segmentation, with the number of segments and, given ground truth, the mIoU.

    Parameters
    ----------
    cache
        A :class:`~diffcut_lab.FeatureCache` (``(B, C, h, w)`` features per layer and timestep).
    image
        The image of batch entry ``image_index``; by default ``cache.images[image_index]``.
    gt
        Optional ``(H, W)`` ground truth of that image.
    image_index
        Which image of the batch to show.
    layers, timesteps
        Subsets of the cache (default: all).
    config, **settings
        The settings, as for :func:`layer_scores`.
    sort_by
        Row order, one of :data:`SORT_KEYS`: ``"stage"`` (the UNet's forward order: down, mid, up),
        ``"miou"`` (best first, mean over timesteps), ``"segments"``, ``"resolution"``, ``"name"``.
    tile
        Side of one tile in pixels.
    ignore_index
        Ground-truth id left out of the score.

    Returns
    -------
    plotly.graph_objects.Figure
        A static figure; :func:`layer_scores` gives the same numbers as a table.
    """
    if image is None:
        imgs = getattr(cache, "images", None)
        if imgs is None:
            raise ValueError("pass image=: this cache holds no images")
        x = imgs[image_index]
        x = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        image = (np.clip(np.moveaxis(x, 0, -1), 0, 1) * 255).round().astype(np.uint8)
    rgb = downscale(as_rgb(image), tile)
    gts = None if gt is None else [None] * image_index + [as_labels(gt)]
    cfg = _config(config, settings)
    df = layer_scores(
        cache, gts, layers=layers, timesteps=timesteps, images=[image_index], config=cfg,
        ignore_index=ignore_index, sort_by=sort_by, keep_labels=True,
    )
    if df.empty:
        raise ValueError("no (B, C, h, w) feature maps to show in this cache")
    row_layers = list(dict.fromkeys(df["layer"]))
    ts = sorted(df["timestep"].unique().tolist())
    cols = 2 * len(ts)
    titles = []
    for r, layer in enumerate(row_layers):
        for t in ts:
            rec = df[(df["layer"] == layer) & (df["timestep"] == t)].iloc[0]
            score = "" if np.isnan(rec["miou"]) else f" · mIoU {rec['miou']:.2f}"
            titles.append(f"t={t} features" if r == 0 else "")
            titles.append(f"{rec['n_segments']} seg{score}")
    fig = make_subplots(
        rows=len(row_layers), cols=cols, subplot_titles=titles, horizontal_spacing=0.01,
        vertical_spacing=min(0.3 / max(len(row_layers), 1), 0.04),
    )
    H, W = rgb.shape[:2]
    for r, layer in enumerate(row_layers, start=1):
        for j, t in enumerate(ts):
            rec = df[(df["layer"] == layer) & (df["timestep"] == t)].iloc[0]
            pca = (pca_rgb(rec["features"]) * 255).round().astype(np.uint8)
            h, w = pca.shape[:2]
            rows_i = np.minimum((np.arange(H) * h) // H, h - 1)
            cols_i = np.minimum((np.arange(W) * w) // W, w - 1)
            fig.add_trace(image_trace(pca[rows_i[:, None], cols_i[None, :]], name=f"{layer} t={t} PCA"),
                          row=r, col=2 * j + 1)
            seg = blend_labels(rgb, resize_labels(rec["labels"], (H, W)), opacity=0.55)
            fig.add_trace(image_trace(seg, name=f"{layer} t={t} DiffCut"), row=r, col=2 * j + 2)
            style_image_axes(fig, r, 2 * j + 1)
            style_image_axes(fig, r, 2 * j + 2)
        rec = df[df["layer"] == layer].iloc[0]
        fig.update_yaxes(
            title_text=f"{rec['short']}<br>{rec['resolution']} · {rec['channels']} ch",
            title_font={"size": 10}, row=r, col=1,
        )
    fig.update_annotations(font_size=10)
    fig.update_layout(
        height=int(tile * 1.25 * len(row_layers) + 80),
        width=int(tile * 1.08 * cols + 170),
        margin={"l": 150, "r": 10, "t": 60, "b": 10},
        title=f"layers × timesteps (sorted by {sort_by}; α={cfg.alpha:g}, τ={cfg.tau:g}, {cfg.mode} mode)",
        showlegend=False,
    )
    return fig
