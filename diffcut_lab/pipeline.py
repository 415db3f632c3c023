"""DiffCut end to end: image(s) -> UNet self-attention features -> recursive NCut -> sharp labels.

>>> import diffcut_lab as dl                                   # doctest: +SKIP
>>> seg = dl.DiffCut(dl.load_backbone("pocket"), tau=0.5).segment("photo.jpg")  # doctest: +SKIP
>>> seg.labels.shape == seg.image.shape[:2]                    # doctest: +SKIP
True

Steps of :meth:`DiffCut.segment` (DiffCut, Couairon et al., NeurIPS 2024):

1. every image is loaded as RGB (:func:`~diffcut_lab.images.load_image`: paths, PIL images of any mode,
   numpy arrays, tensors); with ``policy="center_crop"`` its largest centred square is kept (the paper's
   evaluation protocol), with ``policy="resize"`` (default) the whole image is kept and its aspect ratio
   is **not** preserved at the UNet input (it is squeezed to ``image_size``; the labels come back at the
   original size and aspect);
2. the batch is resized to the backbone's input size (``image_size``, default the backbone's native size)
   and one UNet forward at ``timestep`` captures ``layer`` (:func:`~diffcut_lab.hooks.capture`);
3. per image, :func:`~diffcut_lab.affinities.affinity` (``alpha``) and
   :func:`~diffcut_lab.ncut.recursive_ncut` (``tau``, ``mode``) partition the feature grid;
4. the grid labels are upsampled (``upsample="concept"`` -- concept assignment -- or ``"nearest"``) to the
   output size and refined (``refine="pamr"``: PAMR then a 3 x 3 median, the published evaluation;
   ``"median"``: the median only; ``"none"``).

Output size: ``mask_size`` if set (e.g. 128 for the paper's evaluation), else the size of the segmented
region of the input (the whole original image, or its centred square for ``center_crop``).
Upsampling and refinement run at that size, except that a longer side above ``refine_max_side`` is first
reduced to it (PAMR's memory grows with the pixel count) and the labels are then resized to the output
size by nearest neighbour.

Valid ``tau``: ``0 < tau <= 2``. A split is accepted when its normalized cut is strictly below ``tau``; the
NCut of a bipartition, ``cut/assoc(A) + cut/assoc(B)``, lies in ``[0, 2)`` (each term is below 1), so
``tau > 2`` would accept every split exactly like ``tau = 2`` does, and ``tau <= 0`` would accept none.
The published default is 0.5; values above 1 accept cuts that separate nothing meaningful (e.g. a
balanced split of noise has NCut near 1) and are rarely useful.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageInputError, ParameterError
from .options import MODES, POLICIES, REFINES, TAU_MAX, UPSAMPLES
from .refine import concept_assignment, median_filter, nearest_upsample, pamr

__all__ = ["DiffCut", "DiffCutConfig", "Segmentation", "label_colors", "overlay"]


def _size_or_none(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be None, an int or an (H, W) pair; got {value!r}.") from None
    if h < 1 or w < 1:
        raise ParameterError(f"{name} must be positive; got {(h, w)}.")
    return h, w


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class DiffCutConfig:
    """Settings of a DiffCut run (frozen; ``to_dict()`` for papermill, ablation grids and JSON).

    Parameters
    ----------
    layer : str
        Hook point whose output is the feature map: ``"diffcut"`` (the paper's layer for the loaded
        family) or any single name :func:`~diffcut_lab.hooks.resolve_layers` resolves to one layer.
    timestep : int
        Noising timestep, ``0 <= t < num_train_timesteps`` of the backbone's scheduler (checked at segment
        time; the paper uses 50).
    alpha : float
        Affinity exponent, ``> 0`` (paper: 10).
    tau : float
        NCut threshold, ``0 < tau <= 2`` (paper: 0.5; see the module docstring).
    mode : {"fixed", "paper"}
        Recursion variant of :func:`~diffcut_lab.ncut.recursive_ncut`.
    refine : {"pamr", "median", "none"}
        Label refinement after upsampling.
    upsample : {"concept", "nearest"}
        Grid-to-pixel upsampling.
    seed : int
        Seed of the noise added at ``timestep`` (shared across a batch).
    image_size : int or (H, W), optional
        UNet input size in pixels (default: the backbone's native size).
    policy : {"resize", "center_crop"}
        How an image becomes the UNet input (module docstring).
    mask_size : int or (H, W), optional
        Output label size (default: the input region's size).
    refine_max_side : int, optional
        Upsample and refine at most at this longer side (default 1024; None = no limit).
    pamr_iter : int
        PAMR iterations (paper eval: 10).
    pamr_dilations : tuple of int
        PAMR dilations (paper eval: 1, 2, 4, 8).
    median_size : int
        Median filter window.
    min_size : int
        Smallest segment the recursion may create (``recursive_ncut``; 1 = no limit).
    max_depth : int, optional
        Deepest recursion level (``recursive_ncut``; None = no limit).
    solver : str
        Eigen solver of ``recursive_ncut`` (``"auto"``).
    """

    layer: str = "diffcut"
    timestep: int = 50
    alpha: float = 10.0
    tau: float = 0.5
    mode: str = "fixed"
    refine: str = "pamr"
    upsample: str = "concept"
    seed: int = 42
    image_size: int | tuple[int, int] | None = None
    policy: str = "resize"
    mask_size: int | tuple[int, int] | None = None
    refine_max_side: int | None = 1024
    pamr_iter: int = 10
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8)
    median_size: int = 3
    min_size: int = 1
    max_depth: int | None = None
    solver: str = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.layer, str) or not self.layer:
            raise ParameterError(f"layer must be a non-empty layer name or alias; got {self.layer!r}.")
        if not _is_int(self.timestep) or self.timestep < 0:
            raise ParameterError(
                f"timestep must be a non-negative int (the paper uses 50); got {self.timestep!r}."
            )
        try:
            alpha, tau = float(self.alpha), float(self.tau)
        except (TypeError, ValueError):
            raise ParameterError(
                f"alpha and tau must be numbers; got {self.alpha!r}, {self.tau!r}."
            ) from None
        if not (np.isfinite(alpha) and alpha > 0):
            raise ParameterError(
                f"alpha must be a finite number > 0 (the paper uses 10); got {self.alpha!r}."
            )
        if not (np.isfinite(tau) and 0 < tau <= TAU_MAX):
            raise ParameterError(
                f"tau must satisfy 0 < tau <= {TAU_MAX:g} (normalized-cut values lie in [0, 2); the paper "
                f"uses 0.5, larger tau gives more segments); got {self.tau!r}."
            )
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("refine", self.refine, REFINES),
            ("upsample", self.upsample, UPSAMPLES),
            ("policy", self.policy, POLICIES),
        ):
            if value not in allowed:
                raise ParameterError(f"unknown {name} {value!r}; expected one of {allowed}.")
        if not _is_int(self.seed):
            raise ParameterError(f"seed must be an int; got {self.seed!r}.")
        image_size = _size_or_none(self.image_size, "image_size")
        mask_size = _size_or_none(self.mask_size, "mask_size")
        if self.refine_max_side is not None and (
            not _is_int(self.refine_max_side) or self.refine_max_side < 1
        ):
            raise ParameterError(
                f"refine_max_side must be None or a positive int; got {self.refine_max_side!r}."
            )
        if not _is_int(self.pamr_iter) or self.pamr_iter < 0:
            raise ParameterError(f"pamr_iter must be a non-negative int; got {self.pamr_iter!r}.")
        dil = tuple(self.pamr_dilations) if isinstance(self.pamr_dilations, (list, tuple)) else None
        if not dil or any(not _is_int(d) or d < 1 for d in dil):
            raise ParameterError(
                f"pamr_dilations must be a non-empty tuple of positive ints; got {self.pamr_dilations!r}."
            )
        if not _is_int(self.median_size) or self.median_size < 1:
            raise ParameterError(f"median_size must be a positive int; got {self.median_size!r}.")
        if not _is_int(self.min_size) or self.min_size < 1:
            raise ParameterError(f"min_size must be a positive int; got {self.min_size!r}.")
        if self.max_depth is not None and (not _is_int(self.max_depth) or self.max_depth < 0):
            raise ParameterError(f"max_depth must be None or a non-negative int; got {self.max_depth!r}.")
        set_(self, "timestep", int(self.timestep))
        set_(self, "alpha", alpha)
        set_(self, "tau", tau)
        set_(self, "seed", int(self.seed))
        set_(self, "image_size", image_size)
        set_(self, "mask_size", mask_size)
        set_(self, "pamr_dilations", tuple(int(d) for d in dil))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (tuples as lists), suitable for JSON, YAML and papermill parameters."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self, **changes: Any) -> DiffCutConfig:
        """A copy with some fields changed (validated again)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ParameterError(f"unknown DiffCut setting(s) {unknown}; valid settings: {sorted(names)}.")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffCutConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ParameterError)."""
        return cls().replace(**dict(d))


# ----------------------------------------------------------------------------------------------------
# colours (numpy only: computation modules never import plotting libraries)


def label_colors(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours for ids ``0 .. n-1``: the PASCAL VOC bit-interleaved palette without black."""
    ids = np.arange(1, n + 1)
    rgb = np.zeros((n, 3), np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            rgb[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return rgb.astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, *, edges: bool = True) -> np.ndarray:
    """Blend label colours over an ``(H, W, 3)`` uint8 image; segment borders drawn white when ``edges``."""
    labels = np.asarray(labels)
    image = np.asarray(image)
    if image.shape[:2] != labels.shape:
        raise ParameterError(f"image {image.shape[:2]} and labels {labels.shape} differ in size.")
    colours = label_colors(int(labels.max()) + 1 if labels.size else 1)[labels]
    out = (1 - alpha) * image.astype(np.float64) + alpha * colours
    if edges:
        border = np.zeros(labels.shape, bool)
        border[:-1] |= labels[:-1] != labels[1:]
        border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        out[border] = 255
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# result


@dataclass(frozen=True, eq=False)
class Segmentation:
    """One segmented image.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(H, W)`` int64 segment ids ``0 .. K-1`` at the output size. After upsampling and refinement
        they are renumbered compactly, so they follow the tree's leaf order but a leaf that lost every
        pixel frees its id.
    tree : CutTree
        The recursive cut on the feature grid (``tree.labels`` is the ``(h, w)`` partition).
    features : torch.Tensor
        ``(C, h, w)`` float32 features that were cut (CPU).
    image : numpy.ndarray or None
        ``(H, W, 3)`` uint8 image aligned with ``labels`` (None when segmenting features alone).
    config : DiffCutConfig
        The settings used.
    timings : dict
        Seconds spent per stage (``"features"`` is the batch's share, ``"ncut"``, ``"upsample"``,
        ``"refine"``).
    """

    labels: np.ndarray
    tree: Any
    features: torch.Tensor
    image: np.ndarray | None
    config: DiffCutConfig
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        """Number of segments in ``labels``."""
        return int(np.unique(self.labels).size)

    @property
    def coarse_labels(self) -> np.ndarray:
        """``(h, w)`` labels of the cut on the feature grid."""
        return np.asarray(self.tree.labels)

    def colorize(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 colour image of the labels."""
        return label_colors(int(self.labels.max()) + 1)[self.labels]

    def overlay(self, alpha: float = 0.5, *, edges: bool = True) -> np.ndarray:
        """``(H, W, 3)`` uint8 label colours blended over the image (the colours alone without an image)."""
        if self.image is None:
            return self.colorize()
        return overlay(self.image, self.labels, alpha, edges=edges)

    def __repr__(self) -> str:
        h, w = self.labels.shape
        return (
            f"Segmentation({h}x{w}, {self.n_segments} segments, grid {tuple(self.features.shape[1:])}, "
            f"tau={self.config.tau}, refine={self.config.refine!r})"
        )


# ----------------------------------------------------------------------------------------------------
# pipeline


def _work_size(out_size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    h, w = out_size
    if max_side is None or max(h, w) <= max_side:
        return out_size
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize_image(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float -> (3, h, w), bilinear with antialiasing (identity at the same size)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _is_batch(images: Any) -> bool:
    if isinstance(images, (list, tuple)):
        return True
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return True
    return isinstance(images, np.ndarray) and images.ndim == 4


def _image_items(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        items = list(images)
    elif _is_batch(images):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise ImageInputError("no images given: pass one image or a non-empty list of images.")
    return items


def _image_tensor(image: Any) -> torch.Tensor:
    """Anything load_image reads, or a (3, H, W) float tensor in [0, 1] -> (3, H, W) float32 CPU."""
    from .images import to_batch

    if (
        isinstance(image, torch.Tensor)
        and image.ndim == 3
        and image.shape[0] == 3
        and image.is_floating_point()
    ):
        return to_batch(image[None])[0]
    return to_batch(image)[0]


class DiffCut:
    """Zero-shot segmentation with a diffusion UNet's self-attention features and a recursive NCut.

    Parameters
    ----------
    backbone : Backbone or None
        From :func:`~diffcut_lab.backbones.load_backbone` (or ``testing.tiny_backbone``). ``None`` gives
        an object that only segments already captured features (:meth:`segment_features`).
    config : DiffCutConfig, optional
        Base settings; keyword arguments override its fields.
    **fields
        Any :class:`DiffCutConfig` field (``layer``, ``timestep``, ``alpha``, ``tau``, ``mode``,
        ``refine``, ``upsample``, ``seed``, ``image_size``, ``policy``, ``mask_size``, ...).

    Examples
    --------
    >>> from diffcut_lab.testing import tiny_backbone            # doctest: +SKIP
    >>> seg = DiffCut(tiny_backbone("pixel"), tau=0.5).segment(np.zeros((48, 40, 3), np.uint8))  # doctest: +SKIP
    >>> seg.labels.shape                                         # doctest: +SKIP
    (48, 40)
    """

    def __init__(self, backbone: Any, config: DiffCutConfig | None = None, **fields: Any) -> None:
        base = config if config is not None else DiffCutConfig()
        if not isinstance(base, DiffCutConfig):
            raise ParameterError(f"config must be a DiffCutConfig; got {type(base).__name__}.")
        self.backbone = backbone
        self.config = base.replace(**fields) if fields else base

    def __repr__(self) -> str:
        return f"DiffCut({getattr(self.backbone, 'name', self.backbone)!r}, {self.config})"

    # -- pieces --------------------------------------------------------------------------------------

    def input_size(self) -> tuple[int, int]:
        """UNet input size ``(H, W)`` in pixels (validated against the backbone)."""
        bb = self._require_backbone()
        size = self.config.image_size or (bb.image_size, bb.image_size)
        check = getattr(bb, "check_image_size", None)
        return tuple(check(size)) if check is not None else tuple(size)

    def layer_name(self) -> str:
        """The one hook-point name ``config.layer`` resolves to on this backbone."""
        from .hooks import resolve_layers

        names = resolve_layers(self._require_backbone(), self.config.layer)
        if len(names) != 1:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise ParameterError(
                f"layer {self.config.layer!r} matches {len(names)} hook points ({shown}); DiffCut cuts one "
                "feature map: pass a single layer name (see `diffcut-lab layers`)."
            )
        if names[0].endswith(".probs"):
            raise ParameterError(
                f"layer {names[0]!r} holds attention probabilities, not features; pass the attn1 module "
                "itself (drop '.probs')."
            )
        return names[0]

    def _require_backbone(self) -> Any:
        if self.backbone is None:
            raise ParameterError(
                "this DiffCut has no backbone (DiffCut(None, ...)); it can only segment_features(...). "
                "Pass a backbone from load_backbone(...) to segment images."
            )
        return self.backbone

    def check(self) -> str:
        """Validate the settings against the backbone (timestep, input size, layer); return the layer name.

        Raises
        ------
        ParameterError, UnknownLayerError
        """
        self._require_backbone().check_timestep(self.config.timestep)
        self.input_size()
        return self.layer_name()

    def regions(self, images: Any) -> list[torch.Tensor]:
        """The part of each image that is segmented, ``(3, H, W)`` float at its original resolution."""
        from .images import to_batch

        out = []
        for item in _image_items(images):
            region = _image_tensor(item)
            if self.config.policy == "center_crop":
                region = to_batch(region[None], policy="center_crop")[0]
            out.append(region)
        return out

    def features(self, images: Any, *, batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
        """Capture the ``(B, C, h, w)`` features of ``images`` (after the input policy)."""
        return self._capture(self.regions(images), batch_size=batch_size, progress=progress)

    def _capture(
        self, regions: list[torch.Tensor], *, batch_size: int | None, progress: bool
    ) -> torch.Tensor:
        from .hooks import capture

        bb = self._require_backbone()
        bb.check_timestep(self.config.timestep)
        size = self.input_size()
        layer = self.layer_name()
        batch = torch.stack([_resize_image(r, size) for r in regions])
        cache = capture(
            bb,
            batch,
            layers=[layer],
            timesteps=[self.config.timestep],
            seed=self.config.seed,
            image_size=size,
            batch_size=batch_size,
            progress=progress,
        )
        return cache[layer, self.config.timestep].detach().float().cpu()

    # -- public --------------------------------------------------------------------------------------

    def segment(
        self, images: Any, *, batch_size: int | None = None, progress: bool = False
    ) -> Segmentation | list[Segmentation]:
        """Segment one image or a batch.

        Parameters
        ----------
        images : image or list of images
            Paths, PIL images (any mode), numpy arrays ``(H, W)``, ``(H, W, 3|4)`` (uint8, uint16, float
            in [0, 1]), tensors ``(3, H, W)``; a list/tuple, a ``(B, 3, H, W)`` tensor or a
            ``(B, H, W, 3)`` array is a batch. Images of a batch may differ in size.
        batch_size : int, optional
            UNet batch size (default: all at once).
        progress : bool
            Show progress bars.

        Returns
        -------
        Segmentation or list of Segmentation
            A list when ``images`` was a batch.
        """
        from tqdm.auto import tqdm

        batch = _is_batch(images)
        regions = self.regions(images)
        t0 = time.perf_counter()
        feats = self._capture(regions, batch_size=batch_size, progress=progress)
        t_feat = (time.perf_counter() - t0) / len(regions)
        out = []
        for i, region in enumerate(tqdm(regions, desc="DiffCut", disable=not progress)):
            seg = self._segment_one(feats[i], region, self.config.mask_size or tuple(region.shape[-2:]))
            seg.timings["features"] = t_feat
            out.append(seg)
        return out if batch else out[0]

    def segment_features(
        self, features: Any, image: Any = None, size: int | Sequence[int] | None = None
    ) -> Segmentation:
        """Segment already captured features (e.g. ``cache["diffcut", 50][i]``).

        Parameters
        ----------
        features : torch.Tensor or numpy.ndarray
            ``(C, h, w)`` (or ``(1, C, h, w)``) features.
        image : image, optional
            The image they come from, used as is (no crop): anything
            :func:`~diffcut_lab.images.load_image` reads, or a ``(3, H, W)`` float tensor in [0, 1] such
            as ``cache.images[i]``. Needed for ``refine="pamr"``.
        size : int or (H, W), optional
            Output size (default: ``mask_size``, else the image's size, else the feature grid).

        Returns
        -------
        Segmentation
        """
        f = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
        if f.ndim == 4 and f.shape[0] == 1:
            f = f[0]
        f = f.detach().float().cpu()
        if f.ndim != 3:
            from .errors import FeatureError

            raise FeatureError(f"features must be (C, h, w); got shape {tuple(f.shape)}.")
        region = None if image is None else _image_tensor(image)
        if region is None and self.config.refine == "pamr":
            raise ParameterError(
                "refine='pamr' needs the image: pass image=... (e.g. cache.images[i]), or use "
                "refine='median' or 'none'."
            )
        out_size = _size_or_none(size, "size") or self.config.mask_size
        if out_size is None:
            out_size = tuple(region.shape[-2:]) if region is not None else tuple(f.shape[1:])
        return self._segment_one(f, region, out_size)

    def _segment_one(
        self, f: torch.Tensor, region: torch.Tensor | None, out_size: tuple[int, int]
    ) -> Segmentation:
        from .affinities import affinity
        from .ncut import recursive_ncut

        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        h, w = f.shape[1:]
        tree = recursive_ncut(
            affinity(f, alpha=cfg.alpha),
            tau=cfg.tau,
            grid=(h, w),
            mode=cfg.mode,
            min_size=cfg.min_size,
            max_depth=cfg.max_depth,
            solver=cfg.solver,
        )
        coarse = np.asarray(tree.labels, dtype=np.int64).reshape(h, w)
        t1 = time.perf_counter()
        timings["ncut"] = t1 - t0
        work = _work_size(tuple(out_size), cfg.refine_max_side)
        if cfg.upsample == "concept":
            labels = concept_assignment(coarse, f, work)
        else:
            labels = nearest_upsample(coarse, work)
        t2 = time.perf_counter()
        timings["upsample"] = t2 - t1
        if cfg.refine == "pamr":
            # PAMR runs where the backbone runs (a GPU makes it ~free at 1024 px); labels come back to numpy
            dev = torch.device(getattr(self.backbone, "device", None) or "cpu")
            img_work = _resize_image(region, work).to(dev)
            lab_t = torch.as_tensor(labels).to(dev)
            labels = pamr(img_work, lab_t, num_iter=cfg.pamr_iter, dilations=cfg.pamr_dilations).cpu().numpy()
        if cfg.refine in ("pamr", "median"):
            labels = median_filter(labels, cfg.median_size)
        if work != tuple(out_size):
            labels = nearest_upsample(labels, out_size)
        timings["refine"] = time.perf_counter() - t2
        image = None if region is None else _to_uint8(_resize_image(region, tuple(out_size)))
        return Segmentation(
            labels=np.asarray(labels, dtype=np.int64),
            tree=tree,
            features=f,
            image=image,
            config=cfg,
            timings=timings,
        )
