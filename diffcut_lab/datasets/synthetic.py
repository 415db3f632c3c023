"""Procedural multi-object scenes with exact ground-truth masks.

Every scene is drawn from one integer seed: a textured background and a few objects (ellipses, rotated
rectangles, polygons, Fourier blobs, rings) that occlude one another. Each segment gets a texture
(stripes and checkers at angles, dots, band-limited noise, gradients, concentric rings, or flat) in a
two-colour palette, and the palettes and textures are deliberately *reused* across segments of the same
scene: two segments may share a mean colour and differ only in texture, or share a texture and differ
only in colour. Every texture is centred on its segment, so a segment's mean colour is exactly its
palette's base colour: colour statistics alone cannot separate same-palette segments. A smooth lighting
field and pixel noise are added on top.

The geometry lives in normalised coordinates, so the same seed gives the same layout at any size
(texture frequencies scale with the image; the reference scale is 128 pixels).

Seed ranges (disjoint, fixed): ``train`` uses seeds ``[0, 1_000_000)``, ``val`` ``[1_000_000,
1_100_000)`` and ``test`` ``[2_000_000, 2_100_000)``. The pocket model is trained on ``train`` seeds
only; layer and timestep choices are made on ``val``; quality is reported on ``test``.

Examples
--------
>>> from diffcut_lab.datasets.synthetic import make_scene
>>> scene = make_scene(2_000_000, size=128)
>>> scene.image.shape, scene.mask.shape, scene.mask.dtype
((128, 128, 3), (128, 128), dtype('int64'))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..validation import check_int

__all__ = [
    "SHAPES",
    "SPLITS",
    "TEXTURES",
    "Scene",
    "SceneConfig",
    "make_scene",
    "scene_batch",
    "split_seeds",
    "synthetic_scenes",
]

#: Disjoint seed ranges ``[start, stop)`` of the fixed splits.
SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "val": (1_000_000, 1_100_000),
    "test": (2_000_000, 2_100_000),
}

TEXTURES: tuple[str, ...] = ("stripes", "checker", "dots", "noise", "gradient", "rings", "flat")
SHAPES: tuple[str, ...] = ("ellipse", "rectangle", "polygon", "blob", "ring")

_REF_SIZE = 128.0  # texture periods are given in pixels at this reference size


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the scene generator (defaults give the pocket model's training distribution).

    Parameters
    ----------
    min_objects, max_objects : int
        Number of objects drawn over the background (before tiny or hidden ones are dropped).
    min_area : float
        Objects whose visible area is below this fraction of the image are removed.
    noise : tuple of float
        Range of the standard deviation of additive pixel noise (intensities in [0, 1]).
    lighting : float
        Largest relative change of brightness across the image from the lighting field.
    flat_prob : float
        Probability that a texture is flat (colour only).
    """

    min_objects: int = 2
    max_objects: int = 5
    min_area: float = 0.015
    noise: tuple[float, float] = (0.005, 0.035)
    lighting: float = 0.3
    flat_prob: float = 0.08

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for JSON and ablation grids)."""
        return {
            "min_objects": self.min_objects,
            "max_objects": self.max_objects,
            "min_area": self.min_area,
            "noise": list(self.noise),
            "lighting": self.lighting,
            "flat_prob": self.flat_prob,
        }


@dataclass(frozen=True)
class Scene:
    """One synthetic scene.

    Attributes
    ----------
    image : numpy.ndarray
        (H, W, 3) uint8 RGB image.
    mask : numpy.ndarray
        (H, W) int64 labels 0..K-1; 0 is the background, objects follow in drawing order.
    seed : int
        The seed that made it.
    textures, shapes, palettes : tuple
        Per segment: texture name, shape name ("background" for 0) and palette index; segments with the
        same palette index have the same mean colour.
    """

    image: np.ndarray
    mask: np.ndarray
    seed: int
    textures: tuple[str, ...] = field(default=())
    shapes: tuple[str, ...] = field(default=())
    palettes: tuple[int, ...] = field(default=())

    @property
    def n_segments(self) -> int:
        """Number of segments K (labels are 0..K-1)."""
        return int(self.mask.max()) + 1

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))


# ----------------------------------------------------------------------------------------------------
# geometry


def _shape_mask(kind: str, p: dict[str, Any], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean coverage of one shape on normalised coordinates (yy, xx in [0, 1))."""
    dy, dx = yy - p["cy"], xx - p["cx"]
    c, s = np.cos(p["rot"]), np.sin(p["rot"])
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated frame
    if kind == "ellipse":
        return (u / p["a"]) ** 2 + (v / p["b"]) ** 2 <= 1.0
    if kind == "rectangle":
        return (np.abs(u) <= p["a"]) & (np.abs(v) <= p["b"])
    if kind == "ring":
        r2 = (u / p["a"]) ** 2 + (v / p["b"]) ** 2
        return (r2 <= 1.0) & (r2 >= p["inner"] ** 2)
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if kind == "polygon":
        n = p["n"]
        # distance to the boundary of a regular n-gon of circumradius a, in polar form
        sector = np.mod(theta, 2 * np.pi / n) - np.pi / n
        return r * np.cos(sector) <= p["a"] * np.cos(np.pi / n)
    if kind == "blob":
        radius = np.full_like(theta, p["a"])
        for k, (amp, phase) in enumerate(zip(p["amps"], p["phases"]), start=2):
            radius = radius + p["a"] * amp * np.cos(k * theta + phase)
        return r <= radius
    raise ParameterError(f"unknown shape {kind!r}; expected one of {SHAPES}")


