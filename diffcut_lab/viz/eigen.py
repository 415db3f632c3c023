"""Views of the spectrum behind the cuts: eigenvectors of the normalised Laplacian, eigengap, affinity rows
(the numbers come from :func:`diffcut_lab.spectrum.laplacian_spectrum`; this module only draws).

Every panel shows the graph the cut partitions: :func:`~diffcut_lab.segmentation.affinity_graph` of the
features for the given :class:`~diffcut_lab.config.DiffCutConfig` (``alpha``, ``knn``, the attention walk),
with the self-loop convention of its mode (fixed: none; paper: kept, as the paper cut builds it).

:func:`eigenvectors` draws the first ``k`` generalized eigenvectors ``y = D^{-1/2} v`` of that graph (the
vectors the normalized cut thresholds; ``y_1`` is the Fiedler vector of the first cut,
``cut_tree(features, config).steps[0].fiedler``) as heatmaps on the feature grid, the eigenvalue spectrum
with its largest gap marked (the eigengap rule of :func:`~diffcut_lab.stopping.auto_n_segments`), and the
edge weights of one pixel. :func:`eigenvector_explorer` is the same view as an app: click any heatmap to
pick the pixel; an alpha slider recomputes the graph when features are given.
"""

from __future__ import annotations

import html
import time
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import ParameterError
from ..spectrum import DEFAULT_EIGENPAIRS, Spectrum, laplacian_spectrum
from ._common import HIGHLIGHT, app_mimebundle, as_rgb, downscale, image_trace, style_image_axes

__all__ = ["EigenvectorExplorer", "eigenvector_explorer", "eigenvectors"]


def _layout(k: int) -> tuple[int, int]:
    cols = min(4, k)
    return (k + cols - 1) // cols, cols


#: the marker of the picked pixel, on the affinity row and on the image
_PICK_MARKER = {"symbol": "x", "size": 12, "color": HIGHLIGHT, "line": {"width": 2}}


def _panels(spec: Spectrum, k: int, with_image: bool) -> tuple[go.Figure, int, int]:
    """The empty grid: ``k`` eigenvector heatmaps in rows of ``cols``, then a row with the spectrum (two
    columns wide), the affinity row and the image. Returns ``(figure, rows of heatmaps, cols)``."""
    rows_ev, cols = _layout(k)
    cols = max(cols, 4 if with_image else 3)
    bottom: list[dict | None] = [{"colspan": 2}, None, {}] + ([{}] if with_image else [])
    bottom += [None] * (cols - len(bottom))
    specs = [[{} for _ in range(cols)] for _ in range(rows_ev)] + [bottom]
    titles = [f"y{j}  (λ{j} = {spec.values[j]:.4f})" for j in range(1, k + 1)]
    titles += [""] * (rows_ev * cols - k)
    titles += ["eigenvalue spectrum", "affinity row of the picked pixel"]
    if with_image:
        titles.append("picked pixel")
    fig = make_subplots(rows=rows_ev + 1, cols=cols, specs=specs, subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.08)  # fmt: skip
    return fig, rows_ev, cols


def _add_vectors(fig: go.Figure, spec: Spectrum, k: int, rows_ev: int, cols: int) -> None:
    """``y1 .. yk`` as heatmaps sharing one colour axis, its colour bar beside them."""
    h, w = spec.grid
    for n, j in enumerate(range(1, k + 1)):
        r, c = divmod(n, cols)
        y = spec.vectors[:, j].reshape(h, w)
        # each vector on its own robust scale, centred at 0 (the generalized eigenvectors have zero
        # D-weighted mean): a few extreme pixels saturate instead of washing out the rest
        lim = float(np.percentile(np.abs(y), 98)) or float(np.abs(y).max()) or 1.0
        fig.add_trace(
            go.Heatmap(z=np.round(np.clip(y / lim, -1, 1), 4), customdata=np.round(y, 6), coloraxis="coloraxis",
                       name=f"y{j}", hovertemplate=f"y{j}" + "[%{y}, %{x}] = %{customdata:.5f}<extra></extra>"),
            row=r + 1,
            col=c + 1,
        )  # fmt: skip
        style_image_axes(fig, r + 1, c + 1)
    top = fig.get_subplot(1, cols).yaxis.domain[1]
    low = fig.get_subplot(rows_ev, 1).yaxis.domain[0]
    fig.update_layout(coloraxis={
        "colorscale": "RdBu_r", "cmin": -1, "cmid": 0, "cmax": 1,
        "colorbar": {"title": {"text": "y / 98th pct |y|", "side": "right"}, "thickness": 10,
                     "y": (top + low) / 2, "len": top - low, "tickvals": [-1, 0, 1]},
    })  # fmt: skip


