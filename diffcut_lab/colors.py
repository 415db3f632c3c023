"""The one label palette, the one blend of labels over an image and the PCA colours of features (no plotting library: the views
draw what these compute). The CLI's PNGs, the notebooks and the reports colour a label alike."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import FeatureError, ParameterError
from .label_maps import resize_labels

__all__ = ["PALETTE", "blend_labels", "label_colors", "label_hex", "lineage_hex", "pca_rgb"]

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
    return np.array(
        [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in label_hex(n)], dtype=np.uint8
    ).reshape(-1, 3)


def blend_labels(
    image: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.5,
    *,
    edges: bool = True,
    colors: Sequence[str] | None = None,
) -> np.ndarray:
    """Blend label colours over an ``(H, W, 3)`` uint8 image of the same size; segment borders drawn white
    when ``edges``. ``colors`` paints id ``k`` in ``colors[k]`` (``"#rrggbb"``, e.g. from
    :func:`lineage_hex`) instead of the palette. Returns ``(H, W, 3)`` uint8.

    The toolkit's one overlay as an array: the CLI's PNGs, ``Segmentation.overlay`` and the views
    (:func:`diffcut_lab.viz.overlay` draws it as a figure) paint labels with it. Labels of another size
    are nearest-resized first by the caller (:func:`diffcut_lab.label_maps.resize_labels`)."""
    labels = np.asarray(labels)
    image = np.asarray(image)
    if image.shape[:2] != labels.shape:
        raise ParameterError(f"image {image.shape[:2]} and labels {labels.shape} differ in size.")
    n = int(labels.max()) + 1 if labels.size else 1
    if colors is None:
        table = label_colors(n)
    elif len(colors) < n:
        raise ParameterError(
            f"colors has {len(colors)} entries for labels up to id {n - 1}; give one per id."
        )
    else:
        table = np.array(
            [[int(str(c)[i : i + 2], 16) for i in (1, 3, 5)] for c in colors[:n]], dtype=np.uint8
        )
    out = (1 - alpha) * image.astype(np.float64) + alpha * table[np.clip(labels, 0, None)]
    if edges:
        border = np.zeros(labels.shape, bool)
        border[:-1] |= labels[:-1] != labels[1:]
        border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        out[border] = 255
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _hue_hex(lo: float, hi: float, turn: int) -> str:
    """The colour of a hue interval: its middle hue, a little darker on every other sibling (``turn``)."""
    r, g, b = colorsys.hsv_to_rgb(((lo + hi) / 2) % 1.0, 0.7, 0.92 if turn % 2 == 0 else 0.72)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def lineage_hex(labelings: Sequence[Any]) -> list[list[str]]:
    """Colours for several labelings of one image that keep a region's colour from one to the next.

    Every segment owns an interval of hues and is drawn in the middle one. In the first labeling the
    segments share the hue circle; in each next one, every segment descends from the segment of the
    previous labeling it overlaps most, and the descendants of one segment share its interval. So a
    segment that persists (a tree pruned at several taus, the partition after each step of a recursion)
    keeps its colour exactly, the parts it splits into take nearby hues (the first cut's two sides lie
    half a circle apart, deeper cuts closer), and an unrelated segmentation of the same image is matched
    to it region by region.

    Parameters
    ----------
    labelings : sequence of array_like
        ``(h, w)`` integer ids ``>= 0`` (sizes may differ: each is compared with the previous one after a
        nearest resize), ordered as they should inherit (coarse to fine reads best).

    Returns
    -------
    list of list of str
        Per labeling, ``"#rrggbb"`` for every id ``0 .. max``, indexable by the label.

    Examples
    --------
    >>> import numpy as np
    >>> coarse = np.zeros((4, 4), int); coarse[:, 2:] = 1
    >>> fine = coarse.copy(); fine[3, 3] = 2
    >>> a, b = lineage_hex([coarse, fine])
    >>> a[0] == b[0] and b[1] != a[1] and len(set(b)) == 3
    True
    """
    out: list[list[str]] = []
    prev: np.ndarray | None = None
    spans: np.ndarray = np.array([[0.0, 1.0]])  # hue interval of each id of the previous labeling
    for raw in labelings:
        lab = np.asarray(raw)
        if lab.ndim != 2 or lab.dtype.kind not in "iu" or (lab.size and lab.min() < 0):
            raise ParameterError(f"each labeling must be an (h, w) array of integer ids >= 0; got shape "
                                 f"{lab.shape}, dtype {lab.dtype}.")  # fmt: skip
        n = int(lab.max()) + 1 if lab.size else 1
        if prev is None:
            parent = np.zeros(n, np.int64)
            sizes = np.bincount(lab.ravel(), minlength=n)
        else:
            up = prev if prev.shape == lab.shape else resize_labels(prev, lab.shape, exact=False)
            m = int(up.max()) + 1
            overlap = np.bincount((lab.astype(np.int64) * m + up).ravel(), minlength=n * m).reshape(n, m)
            parent, sizes = overlap.argmax(1), overlap.sum(1)
        new = np.zeros((n, 2))
        colors = ["#808080"] * n  # ids absent from this labeling
        for p in np.unique(parent[sizes > 0]):
            kids = np.flatnonzero((parent == p) & (sizes > 0))
            lo, hi = spans[p]
            if kids.shape[0] == 1 and prev is not None:  # the segment persists: its colour stays
                new[kids[0]], colors[kids[0]] = spans[p], out[-1][p]
                continue
            width = (hi - lo) / kids.shape[0]
            for j, k in enumerate(
                kids
            ):  # ids in order: raster order of their first pixel, for a tree's labels
                new[k] = lo + j * width, lo + (j + 1) * width
                colors[k] = _hue_hex(*new[k], j)
        out.append(colors)
        prev, spans = lab, new
    return out


def pca_rgb(features: Any, *, seed: int = 0) -> np.ndarray:
    """Colour a ``(C, h, w)`` feature map by its first three principal components.

    Parameters
    ----------
    features : array_like or torch.Tensor
        ``(C, h, w)`` features of one image.
    seed : int
        Seed of the randomized SVD.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` float in [0, 1]. Each component is scaled by its 1st and 99th percentiles and its
        sign is fixed (largest-magnitude score positive), so colours are reproducible.
    """
    from sklearn.utils.extmath import randomized_svd

    if hasattr(features, "detach"):
        features = features.detach().float().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 3:
        raise FeatureError(f"features must be (C, h, w), got shape {x.shape}; pass one image's map.")
    c, h, w = x.shape
    flat = x.reshape(c, h * w).T
    flat = flat - flat.mean(axis=0, keepdims=True)
    k = min(3, *flat.shape)
    u, s, _ = randomized_svd(flat, n_components=k, random_state=seed)
    comps = u * s
    # the SVD's sign is arbitrary: make each component's largest-magnitude score positive
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(k)])
    comps = comps * np.where(signs == 0, 1, signs)
    if k < 3:
        comps = np.concatenate([comps, np.zeros((comps.shape[0], 3 - k))], axis=1)
    lo = np.percentile(comps, 1, axis=0)
    hi = np.percentile(comps, 99, axis=0)
    rgb = np.clip((comps - lo) / np.where(hi - lo > 1e-12, hi - lo, 1.0), 0, 1)
    return rgb.reshape(h, w, 3)
