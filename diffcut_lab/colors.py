"""The one label palette and the one overlay of the toolkit (numpy only: computation modules never import
plotting libraries). The CLI's PNGs, the notebooks and the reports colour a label alike."""

from __future__ import annotations

import colorsys

import numpy as np

from .errors import ParameterError

__all__ = ["PALETTE", "label_colors", "label_hex", "overlay"]

#: the first 48 label colours: plotly's Dark24 then Light24 qualitative palettes
PALETTE = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B",
    "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1",
    "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038", "#FD3216", "#00FE35", "#6A76FC",
    "#FED4C4", "#FE00CE", "#0DF9FF", "#F6F926", "#FF9616", "#479B55", "#EEA6FB", "#DC587D", "#D626FF",
    "#6E899C", "#00B5F7", "#B68E00", "#C9FBE5", "#FF0092", "#22FFA7", "#E3EE9E", "#86CE00", "#BC7196",
    "#7E7DCD", "#FC6955", "#E48F72",
)  # fmt: skip


def label_hex(n: int) -> list[str]:
    """``n`` distinct colours as ``"#rrggbb"``, stable: :data:`PALETTE`, then hues spread by the golden
    ratio so that neighbouring ids stay distinguishable."""
    out = list(PALETTE[: max(n, 0)])
    golden = 0.618033988749895
    for i in range(len(out), n):
        r, g, b = colorsys.hsv_to_rgb((i * golden) % 1.0, 0.65, 0.9)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def label_colors(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours of ids ``0 .. n-1`` (:func:`label_hex`)."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in label_hex(n)], dtype=np.uint8).reshape(-1, 3)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, *, edges: bool = True) -> np.ndarray:
    """Blend label colours over an ``(H, W, 3)`` uint8 image of the same size; segment borders drawn white
    when ``edges``. Returns ``(H, W, 3)`` uint8."""
    labels = np.asarray(labels)
    image = np.asarray(image)
    if image.shape[:2] != labels.shape:
        raise ParameterError(f"image {image.shape[:2]} and labels {labels.shape} differ in size.")
    colours = label_colors(int(labels.max()) + 1 if labels.size else 1)[np.clip(labels, 0, None)]
    out = (1 - alpha) * image.astype(np.float64) + alpha * colours
    if edges:
        border = np.zeros(labels.shape, bool)
        border[:-1] |= labels[:-1] != labels[1:]
        border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        out[border] = 255
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