def _add_spectrum(fig: go.Figure, spec: Spectrum, k: int, row: int) -> None:
    """The eigenvalues (the drawn ones marked) and their largest gap."""
    vals = spec.values
    g = spec.largest_gap
    fig.add_trace(
        go.Scatter(x=np.arange(vals.size), y=vals, mode="lines+markers", name="eigenvalues",
                   line={"color": "#90a4ae"},
                   marker={"color": ["#1565c0" if 1 <= j <= k else "#90a4ae" for j in range(vals.size)]},
                   hovertemplate="λ%{x} = %{y:.4f}<extra></extra>"),
        row=row,
        col=1,
    )  # fmt: skip
    if vals.size >= 3:
        fig.add_trace(
            go.Scatter(x=[g, g + 1], y=[vals[g], vals[g + 1]], mode="lines+markers", name="largest gap",
                       line={"color": HIGHLIGHT, "width": 4}, marker={"size": 9, "color": HIGHLIGHT},
                       hovertemplate="largest gap %{y:.4f}<extra></extra>"),
            row=row,
            col=1,
        )  # fmt: skip
        fig.add_annotation(
            x=g + 0.5, y=(vals[g] + vals[g + 1]) / 2,
            text=f"largest gap after λ{g}: {g + 1} cluster{'s' if g else ''}",
            showarrow=True, arrowhead=2, ax=60, ay=-25, font={"size": 11}, row=row, col=1,
        )  # fmt: skip
    fig.update_xaxes(title_text="index", row=row, col=1, dtick=2)
    fig.update_yaxes(title_text="eigenvalue", row=row, col=1, rangemode="tozero")


def _add_affinity_row(fig: go.Figure, spec: Spectrum, pixel: tuple[int, int], row: int) -> None:
    """The picked pixel's edge weights as a heatmap, its colour bar under it, the pixel marked."""
    row_x, row_y = fig.get_subplot(row, 3).xaxis.domain, fig.get_subplot(row, 3).yaxis.domain
    fig.add_trace(
        go.Heatmap(z=_row(spec, pixel), colorscale="Viridis", zmin=0, zmax=_top(spec), name="affinity row",
                   colorbar={"orientation": "h", "thickness": 8, "title": {"text": "W[pixel, ·]", "side": "bottom"},
                             "x": (row_x[0] + row_x[1]) / 2, "xanchor": "center", "y": row_y[0] - 0.02,
                             "yanchor": "top", "len": 0.9 * (row_x[1] - row_x[0]), "tickfont": {"size": 9}},
                   hovertemplate="W[pixel, (%{y}, %{x})] = %{z:.4f}<extra></extra>"),
        row=row,
        col=3,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[pixel[1]], y=[pixel[0]], mode="markers", name="pixel", marker=_PICK_MARKER, hoverinfo="skip"
        ),
        row=row,
        col=3,
    )
    style_image_axes(fig, row, 3)


def _on_image(pixel: tuple[int, int], grid: tuple[int, int], shown: tuple[int, ...]) -> tuple[float, float]:
    """``(x, y)`` of the centre of grid cell ``pixel`` on the displayed image of shape ``shown``."""
    sy, sx = shown[0] / grid[0], shown[1] / grid[1]
    return (pixel[1] + 0.5) * sx - 0.5, (pixel[0] + 0.5) * sy - 0.5


def _add_image(
    fig: go.Figure, image: np.ndarray, pixel: tuple[int, int], grid: tuple[int, int], row: int
) -> None:
    """The image, the picked pixel marked on it."""
    small = downscale(image, 256)
    fig.add_trace(image_trace(small, name="image"), row=row, col=4)
    x, y = _on_image(pixel, grid, small.shape)
    fig.add_trace(
        go.Scatter(
            x=[x], y=[y], mode="markers", name="pixel on image", marker=_PICK_MARKER, hoverinfo="skip"
        ),
        row=row,
        col=4,
    )
    style_image_axes(fig, row, 4)