def _draw_shape(rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    kind = SHAPES[int(rng.choice(len(SHAPES), p=[0.24, 0.22, 0.2, 0.24, 0.1]))]
    a = float(rng.uniform(0.12, 0.32))
    p: dict[str, Any] = {
        "cy": float(rng.uniform(0.15, 0.85)),
        "cx": float(rng.uniform(0.15, 0.85)),
        "rot": float(rng.uniform(0, np.pi)),
        "a": a,
        "b": float(a * rng.uniform(0.5, 1.0)),
        "n": int(rng.integers(3, 7)),
        "inner": float(rng.uniform(0.4, 0.65)),
        "amps": rng.uniform(-0.18, 0.18, size=3).tolist(),
        "phases": rng.uniform(0, 2 * np.pi, size=3).tolist(),
    }
    if kind == "ring":
        p["a"] = p["b"] = max(a, 0.2)
    return kind, p


# ----------------------------------------------------------------------------------------------------
# textures


def _draw_texture(rng: np.random.Generator, flat_prob: float) -> dict[str, Any]:
    if rng.random() < flat_prob:
        kind = "flat"
    else:
        kind = TEXTURES[int(rng.integers(0, len(TEXTURES) - 1))]
    return {
        "kind": kind,
        "angle": float(rng.uniform(0, np.pi)),
        "period": float(rng.uniform(5.0, 15.0)),  # pixels at the reference size
        "duty": float(rng.uniform(0.35, 0.65)),
        "radius": float(rng.uniform(0.22, 0.38)),
        "cell": float(rng.uniform(1.5, 5.0)),
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
        "cy": float(rng.uniform(0.0, 1.0)),
        "cx": float(rng.uniform(0.0, 1.0)),
    }


def _textures_differ(t1: dict[str, Any], t2: dict[str, Any]) -> bool:
    """Whether two textures look different enough to tell apart (type, angle or scale)."""
    if t1["kind"] != t2["kind"]:
        return True
    if t1["kind"] == "flat":
        return False
    d_angle = abs(t1["angle"] - t2["angle"]) % np.pi
    d_angle = min(d_angle, np.pi - d_angle)
    ratio = max(t1["period"], t2["period"]) / min(t1["period"], t2["period"])
    if t1["kind"] == "noise":
        ratio = max(t1["cell"], t2["cell"]) / min(t1["cell"], t2["cell"])
        return ratio > 1.8
    if t1["kind"] == "rings":
        return ratio > 1.6
    return d_angle > np.pi / 6 or ratio > 1.6


def _value_noise(seed: int, cell_px: float, h: int, w: int) -> np.ndarray:
    """Band-limited noise in [0, 1]: uniform values on a grid of `cell_px` pixels, bilinear between."""
    rng = np.random.default_rng(seed)
    gh, gw = int(np.ceil(h / cell_px)) + 2, int(np.ceil(w / cell_px)) + 2
    grid = rng.random((gh, gw))
    fy = np.arange(h) / cell_px
    fx = np.arange(w) / cell_px
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return g00 * (1 - wy) * (1 - wx) + g01 * (1 - wy) * wx + g10 * wy * (1 - wx) + g11 * wy * wx


def _pattern(t: dict[str, Any], yy: np.ndarray, xx: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Texture pattern in [0, 1] over the whole grid (yy, xx normalised); `region` for gradients."""
    h, w = yy.shape
    scale = max(h, w) / _REF_SIZE  # pixels per reference pixel
    py, px = yy * max(h, w), xx * max(h, w)  # pixel units
    kind = t["kind"]
    period = t["period"] * scale
    c, s = np.cos(t["angle"]), np.sin(t["angle"])
    u, v = c * px + s * py, -s * px + c * py
    if kind == "flat":
        return np.zeros((h, w))
    if kind == "stripes":
        return (np.mod(u / period, 1.0) < t["duty"]).astype(float)
    if kind == "checker":
        half = period / 2
        return (np.mod(np.floor(u / half) + np.floor(v / half), 2) == 1).astype(float)
    if kind == "dots":
        du = np.mod(u / period, 1.0) - 0.5
        dv = np.mod(v / period, 1.0) - 0.5
        return (np.hypot(du, dv) <= t["radius"]).astype(float)
    if kind == "rings":
        r = np.hypot(py - t["cy"] * h, px - t["cx"] * w)
        return 0.5 + 0.5 * np.cos(2 * np.pi * r / period)
    if kind == "noise":
        n = _value_noise(t["noise_seed"], t["cell"] * scale, h, w)
        return np.clip((n - 0.5) * 2.2 + 0.5, 0.0, 1.0)
    if kind == "gradient":
        if not region.any():
            return np.zeros((h, w))
        lo, hi = u[region].min(), u[region].max()
        return (u - lo) / max(hi - lo, 1e-6)
    raise ParameterError(f"unknown texture {kind!r}; expected one of {TEXTURES}")


def _draw_palettes(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` palettes (base colour, contrast vector) with bases at least 0.22 apart in RGB."""
    palettes: list[tuple[np.ndarray, np.ndarray]] = []
    tries = 0
    while len(palettes) < n:
        base = rng.uniform(0.2, 0.8, size=3)
        tries += 1
        if tries < 200 and any(np.linalg.norm(base - b) < 0.22 for b, _ in palettes):
            continue
        if rng.random() < 0.5:  # light/dark modulation of the same hue
            direction = np.ones(3) / np.sqrt(3.0)
        else:  # modulation towards another hue
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
        contrast = direction * rng.uniform(0.25, 0.5)
        palettes.append((base, contrast))
    return palettes


# ----------------------------------------------------------------------------------------------------
# scene


def _grid(size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(size[0]), int(size[1]))
    if h < 8 or w < 8:
        raise ParameterError(f"scene size must be at least 8x8 pixels, got {h}x{w}; pass size=128 or larger")
    side = max(h, w)
    yy = (np.arange(h)[:, None] + 0.5) / side * np.ones((1, w))
    xx = (np.arange(w)[None, :] + 0.5) / side * np.ones((h, 1))
    # centre a non-square canvas on the square layout
    yy = yy + (1 - h / side) / 2
    xx = xx + (1 - w / side) / 2
    return yy, xx


def _layout(
    rng: np.random.Generator, cfg: SceneConfig, yy: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The label map ``(H, W)`` of a scene and each segment's shape name (``"background"`` first).

    Objects are painted in order, later ones occluding earlier ones; the smallest (almost) hidden object
    is dropped and the rest re-layered until every one covers ``cfg.min_area``.
    """
    h, w = yy.shape
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = [_draw_shape(rng) for _ in range(n_obj)]
    covers = [_shape_mask(kind, p, yy, xx) for kind, p in shapes]
    keep = list(range(n_obj))
    while True:  # drop the smallest (almost) hidden object, re-layer, until all are big enough
        label = np.zeros((h, w), dtype=np.int64)
        for j, i in enumerate(keep, start=1):
            label[covers[i]] = j
        areas = np.bincount(label.ravel(), minlength=len(keep) + 1)[1:] / label.size
        if not keep or areas.min() >= cfg.min_area:
            break
        del keep[int(np.argmin(areas))]
    k = len(keep) + 1
    shape_names: tuple[str, ...] = ("background", *(shapes[i][0] for i in keep))
    if k == 1 or (label == 0).mean() < cfg.min_area:
        # degenerate layout (every object dropped, or the background hidden): two halves instead
        label = (xx >= 0.5).astype(np.int64)
        k = 2
        shape_names = ("background", "half")
    return label, shape_names


def _appearance(
    rng: np.random.Generator, cfg: SceneConfig, k: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, list[dict[str, Any]]]:
    """``(palettes, pal_idx, textures)`` of ``k`` segments: palettes and textures reused across segments,
    (palette, texture) pairs unique."""
    n_pal = int(rng.integers(max(1, (k + 1) // 2), k)) if k > 2 else int(rng.integers(1, 3))
    palettes = _draw_palettes(rng, n_pal)
    pal_idx = np.concatenate([rng.permutation(n_pal), rng.integers(0, n_pal, size=max(0, k - n_pal))])[:k]
    pal_idx = rng.permutation(pal_idx)
    textures: list[dict[str, Any]] = []
    for seg in range(k):
        same_pal = [textures[o] for o in range(seg) if pal_idx[o] == pal_idx[seg]]
        reuse = [t for t in textures if all(_textures_differ(t, q) for q in same_pal)]
        if reuse and rng.random() < 0.4:  # same texture as another segment, different colour
            textures.append(reuse[int(rng.integers(0, len(reuse)))])
            continue
        for _ in range(50):
            t = _draw_texture(rng, cfg.flat_prob)
            if all(_textures_differ(t, q) for q in same_pal):
                break
        textures.append(t)
    return palettes, pal_idx, textures


def make_scene(seed: int, size: int | tuple[int, int] = 128, config: SceneConfig | None = None) -> Scene:
    """Draw one scene from a seed.

    Parameters
    ----------
    seed : int
        Any non-negative integer; see :data:`SPLITS` for the seed ranges of the fixed splits.
    size : int or (H, W)
        Output size in pixels (at least 8). The layout is the same at every size.
    config : SceneConfig, optional
        Generator settings; the default is the training distribution.

    Returns
    -------
    Scene
        ``image`` (H, W, 3) uint8 and ``mask`` (H, W) int64 with labels 0..K-1 (0 = background).
    """
    seed = check_int(seed, "seed", minimum=0)
    cfg = config or SceneConfig()
    if not 1 <= cfg.min_objects <= cfg.max_objects:
        raise ParameterError(
            f"need 1 <= min_objects <= max_objects, got {cfg.min_objects} and {cfg.max_objects}"
        )
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    h, w = yy.shape

    label, shape_names = _layout(rng, cfg, yy, xx)
    k = len(shape_names)
    palettes, pal_idx, textures = _appearance(rng, cfg, k)

    img = np.zeros((h, w, 3))
    for seg in range(k):
        region = label == seg
        if not region.any():
            continue
        pat = _pattern(textures[seg], yy, xx, region)
        pat = pat - pat[region].mean()  # the segment's mean colour is exactly the palette's base
        base, contrast = palettes[int(pal_idx[seg])]
        img[region] = base + pat[region, None] * contrast

    # lighting: a smooth multiplicative field (linear ramp + one broad bump), then pixel noise
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)) * rng.uniform(0, cfg.lighting)
    by, bx, bw = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.25, 0.6)
    bump = rng.uniform(-0.5, 0.5) * cfg.lighting * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * bw**2))
    img = img * (1.0 + ramp + bump)[..., None]
    noise_rng = np.random.default_rng([int(seed), h, w])  # noise depends on the size, layout does not
    img = img + noise_rng.normal(0, rng.uniform(*cfg.noise), size=img.shape)
    image = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return Scene(
        image=image,
        mask=label,
        seed=int(seed),
        textures=tuple(t["kind"] for t in textures),
        shapes=shape_names,
        palettes=tuple(int(p) for p in pal_idx),
    )


def split_seeds(split: str, n: int | None = None, start: int = 0) -> range:
    """The seeds of a split.

    Parameters
    ----------
    split : {"train", "val", "test"}
    n : int, optional
        How many (default: the whole range after `start`).
    start : int
        Offset inside the split's range.
    """
    if split not in SPLITS:
        raise ParameterError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    lo, hi = SPLITS[split]
    first = lo + int(start)
    stop = hi if n is None else first + int(n)
    if start < 0 or stop > hi or (n is not None and n < 0):
        raise ParameterError(f"split {split!r} holds {hi - lo} seeds; start={start}, n={n} fall outside it")
    return range(first, stop)


def synthetic_scenes(
    split: str = "test",
    n: int = 200,
    size: int | tuple[int, int] = 128,
    *,
    start: int = 0,
    config: SceneConfig | None = None,
) -> Iterator[Scene]:
    """Iterate over the scenes of a fixed split (seeds ``SPLITS[split][0] + start + i``).

    Parameters
    ----------
    split : {"train", "val", "test"}
    n : int
        Number of scenes.
    size : int or (H, W)
        Image size.
    start : int
        Offset into the split's seed range.
    config : SceneConfig, optional

    Yields
    ------
    Scene
    """
    for seed in split_seeds(split, n, start):
        yield make_scene(seed, size, config)


def scene_batch(
    seeds: Any, size: int | tuple[int, int] = 128, config: SceneConfig | None = None
) -> np.ndarray:
    """Images of several seeds as one (B, 3, H, W) float32 array in [0, 1] (for training loops)."""
    images = [make_scene(int(s), size, config).image for s in seeds]
    return np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
