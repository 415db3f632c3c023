"""DiffCut end to end: image(s) -> UNet self-attention features -> recursive NCut -> sharp labels.

>>> import diffcut_lab as dl                                   # doctest: +SKIP
>>> seg = dl.DiffCut(dl.load_backbone("pocket"), tau=0.5).segment("photo.jpg")  # doctest: +SKIP
>>> seg.labels.shape == seg.image.shape[:2]                    # doctest: +SKIP
True

Steps of :meth:`DiffCut.segment` (DiffCut, Couairon et al., NeurIPS 2024), each one a function of the
segmentation core (:mod:`diffcut_lab.segmentation`) driven by one :class:`~diffcut_lab.config.DiffCutConfig`:

1. every image is loaded as RGB (:func:`~diffcut_lab.images.load_image`: paths, PIL images of any mode,
   numpy arrays, tensors); ``policy="resize"`` (default) keeps the whole image, whose aspect ratio is
   **not** preserved at the UNet input (the labels come back at the original size and aspect);
   ``policy="center_crop"`` keeps the published evaluation's centred square of side ``min(H, W) - 1``;
2. the region is resized to the backbone's input size (bilinear, ``antialias``) and one UNet forward at
   ``timestep`` captures ``layer`` (:func:`~diffcut_lab.hooks.capture`);
3. per image, :func:`~diffcut_lab.segmentation.cut_tree` partitions the feature grid (affinity ``alpha``,
   recursive NCut ``tau``, ``mode``);
4. the grid labels are upsampled (``upsample="concept"`` -- concept assignment -- or ``"nearest"``) to the
   output size and refined (``refine="pamr"``: PAMR then a median filter, the published evaluation;
   ``"median"``: the median only; ``"none"``).

Output size: ``mask_size`` if set (128 in the paper's evaluation), else the size of the segmented region.
Upsampling and refinement run at that size, except that a longer side above ``refine_max_side`` is first
reduced to it (PAMR's memory grows with the pixel count) and the labels are then resized (nearest).

``DiffCut(bb, DiffCutConfig.paper()).segment(image).labels`` is the published evaluation's 128 x 128 map of
that image; :mod:`diffcut_lab.config` says where the defaults differ from it and why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import segmentation as core
from .colors import blend_labels, lineage_hex
from .config import DiffCutConfig, parse_size
from .errors import ImageInputError, ParameterError
from .images import resize_image
from .validation import as_tensor, check_features

__all__ = ["DiffCut", "DiffCutConfig", "Segmentation"]


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
        ``(C, h, w)`` float32 features that were cut (a CPU copy; the cut ran on the backbone's device).
    image : numpy.ndarray or None
        ``(H, W, 3)`` uint8 image aligned with ``labels`` (None when segmenting features alone).
    config : DiffCutConfig
        The settings used.
    timings : dict
        Seconds spent per stage: ``"features"`` (the image's share of the batch's capture), ``"affinity"``,
        ``"cut"``, ``"ncut"`` (the two together), ``"upsample"``, ``"refine"``.
    attention : torch.Tensor or None
        ``(N, N)`` float32 self-attention probabilities of the layer (a CPU copy, ``N = h * w``) that an
        ``affinity="attention"`` cut walked on, captured in the same forward as the features; None for
        the other affinities. With ``features`` and ``config``, what :meth:`recut` needs.

    Examples
    --------
    >>> seg = DiffCut(bb, affinity="attention", tau="auto").segment(image)  # doctest: +SKIP
    >>> seg.recut(tau=0.8).params["affinity"]                               # doctest: +SKIP
    'attention'
    >>> viz.cut_stepper(seg)                                                # doctest: +SKIP
    """

    labels: np.ndarray
    tree: Any
    features: torch.Tensor
    image: np.ndarray | None
    config: DiffCutConfig
    timings: dict[str, float] = field(default_factory=dict)
    attention: torch.Tensor | None = None

    @property
    def n_segments(self) -> int:
        """Number of segments in ``labels``."""
        return int(np.unique(self.labels).size)

    @property
    def coarse_labels(self) -> np.ndarray:
        """``(h, w)`` labels of the cut on the feature grid."""
        return np.asarray(self.tree.labels)

    def recut(self, **changes: Any) -> Any:
        """The feature grid cut again with every cut setting of this segmentation, some changed.

        Parameters
        ----------
        **changes
            New values of cut settings (:data:`~diffcut_lab.config.CUT_FIELDS`: ``alpha``, ``tau`` -- a
            number or ``"auto"`` --, ``knn``, ``partition``, ``n_segments``, ...). The others stay as the
            tree recorded them: attention-walk, automatic, K-way and kNN cuts stay so.

        Returns
        -------
        CutTree
            With no change, a tree equal to :attr:`tree` when it was cut on the CPU (a cut on an
            accelerator may pick another eigen solver, :attr:`~diffcut_lab.ncut.CutStep.solver`).

        Raises
        ------
        ParameterError
            A change that is not a cut setting.
        """
        return core.recut(self.tree, self.features, attention=self.attention, **changes)

    @property
    def colors(self) -> list[str]:
        """``"#rrggbb"`` of each id of :attr:`labels`, by its place in the tree: the colours the cut
        stepper's partition panel gives the same segments after the last step (each segment inherits from
        the partition after every cut, :func:`~diffcut_lab.colors.lineage_hex`), so the overlay, the report
        and the stepper colour a segment alike."""
        tree = self.tree
        # a rejected step leaves the partition as it was (and a persisting segment keeps its colour), so
        # the partitions after the accepted steps give the same colours as the chain of every step
        chain = [tree.labels_at(0)] + [tree.labels_at(k + 1) for k, s in enumerate(tree.steps) if s.accepted]
        return lineage_hex([*chain, self.labels])[-1]  # a tree without steps: labels_at(0) is its labels

    def colorize(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 colour image of the labels (:attr:`colors`)."""
        table = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in self.colors], dtype=np.uint8)
        return table[self.labels]

    def overlay(self, alpha: float = 0.5, *, edges: bool = True) -> np.ndarray:
        """``(H, W, 3)`` uint8 label colours (:attr:`colors`) blended over the image (the colours alone
        without an image)."""
        if self.image is None:
            return self.colorize()
        return blend_labels(self.image, self.labels, alpha, edges=edges, colors=self.colors)

    def __repr__(self) -> str:
        h, w = self.labels.shape
        return (
            f"Segmentation({h}x{w}, {self.n_segments} segments, grid {tuple(self.features.shape[1:])}, "
            f"tau={self.config.tau}, refine={self.config.refine!r})"
        )


# ----------------------------------------------------------------------------------------------------
# pipeline


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
        self.backbone = backbone
        self.config = DiffCutConfig.build(config, **fields)

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
        from .hook_points import resolve_layers

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
        """Validate the settings against the backbone (timestep, input size, layer, and that the feature
        grid can be cut with these settings: :meth:`~diffcut_lab.config.DiffCutConfig.check_grid`); return
        the layer name.

        Raises
        ------
        ParameterError, UnknownLayerError
        """
        from .hook_points import list_hook_points

        bb = self._require_backbone()
        bb.check_timestep(self.config.timestep)
        size = self.input_size()
        name = self.layer_name()
        points = {p.name: p for p in list_hook_points(bb, image_size=size)}
        point = points[name]
        if self.config.affinity == "attention" and f"{name}.probs" not in points:
            raise ParameterError(
                f"affinity='attention' walks on a self-attention layer's probabilities, and {name} has none; "
                "pass an attn1 layer (see `diffcut-lab layers --kind attn1`)."
            )
        self.config.check_grid(point.resolution)
        return name

    def inputs(self, images: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(region, x)`` per image: the part that is segmented, ``(3, H, W)`` at its own resolution,
        and the UNet input made from it (:func:`~diffcut_lab.segmentation.network_input`)."""
        size = self.input_size()
        return [core.network_input(_image_tensor(item), self.config, size) for item in _image_items(images)]

    def regions(self, images: Any) -> list[torch.Tensor]:
        """The part of each image that is segmented, ``(3, H, W)`` float at its original resolution."""
        return [region for region, _ in self.inputs(images)]

    def features(self, images: Any, *, batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
        """Capture the ``(B, C, h, w)`` features of ``images`` (after the input policy)."""
        layer = self.check()
        xs = [x for _, x in self.inputs(images)]
        return self._capture(xs, layer, batch_size=batch_size, progress=progress, store_device="cpu")[0]

    def _capture(
        self, xs: list[torch.Tensor], layer: str, *, batch_size: int | None, progress: bool, store_device: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of UNet inputs ``xs`` at ``layer`` (already checked by :meth:`check`) on ``store_device``,
        and, for ``affinity="attention"``, the layer's ``(B, N, N)`` attention probabilities (same forward)."""
        from .capturing import capture

        cfg = self.config
        probs = f"{layer}.probs" if cfg.affinity == "attention" else None
        cache = capture(
            self.backbone, torch.stack(xs), layers=[layer] + ([probs] if probs else []), timesteps=[cfg.timestep],
            seed=cfg.seed, image_size=tuple(xs[0].shape[-2:]), noise_device=cfg.noise_device,
            batch_size=batch_size, progress=progress, store_device=store_device,
        )  # fmt: skip
        attention = cache[probs, cfg.timestep].detach().float() if probs else None
        return cache[layer, cfg.timestep].detach().float(), attention

    def _device(self) -> torch.device:
        """Where the chain runs: the backbone's device (the CPU without a backbone)."""
        return torch.device(getattr(self.backbone, "device", None) or "cpu")

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

        layer = self.check()  # settings against the model (and the grid's memory) before any image is encoded
        batch = _is_batch(images)
        inputs = self.inputs(images)
        t0 = time.perf_counter()
        # the features stay on the backbone's device from capture to labels; only the labels come back
        feats, attention = self._capture([x for _, x in inputs], layer, batch_size=batch_size, progress=progress,
                                         store_device=self._device())  # fmt: skip
        t_feat = (time.perf_counter() - t0) / len(inputs)
        out = []
        for i, (region, x) in enumerate(tqdm(inputs, desc="DiffCut", disable=not progress)):
            size = self.config.mask_size or tuple(region.shape[-2:])
            seg = self._segment_one(feats[i], region, x, size, None if attention is None else attention[i])
            seg.timings["features"] = t_feat
            out.append(seg)
        return out if batch else out[0]

    def segment_features(
        self,
        features: Any,
        image: Any = None,
        size: int | Sequence[int] | None = None,
        *,
        attention: Any = None,
    ) -> Segmentation:
        """Segment already captured features (e.g. ``cache["diffcut", 50][i]``).

        Parameters
        ----------
        features : torch.Tensor or numpy.ndarray
            ``(C, h, w)`` (or ``(1, C, h, w)``) features.
        image : image, optional
            The image they come from, used as is (no crop): anything
            :func:`~diffcut_lab.images.load_image` reads, or a ``(3, H, W)`` float tensor in [0, 1] such
            as ``cache.images[i]``. It is PAMR's guide (for either ``pamr_guide``), so
            ``refine="pamr"`` needs it.
        size : int or (H, W), optional
            Output size (default: ``mask_size``, else the image's size, else the feature grid).
        attention : torch.Tensor, optional
            ``(N, N)`` self-attention probabilities of the same layer and image (e.g.
            ``cache["<attn1 name>.probs", 50][i]``), which ``affinity="attention"`` cuts.

        Returns
        -------
        Segmentation
        """
        f = check_features(features, batch_of_one=True, dtype=torch.float32)
        region = None if image is None else _image_tensor(image)
        if region is None and self.config.refine == "pamr":
            raise ParameterError(
                "refine='pamr' needs the image: pass image=... (e.g. cache.images[i]), or use "
                "refine='median' or 'none'."
            )
        out_size = (None if size is None else parse_size(size, "size")) or self.config.mask_size
        if out_size is None:
            out_size = tuple(region.shape[-2:]) if region is not None else tuple(f.shape[1:])
        return self._segment_one(f, region, region, out_size, attention)

    def _segment_one(
        self, f: torch.Tensor, region: torch.Tensor | None, x: torch.Tensor | None, out_size: tuple[int, int],
        attention: Any = None,
    ) -> Segmentation:  # fmt: skip
        cfg = self.config
        device = self._device()
        f = f.to(device)
        timings: dict[str, float] = {}
        tree = core.cut_tree(f, cfg, timings=timings, attention=attention)
        timings["ncut"] = timings["affinity"] + timings["cut"]
        # upsampling and PAMR run where the backbone runs (a GPU makes them nearly free at 1024 px)
        labels = core.pixel_labels(core.grid_labels(tree), f, out_size, cfg, region=region, x=x,
                                   device=device, timings=timings)  # fmt: skip
        image = None
        if region is not None:
            image = _to_uint8(resize_image(region, tuple(out_size), antialias=cfg.antialias))
        kept = None  # the attention the cut walked on, kept so that the tree can be cut again
        if cfg.affinity == "attention" and attention is not None:
            kept = as_tensor(attention, "attention probabilities", "of shape (N, N)", error=ParameterError)
            kept = kept.float().cpu()
        return Segmentation(
            labels=labels,
            tree=tree,
            features=f.cpu(),
            image=image,
            config=cfg,
            timings=timings,
            attention=kept,
        )
