"""Shared helpers of the views: image conversion, axis styling, image traces, the app display bundle.

Only presentation lives here (turning arrays into plotly traces); every computation that produces
results (features, affinities, cuts, scores, the colours of :mod:`diffcut_lab.colors`) is called from
the library, and public names are imported from where they live (``diffcut_lab.colors``,
``diffcut_lab.label_maps``), not from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..errors import ParameterError
from ..label_maps import resize_labels
from ..validation import check_labels

__all__ = [
    "ACCEPTED",
    "HIGHLIGHT",
    "REJECTED",
    "app_mimebundle",
    "as_labels",
    "as_rgb",
    "downscale",
    "fit_labels",
    "grid_geometry",
    "image_trace",
    "png_data_uri",
    "seen_colors",
    "style_image_axes",
]

#: colours of the accepted / rejected cuts and of the highlighted region, used by every view
ACCEPTED = "#2e7d32"
REJECTED = "#c62828"
HIGHLIGHT = "#ffb300"


def as_rgb(image: Any) -> np.ndarray:
    """Convert anything :func:`diffcut_lab.load_image` accepts to an ``(H, W, 3)`` uint8 array."""
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image
    from ..images import load_image

    return np.asarray(load_image(image).convert("RGB"), dtype=np.uint8)


def as_labels(labels: Any, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``labels`` as an int64 ``(h, w)`` array (:func:`~diffcut_lab.validation.check_labels`; a flat
    ``(N,)`` array needs ``grid``)."""
    arr = check_labels(labels, ndim=(1, 2))
    if arr.ndim == 1:
        if grid is None:
            raise ParameterError("flat labels need grid=(h, w) to be shown as an image")
        arr = arr.reshape(grid)
    return arr


def fit_labels(labels: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``(h, w)`` labels nearest-resized to ``size = (H, W)`` for display (floor indexing,
    :func:`~diffcut_lab.label_maps.resize_labels` with ``exact=False``); unchanged when the size matches."""
    size = (int(size[0]), int(size[1]))
    return labels if labels.shape == size else resize_labels(labels, size, exact=False)


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink an ``(H, W, 3)`` uint8 image so its longer side is at most ``max_side`` (for display)."""
    H, W = image.shape[:2]
    if max(H, W) <= max_side:
        return image
    from PIL import Image

    s = max_side / max(H, W)
    size = (max(1, round(W * s)), max(1, round(H * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def seen_colors(painted: np.ndarray, labels: np.ndarray) -> dict[int, str]:
    """The colour the eye sees for each segment of a painted overlay: the mean painted colour of its
    pixels (``labels`` nearest-resized to the picture), as ``"#rrggbb"``. A legend swatch that shows it
    matches the picture, where the palette colour alone would not (it is blended with the image)."""
    lab = fit_labels(labels, painted.shape[:2])
    ids, inverse = np.unique(lab, return_inverse=True)
    sums = np.zeros((ids.size, 3))
    np.add.at(sums, inverse.ravel(), painted.reshape(-1, 3).astype(np.float64))
    means = sums / np.bincount(inverse.ravel())[:, None]
    return {int(k): "#{:02x}{:02x}{:02x}".format(*np.round(m).astype(int)) for k, m in zip(ids, means)}


def style_image_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    """Hide ticks and keep square pixels on an image subplot (y pointing down).

    Without ``row``/``col`` the figure's only axes are styled.
    """
    if row is None:
        xaxis, yaxis = fig.layout.xaxis, fig.layout.yaxis
        xname = "x"
    else:
        sub = fig.get_subplot(row, col)
        xaxis, yaxis = sub.xaxis, sub.yaxis
        xname = "x" + xaxis.plotly_name[len("xaxis") :]
    xaxis.update(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    yaxis.update(
        showticklabels=False,
        showgrid=False,
        zeroline=False,
        autorange="reversed",
        scaleanchor=xname,
        scaleratio=1,
        constrain="domain",
    )


def png_data_uri(image: np.ndarray) -> str:
    """Encode an ``(H, W, 3)`` uint8 image as a ``data:image/png;base64,...`` URI (compact in HTML)."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_trace(image: np.ndarray, *, name: str = "image") -> go.Image:
    """A ``go.Image`` (embedded as PNG) whose pixel centres sit at ``0..W-1``, ``0..H-1``."""
    return go.Image(source=png_data_uri(image), name=name, hoverinfo="skip")


def grid_geometry(image_shape: tuple[int, int], grid: tuple[int, int]) -> dict[str, float]:
    """``x0, dx, y0, dy`` that place an ``(h, w)`` heatmap exactly over an ``(H, W)`` image trace."""
    H, W = image_shape
    h, w = grid
    sy, sx = H / h, W / w
    return {"x0": sx / 2 - 0.5, "dx": sx, "y0": sy / 2 - 0.5, "dy": sy}


def app_mimebundle(app: Any, figures: Sequence[Any], **kwargs: Any) -> Any:
    """The display bundle of an ipywidgets ``app`` holding plotly ``FigureWidget``s.

    Each figure's whole state is sent to the front-end first (plotly does this when a figure itself is
    displayed; inside a container it is not): the front-end's copy of a figure drops properties that
    an update left unchanged on some traces, so a view drawn from it (the first one, or one displayed
    again later) would show plotly's defaults instead.
    """
    for fig in figures:
        fig._repr_mimebundle_()  # re-sends layout and data; the bundle itself is not needed
    return app._repr_mimebundle_(**kwargs)