def _build(
    spec: Spectrum,
    k: int,
    pixel: tuple[int, int],
    image: np.ndarray | None,
    *,
    widget: bool,
    height: int | None,
) -> go.Figure:
    h, w = spec.grid
    k = int(min(k, spec.vectors.shape[1] - 1))  # y1..yk; y0 is constant up to D^-1/2: no partition in it
    fig, rows_ev, cols = _panels(spec, k, image is not None)
    _add_vectors(fig, spec, k, rows_ev, cols)
    _add_spectrum(fig, spec, k, rows_ev + 1)
    _add_affinity_row(fig, spec, pixel, rows_ev + 1)
    if image is not None:
        _add_image(fig, image, pixel, spec.grid, rows_ev + 1)
    fig.update_layout(
        height=height or 230 * (rows_ev + 1) + 60,
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 60, "b": 30},
        plot_bgcolor="white",
        title=f"eigenvectors y1-y{k} of the normalised Laplacian of the graph the cut partitions "
        f"({spec.graph or spec.mode + ' mode'}), {h}×{w} grid (y0 is constant: not drawn)",
    )
    fig.update_annotations(font_size=11)
    return go.FigureWidget(fig) if widget else fig


def _row(spec: Spectrum, pixel: tuple[int, int]) -> np.ndarray:
    """The picked pixel's edge weights in the cut's graph (its self-loop as the mode counts it)."""
    h, w = spec.grid
    r, c = int(pixel[0]), int(pixel[1])
    if not (0 <= r < h and 0 <= c < w):
        raise ParameterError(f"pixel {pixel} is outside the {h}x{w} grid")
    return np.round(spec.row(r * w + c).reshape(h, w), 5)


def _top(spec: Spectrum) -> float:
    """Upper end of the affinity row's colour scale: the graph's largest weight (fixed for every pixel)."""
    return float(spec.W.max()) or 1.0


