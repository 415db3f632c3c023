"""Compare captured layers and timesteps: PCA colours of the features, DiffCut segments, mIoU (the numbers
come from :func:`diffcut_lab.layer_comparison.layer_scores`; this module only draws)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..colors import blend_labels, pca_rgb
from ..config import DiffCutConfig, check_tau
from ..errors import ParameterError
from ..hook_points import short_layer_name
from ..label_maps import resize_labels
from ..layer_comparison import layer_scores, sort_scores
from ..options import AUTO
from ._common import as_labels, as_rgb, downscale, fit_labels, image_trace, style_image_axes

__all__ = ["layer_grid", "layer_ranking_figure", "layer_similarity_figure", "method_comparison_figure"]


def layer_grid(
    source: Any,
    image: Any = None,
    gt: Any = None,
    *,
    image_index: int = 0,
    layers: Sequence[str] | None = None,
    timesteps: Sequence[int] | None = None,
    config: Any = None,
    num_classes: int | None = None,
    sort_by: str = "stage",
    tile: int = 140,
    ignore_index: int = 255,
    mark: str | None = None,
    **settings: Any,
) -> go.Figure:
    """Every captured layer (rows) and timestep (column pairs): PCA colours of the features next to the
    DiffCut segmentation, with the number of segments and, given ground truth, the mIoU.

    The grid draws :func:`~diffcut_lab.layer_comparison.layer_scores` rows; it computes no cut or score
    itself. Pass the rows (``keep_labels=True``) to draw what a table or a ranking already holds, or a
    cache to have them computed for this one image.

    Parameters
    ----------
    source : pandas.DataFrame or FeatureCache
        :func:`~diffcut_lab.layer_comparison.layer_scores` rows made with ``keep_labels=True`` (their
        ``attrs`` name the settings), or a :class:`~diffcut_lab.FeatureCache` (``(B, C, h, w)`` features
        per layer and timestep), whose rows are then computed with ``gt``, ``config`` and ``settings``.
    image
        The image of batch entry ``image_index``; by default ``cache.images[image_index]`` (needed with
        rows: they hold no image).
    gt
        Optional ``(H, W)`` ground truth of that image (a cache only: rows carry their scores).
    image_index
        Which image of the batch to show.
    layers, timesteps
        Subsets of the cache or of the rows (default: all).
    config, **settings
        The settings, as for :func:`~diffcut_lab.layer_comparison.layer_scores`. With rows, only ``tau``
        (which of their taus to show; ``"auto"`` for the automatic rule's rows) is accepted.
    num_classes : int, optional
        Number of ground-truth classes (needed with ``gt``).
    sort_by
        Row order, one of :data:`SORT_KEYS`: ``"stage"`` (the UNet's forward order: down, mid, up),
        ``"miou"`` (best first, mean over timesteps), ``"segments"``, ``"resolution"``, ``"name"``.
    tile
        Side of one tile in pixels.
    ignore_index
        Ground-truth id left out of the score.
    mark
        A layer whose row is marked "the paper's layer" (e.g. ``dl.resolve_layers(bb, "diffcut")[0]``).

    Returns
    -------
    plotly.graph_objects.Figure
        A static figure; the rows it draws are the table's.
    """
    if isinstance(source, pd.DataFrame):
        extra = sorted(set(settings) - {"tau"})
        if gt is not None or config is not None or num_classes is not None or extra:
            raise ParameterError(
                "layer_grid draws the rows it is given: their settings and scores are computed already "
                f"(got {', '.join([*(['gt'] if gt is not None else []), *(['config'] if config is not None else []), *(['num_classes'] if num_classes is not None else []), *extra])}). "
                "Pass them to dl.layer_scores(..., keep_labels=True), or pass the cache instead."
            )  # fmt: skip
        if image is None:
            raise ParameterError("pass image=: layer_scores rows hold no image (or pass the cache).")
        made = source.attrs.get("config")
        cfg = DiffCutConfig.from_dict(made) if made else None
        tau = _grid_tau(source, settings.get("tau"), None if cfg is None else cfg.tau)
        df = _grid_rows(source, image_index, tau, layers, timesteps, sort_by)
    else:
        if image is None:
            imgs = getattr(source, "images", None)
            if imgs is None:
                raise ParameterError("pass image=: this cache holds no images")
            x = imgs[image_index]
            x = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
            image = (np.clip(np.moveaxis(x, 0, -1), 0, 1) * 255).round().astype(np.uint8)
        gts = None if gt is None else [None] * image_index + [as_labels(gt)]
        cfg = DiffCutConfig.build(config, **settings)
        tau = check_tau(cfg.tau, auto=True)
        df = layer_scores(
            source, gts, layers=layers, timesteps=timesteps, images=[image_index], config=cfg,
            num_classes=num_classes, ignore_index=ignore_index, sort_by=sort_by, keep_labels=True,
        )  # fmt: skip
    if df.empty:
        raise ParameterError(
            "no (B, C, h, w) feature maps to show (check layers=, timesteps= and image_index=)"
        )
    return _draw_grid(df, downscale(as_rgb(image), tile), tau, cfg, sort_by, tile, mark)


def _tau_text(tau: Any) -> str:
    """A tau as a title writes it: ``0.5``, or ``auto`` for the automatic rule."""
    return AUTO if tau == AUTO else f"{float(tau):g}"


def _grid_tau(rows: pd.DataFrame, tau: Any, default: Any) -> float | str:
    """Which of the rows' taus the grid shows: ``tau`` (checked against the rows), else the settings' tau
    ``default`` where the rows hold it, else their only one."""
    held = sorted({"auto" if np.isnan(v) else float(v) for v in rows["tau"]}, key=str)
    if tau is None and default in held:
        return default
    if tau is None:
        if len(held) != 1:
            raise ParameterError(f"these rows hold taus {held}: pass tau= to pick the one to draw.")
        return held[0]
    tau = check_tau(tau, auto=True)
    if tau not in held:
        raise ParameterError(f"these rows hold no tau {_tau_text(tau)}; they hold {held}.")
    return tau


def _grid_rows(rows: pd.DataFrame, image_index: int, tau: Any, layers: Sequence[str] | None,
               timesteps: Sequence[int] | None, sort_by: str) -> pd.DataFrame:  # fmt: skip
    """The rows of one image at one tau (and the asked layers and timesteps), in ``sort_by`` order."""
    if "labels" not in rows.columns or "features" not in rows.columns:
        raise ParameterError("layer_grid draws labels and features: compute the rows with keep_labels=True.")
    at = rows["tau"].isna() if tau == AUTO else rows["tau"] == tau
    keep = at & (rows["image"] == image_index)
    if layers is not None:
        keep &= rows["layer"].isin(list(layers))
    if timesteps is not None:
        keep &= rows["timestep"].isin([int(t) for t in timesteps])
    return sort_scores(rows[keep], sort_by)


def _draw_grid(df: pd.DataFrame, rgb: np.ndarray, tau: Any, cfg: DiffCutConfig | None, sort_by: str,
               tile: int, mark: str | None = None) -> go.Figure:  # fmt: skip
    """The figure of :func:`layer_grid` from its rows (one per layer and timestep)."""
    row_layers = list(dict.fromkeys(df["layer"]))
    ts = sorted(df["timestep"].unique().tolist())
    cols = 2 * len(ts)
    cell = {(r["layer"], r["timestep"]): r for _, r in df.iterrows()}
    titles = []
    for r, layer in enumerate(row_layers):
        for t in ts:
            rec = cell.get((layer, t))
            score = "" if rec is None or np.isnan(rec["miou"]) else f" · mIoU {rec['miou']:.2f}"
            titles.append(f"t={t} features" if r == 0 else "")
            titles.append("" if rec is None else f"{rec['n_segments']} seg{score}")
    fig = make_subplots(
        rows=len(row_layers), cols=cols, subplot_titles=titles, horizontal_spacing=0.01,
        vertical_spacing=min(0.3 / max(len(row_layers), 1), 0.04),
    )  # fmt: skip
    H, W = rgb.shape[:2]
    for r, layer in enumerate(row_layers, start=1):
        for j, t in enumerate(ts):
            rec = cell.get((layer, t))
            if rec is None:
                continue
            pca = (pca_rgb(rec["features"]) * 255).round().astype(np.uint8)
            pca = np.moveaxis(resize_labels(np.moveaxis(pca, -1, 0), (H, W), exact=False), 0, -1).astype(
                np.uint8
            )
            fig.add_trace(image_trace(pca, name=f"{layer} t={t} PCA"), row=r, col=2 * j + 1)
            seg = blend_labels(rgb, fit_labels(np.asarray(rec["labels"]), (H, W)), 0.55)
            fig.add_trace(image_trace(seg, name=f"{layer} t={t} DiffCut"), row=r, col=2 * j + 2)
            style_image_axes(fig, r, 2 * j + 1)
            style_image_axes(fig, r, 2 * j + 2)
        rec = df[df["layer"] == layer].iloc[0]
        paper = "<b>★ the paper's layer</b><br>" if layer == mark else ""
        fig.update_yaxes(
            title_text=f"{paper}{rec['short']}<br>{rec['resolution']} · {rec['channels']} ch",
            title_font={"size": 12}, row=r, col=1,
        )  # fmt: skip
    fig.update_annotations(font_size=12)
    how = "" if cfg is None else f"α={cfg.alpha:g}, "
    mode = "" if cfg is None else f", {cfg.mode} mode"
    fig.update_layout(
        height=int(tile * 1.25 * len(row_layers) + 80),
        width=int(tile * 1.08 * cols + 190),
        margin={"l": 170, "r": 10, "t": 60, "b": 10},
        title=f"layers × timesteps (sorted by {sort_by}; {how}τ={_tau_text(tau)}{mode})",
        showlegend=False,
    )
    return fig


def layer_ranking_figure(ranking: Any, *, title: str | None = None, height: int | None = None) -> go.Figure:
    """Heatmap of :func:`~diffcut_lab.layer_comparison.layer_ranking`: layers (forward order) x timesteps
    (categories), each cell the test mIoU at the layer's own tau, written with that tau; the hover gives
    the mIoU's range over every tau tried and the mean segment count.
    """
    layers = list(dict.fromkeys(ranking["layer"]))
    ts = sorted(ranking["timestep"].unique().tolist())
    z = np.full((len(layers), len(ts)), np.nan)
    text = [["" for _ in ts] for _ in layers]
    hover = [["" for _ in ts] for _ in layers]
    for _, r in ranking.iterrows():
        i, j = layers.index(r["layer"]), ts.index(r["timestep"])
        z[i, j] = r["miou"]
        text[i][j] = f"{r['miou']:.2f}<br>τ {r['tau']:g}"
        hover[i][j] = (f"{r['layer']} ({r['resolution']})<br>t = {r['timestep']}, τ = {r['tau']:g}: mIoU "
                       f"{r['miou']:.3f}<br>over every τ: {r['miou_min']:.3f} to {r['miou_max']:.3f}<br>"
                       f"{r['n_segments']:.1f} segments per image")  # fmt: skip
    short = {r["layer"]: f"{r['short']} ({r['resolution']})" for _, r in ranking.iterrows()}
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"t={t}" for t in ts], y=[short[name] for name in layers], text=text,
            texttemplate="%{text}", textfont={"size": 13}, customdata=hover, hovertemplate="%{customdata}<extra></extra>",
            colorscale="Viridis", zmin=0, zmax=max(float(np.nanmax(z)), 0.01) if np.isfinite(z).any() else 1,
            colorbar={"title": {"text": "mIoU<br>(0-1)"}},
        )
    )  # fmt: skip
    fig.update_xaxes(type="category", title_text="noising timestep", tickfont={"size": 13})
    fig.update_yaxes(
        type="category", autorange="reversed", tickfont={"size": 13}, title_text="layer (forward order)"
    )
    fig.update_layout(
        title=title or "mIoU per layer and timestep, each at its own τ",
        height=height or int(90 + 56 * len(layers)),
        margin={"l": 10, "r": 10, "t": 60, "b": 50},
        template="plotly_white",
    )
    return fig


def method_comparison_figure(table: Any, *, title: str | None = None, height: int | None = None) -> go.Figure:
    """Bars of :func:`~diffcut_lab.layer_comparison.method_comparison`: per method, the test mIoU with tau
    chosen on other images and with the automatic stopping rule, each bar labelled with its tau and its
    mean segment count; the hover adds the cut's time per image."""
    fig = go.Figure()
    for stopping, colour in (("tau chosen", "#4c78a8"), ("auto", "#f58518")):
        rows = table[table["stopping"] == stopping]
        if rows.empty:
            continue
        tau = ["auto" if stopping == "auto" else f"τ {t:g}" for t in rows["tau"]]
        fig.add_trace(
            go.Bar(
                x=list(rows["method"]), y=list(rows["miou"]), name=stopping, marker_color=colour,
                text=[f"{m:.2f}<br>{t}, {k:.1f} seg." for m, t, k in zip(rows["miou"], tau, rows["n_segments"])],
                textposition="outside",
                customdata=[f"{t}: {k:.1f} segments per image, cut in {s:.2f} s" for t, k, s in
                            zip(tau, rows["n_segments"], rows.get("seconds", [float("nan")] * len(rows)))],
                hovertemplate="%{x}<br>mIoU %{y:.3f}<br>%{customdata}<extra>%{fullData.name}</extra>",
            )
        )  # fmt: skip
    top = float(table["miou"].max()) if len(table) else 1.0
    fig.update_layout(
        title=title or "mIoU (pooled over the test images, 0-1): tau chosen on other images vs automatic",
        barmode="group", height=height or 420, yaxis={"title": "mIoU (0-1)", "range": [0, min(1.0, top * 1.25 + 0.05)]},
        xaxis={"type": "category"}, legend={"title": {"text": "stopping"}}, template="plotly_white",
        margin={"l": 10, "r": 10, "t": 60, "b": 50},
    )  # fmt: skip
    return fig


def layer_similarity_figure(
    similarity: Any, *, title: str | None = None, height: int | None = None
) -> go.Figure:
    """Heatmap of :func:`~diffcut_lab.layer_comparison.layer_similarity` (linear CKA, 0-1), rows and columns
    ``layer@timestep`` with short layer names."""
    keys = list(similarity.index)

    def label(key: str) -> str:
        layer, t = key.rsplit("@", 1)
        return f"{short_layer_name(layer)} t={t}"

    labels = [label(k) for k in keys]
    z = np.asarray(similarity, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=np.round(z, 3), x=labels, y=labels, zmin=0, zmax=1, colorscale="Viridis",
            text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}" if len(keys) <= 16 else None,
            colorbar={"title": {"text": "linear<br>CKA"}},
            hovertemplate="%{y}<br>%{x}<br>CKA %{z:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(type="category", tickangle=-40)
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_layout(
        title=title or "how alike the layers' features are (linear CKA over the patches of every image)",
        height=height or int(160 + 34 * len(keys)),
        width=int(260 + 34 * len(keys)) if len(keys) > 8 else None,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        template="plotly_white",
    )
    return fig