def eigenvectors(
    W_or_features: Any,
    k: int = 8,
    grid: tuple[int, int] | None = None,
    *,
    config: Any = None,
    alpha: float | None = None,
    attention: Any = None,
    pixel: tuple[int, int] | None = None,
    image: Any = None,
    n_eigenvalues: int = DEFAULT_EIGENPAIRS,
    height: int | None = None,
) -> go.Figure:
    """First ``k`` eigenvectors of the normalised Laplacian of the graph the cut partitions as heatmaps,
    the spectrum and one pixel's edge weights.

    Parameters
    ----------
    W_or_features
        ``(C, h, w)`` features: the graph is :func:`~diffcut_lab.segmentation.affinity_graph` of them for
        ``config``, the one the cut of :func:`~diffcut_lab.segmentation.cut_tree` partitions. Or an
        ``(N, N)`` graph (then ``grid`` gives its ``(h, w)`` layout, a square grid is assumed otherwise).
        Self-loops follow ``config.mode`` (fixed: dropped, paper: kept).
    k
        Number of eigenvectors to draw: ``y1 .. yk`` (``y0`` is constant up to ``D^{-1/2}`` and carries no
        partition; ``y1`` is the first cut's Fiedler vector). Each is shown on its own robust scale
        (divided by its 98th percentile of ``|y|``), centred at 0; the hover gives the raw value.
    grid
        ``(h, w)`` of a graph's nodes.
    config
        The cut's :class:`~diffcut_lab.config.DiffCutConfig` (default ``DiffCutConfig()``).
    alpha
        Shortcut for ``config.replace(alpha=alpha)``.
    attention
        ``(N, N)`` self-attention probabilities of the layer (``config.affinity == "attention"``).
    pixel
        ``(row, col)`` whose edge weights are drawn; the grid's centre by default.
    image
        Optional image, to show where the pixel is.
    n_eigenvalues
        Number of eigenvalues in the spectrum plot (at least ``k + 1``; 21 by default, what the eigengap
        rule reads).
    height
        Figure height in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        A static figure; see :func:`eigenvector_explorer` to pick pixels by clicking.
    """
    spec = laplacian_spectrum(W_or_features, max(n_eigenvalues, k + 1), grid, config=config, alpha=alpha,
                              attention=attention)  # fmt: skip
    pixel = pixel if pixel is not None else (spec.grid[0] // 2, spec.grid[1] // 2)
    img = as_rgb(image) if image is not None else None
    return _build(spec, k, pixel, img, widget=False, height=height)


class EigenvectorExplorer:
    """Interactive :func:`eigenvectors`: click a heatmap to pick the pixel whose edge weights are shown;
    with features (and a cosine graph), an alpha slider recomputes the graph and the spectrum.

    ``eigenvector_explorer(...)`` is the same class under the function-style name. Parameters as in
    :func:`eigenvectors`, plus ``alpha_range`` (the slider's range). Attributes: ``figure``
    (FigureWidget), ``pixel``, ``alpha_slider`` (or ``None``), ``spectrum``, ``config``, ``widget``.
    """

    def __init__(
        self,
        W_or_features: Any,
        k: int = 8,
        grid: tuple[int, int] | None = None,
        *,
        config: Any = None,
        alpha: float | None = None,
        attention: Any = None,
        image: Any = None,
        n_eigenvalues: int = DEFAULT_EIGENPAIRS,
        alpha_range: tuple[float, float] = (1.0, 20.0),
        height: int | None = None,
    ) -> None:
        import ipywidgets as widgets

        from ..config import DiffCutConfig

        self._source = W_or_features
        self._grid = grid
        self._attention = attention
        self._k = k
        self._m = max(n_eigenvalues, k + 1)
        self._image = as_rgb(image) if image is not None else None
        self._height = height
        self.config = DiffCutConfig.build(config, **({} if alpha is None else {"alpha": alpha}))
        self.alpha = float(self.config.alpha)
        self.spectrum = laplacian_spectrum(
            W_or_features, self._m, grid, config=self.config, attention=attention
        )
        self.pixel = (self.spectrum.grid[0] // 2, self.spectrum.grid[1] // 2)
        self.figure = _build(self.spectrum, k, self.pixel, self._image, widget=True, height=height)
        self.info = widgets.HTML(self._info_text(0.0))
        self.alpha_slider = None
        if (
            len(np.shape(W_or_features)) != 2 and self.config.affinity != "attention"
        ):  # alpha shapes this graph
            self.alpha_slider = widgets.FloatSlider(
                value=self.alpha,
                min=alpha_range[0],
                max=alpha_range[1],
                step=0.5,
                description="α",
                continuous_update=False,
                readout_format=".1f",
            )
            self.alpha_slider.observe(lambda ch: self.set_alpha(ch["new"]), names="value")
        self._connect()
        top = [self.alpha_slider, self.info] if self.alpha_slider is not None else [self.info]
        self.widget = widgets.VBox([widgets.HBox(top), self.figure])

    def _info_text(self, seconds: float) -> str:
        s = self.spectrum
        return (
            f"<span style='color:#555'>{html.escape(s.graph)} · click a heatmap to pick a pixel · pixel "
            f"{self.pixel} · largest eigengap after λ{s.largest_gap} ({s.n_clusters} "
            f"cluster{'s' if s.n_clusters != 1 else ''})"
            + (f" · computed in {1000 * seconds:.0f} ms" if seconds else "")
            + "</span>"
        )

    def _connect(self) -> None:
        for tr in self.figure.data:
            if isinstance(tr, go.Heatmap):
                tr.on_click(self._on_click)

    def _on_click(self, trace: Any, points: Any, state: Any) -> None:
        xs, ys = list(getattr(points, "xs", []) or []), list(getattr(points, "ys", []) or [])
        if xs and ys:
            self.pick(round(float(ys[0])), round(float(xs[0])))

    def pick(self, row: int, col: int) -> None:
        """Show the affinity row of grid cell ``(row, col)``."""
        h, w = self.spectrum.grid
        self.pixel = (int(min(max(row, 0), h - 1)), int(min(max(col, 0), w - 1)))
        aff = next(t for t in self.figure.data if t.name == "affinity row")
        mark = next(t for t in self.figure.data if t.name == "pixel")
        with self.figure.batch_update():
            aff.z = _row(self.spectrum, self.pixel)
            mark.x, mark.y = [self.pixel[1]], [self.pixel[0]]
            if self._image is not None:
                on_img = next(t for t in self.figure.data if t.name == "pixel on image")
                x, y = _on_image(self.pixel, (h, w), downscale(self._image, 256).shape)
                on_img.x, on_img.y = [x], [y]
        self.info.value = self._info_text(0.0)

    def set_alpha(self, alpha: float) -> None:
        """Recompute the graph and its spectrum with exponent ``alpha`` (needs features)."""
        t0 = time.perf_counter()
        self.alpha = float(alpha)
        self.config = self.config.replace(alpha=self.alpha)
        self.spectrum = laplacian_spectrum(self._source, self._m, self._grid, config=self.config,
                                           attention=self._attention)  # fmt: skip
        new = _build(self.spectrum, self._k, self.pixel, self._image, widget=False, height=self._height)
        with self.figure.batch_update():
            for old_tr, new_tr in zip(self.figure.data, new.data):
                if not isinstance(new_tr, go.Image):
                    old_tr.update(new_tr.to_plotly_json())
            for a_old, a_new in zip(self.figure.layout.annotations, new.layout.annotations):
                a_old.update(a_new.to_plotly_json())
            self.figure.layout.title.text = new.layout.title.text  # names the graph, alpha included
        self.info.value = self._info_text(time.perf_counter() - t0)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return app_mimebundle(self.widget, [self.figure], **kwargs)


eigenvector_explorer = EigenvectorExplorer  # the function-style name the notebooks and docs use
