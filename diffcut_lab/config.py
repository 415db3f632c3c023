"""``DiffCutConfig``: the one settings object of a DiffCut run (imports no torch).

Every path that turns an image into labels -- :class:`~diffcut_lab.pipeline.DiffCut`, the ablation engine,
``diffcut-lab eval``, the report, the cut stepper's recompute, the layer views -- reads its settings from a
:class:`DiffCutConfig`, and every command-line option of a setting is generated from its field here (one
default, one help text, one validation). :meth:`DiffCutConfig.paper` is the published evaluation pipeline
by one switch.

Where the defaults differ from the published evaluation, and why
-----------------------------------------------------------------
* ``policy="resize"``: the whole image is segmented (squeezed to the square UNet input) and the labels
  come back at its own size; the published evaluation keeps a centred square of side ``min(H, W) - 1``
  (``policy="center_crop"``).
* ``antialias=True``: shrinking a photo to the UNet input without antialiasing aliases fine texture into
  the features; the published code resizes without it (features differ by up to ~1e-2 on a 369 x 492
  photo at 256 px).
* ``mode="fixed"``: the recursion without the published quirks (see :func:`~diffcut_lab.ncut.recursive_ncut`).
* ``mask_size=None``: labels at the segmented region's size; the published evaluation predicts 128 x 128.
* ``refine_max_side=1024``: a large photo is upsampled and refined at most at this side, then resized; the
  published evaluation refines at its 128 x 128 label size, so it needs no limit (``None``).
* ``pamr_guide="image"``: PAMR follows the colour edges of the image itself resized (antialiased) to the
  label size; the published code uses the UNet input bilinearly downsampled without antialias.
* ``noise_device="cpu"``: the noise is drawn on the CPU, so a seed gives the same features on every
  device; the published code draws it with a generator on the model's device (identical on a CPU, not on
  a GPU).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ParameterError
from .options import (
    AFFINITIES,
    AUTO,
    AUTO_RULES,
    MODES,
    NOISE_DEVICES,
    PAMR_GUIDES,
    PARTITIONS,
    POLICIES,
    REFINES,
    SOLVERS,
    TAU_MAX,
    UPSAMPLES,
)
from .validation import check_int, is_int

__all__ = [
    "CUT_FIELDS",
    "DEFAULT_ALPHA",
    "INPUT_FIELDS",
    "LABEL_FIELDS",
    "MAX_DENSE_NODES",
    "MAX_IMAGE_PIXELS",
    "MAX_KWAY_WORK",
    "MAX_MEDIAN_SIZE",
    "MAX_PAMR_DILATION",
    "MAX_PAMR_ITER",
    "MAX_SEED",
    "MAX_WALK_STEPS",
    "NONE",
    "NONE_MEANS",
    "PAPER_MASK_SIZE",
    "TREE_FIELDS",
    "DiffCutConfig",
    "check_kway_segments",
    "check_tau",
    "cut_key",
    "parse_size",
]

#: the affinity exponent of the published method and of the defaults (``W = ((cos - min) / (max - min)) ** alpha``)
DEFAULT_ALPHA = 10.0
#: output side of the published evaluation (labels and predictions are 128 x 128)
PAPER_MASK_SIZE = 128
#: the largest image, input or output, in pixels (PIL's own decompression-bomb limit, about 9,459 squared)
MAX_IMAGE_PIXELS = 89_478_485
#: the largest feature grid cut with a dense affinity (128 x 128: a 1 GiB float32 matrix; above, use knn)
MAX_DENSE_NODES = 128 * 128
#: the largest seed: seeds are int64 (torch and numpy generators, Parquet columns); 0 .. 2**63 - 1
MAX_SEED = 2**63 - 1
#: the longest attention walk: its graph is built from P^k by ~log2(k) N x N products, and P^k has long
#: reached its stationary rank-one limit (one segment) by then
MAX_WALK_STEPS = 1024
#: the largest K-way cut, as segments x grid nodes: its cost grows with both (about two minutes on one CPU
#: core at this size: 32 segments of a 128 x 128 grid, or 512 of 32 x 32)
MAX_KWAY_WORK = 2**19
#: most PAMR iterations (the published evaluation runs 10, its notebook 30)
MAX_PAMR_ITER = 1000
#: largest PAMR dilation, in pixels (the published notebook's largest is 64; PAMR pads the image by it)
MAX_PAMR_DILATION = 512
#: largest median filter window (the published one is 3; the window's cost grows with its area)
MAX_MEDIAN_SIZE = 31
#: how an optional setting is written as text (command line, YAML): ``"none"`` is ``None``; 0 is a number
NONE = "none"


def parse_size(value: Any, name: str = "size") -> tuple[int, int]:
    """An int or an ``(H, W)`` pair -> ``(H, W)`` of positive ints; anything else raises ParameterError."""
    if is_int(value):
        value = (int(value), int(value))
    try:
        h, w = value
        if not (is_int(h) and is_int(w)):
            raise TypeError
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be an int or an (H, W) pair of ints; got {value!r}.") from None
    if h < 1 or w < 1:
        raise ParameterError(f"{name} must be positive; got {(int(h), int(w))}.")
    return int(h), int(w)


def check_tau(value: Any, *, auto: bool = False) -> float | str:
    """The one rule for an NCut threshold: a number with ``0 < tau <= 2``, or ``"auto"`` where ``auto``
    allows it (ParameterError otherwise).

    A cut is accepted iff its NCut is below tau; the NCut of a bipartition lies in ``[0, 2)``, so a tau
    above 2 accepts exactly what 2 does, and a tau of 0 or less accepts nothing.
    """
    if auto and isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        tau = float(value)
    except (TypeError, ValueError):
        tau = float("nan")
    if not 0 < tau <= TAU_MAX:  # False for NaN too
        or_auto = ", or 'auto'" if auto else ""
        raise ParameterError(
            f"tau must satisfy 0 < tau <= {TAU_MAX:g} (normalized-cut values lie in [0, 2); the paper "
            f"uses 0.5, larger tau gives more segments){or_auto}; got {value!r}."
        )
    return tau


def check_kway_segments(k: int, grid: Sequence[int], *, source: str = "n_segments") -> int:
    """The one rule for K of a K-way cut on an ``(h, w)`` feature grid: ``K <= h * w`` (a segment needs a
    node) and ``K * h * w <= MAX_KWAY_WORK`` (beyond, the cut does not finish in minutes).

    ``source`` says where K came from (``"n_segments"``, or e.g. ``"the recursive cut at tau 0.9"``) for
    the message. Returns K; raises ParameterError naming a K that works.
    """
    h, w = parse_size(tuple(grid), "grid")
    n = h * w
    largest = min(n, MAX_KWAY_WORK // n)
    lead = f"n_segments={k}" if source == "n_segments" else f"{source} gives {k:,} segments"
    if k > n:
        raise ParameterError(
            f"{lead}, more than the {n:,} nodes of the {h} x {w} feature grid (each segment of a K-way cut "
            f"needs a node); pass n_segments={largest} or fewer."
        )
    if k * n > MAX_KWAY_WORK:
        raise ParameterError(
            f"{lead}: a K-way cut into {k:,} segments of the {h} x {w} feature grid ({n:,} nodes) does not "
            f"finish in minutes (segments x nodes is at most {MAX_KWAY_WORK:,}); pass n_segments={largest} or "
            "fewer, partition='recursive', or a coarser grid (layer or image_size)."
        )
    return int(k)


def _optional(value: Any) -> Any:
    """``None`` for ``None`` or the text ``"none"`` (any case), as the command line and YAML write it."""
    if value is None or (isinstance(value, str) and value.strip().lower() == NONE):
        return None
    return value


def _setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its command-line help (and ``choices``, ``metavar``, ``cli`` flag)."""
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class DiffCutConfig:
    """Settings of a DiffCut run (frozen; :meth:`to_dict` for papermill, ablation grids and JSON).

    Every field is validated on construction (a bad value, or a combination that cannot run, raises
    :class:`~diffcut_lab.ParameterError` naming the field), so a run fails before any work; what depends
    on the feature grid is refused by :meth:`check_grid`. A setting means one thing whichever way it
    comes (Python, :meth:`from_dict` for papermill, ablation grids, the command line): an optional
    setting is None or the text ``"none"`` (YAML and the command line), and 0 is always the number 0. ``DiffCutConfig.paper()`` reproduces the
    published evaluation pipeline; the module docstring lists where the defaults differ from it.

    Parameters
    ----------
    layer : str
        Hook point whose output is the feature map: ``"diffcut"`` (the paper's layer for the loaded
        family) or one name :func:`~diffcut_lab.hooks.resolve_layers` resolves to one layer.
    timestep : int
        Noising timestep, ``0 <= t < num_train_timesteps`` (checked against the backbone; paper: 50).
    alpha : float
        Affinity exponent, ``> 0`` (paper: 10).
    tau : float or "auto"
        NCut threshold, ``0 < tau <= 2``: a cut is accepted iff its NCut is below tau (paper: 0.5). The
        NCut of a bipartition lies in ``[0, 2)``, so ``tau > 2`` would accept exactly what 2 accepts.
        ``"auto"``: no tau; the recursion stops by ``auto_rule`` (:mod:`~diffcut_lab.stopping`).
    mode : {"fixed", "paper"}
        Recursion variant of :func:`~diffcut_lab.ncut.recursive_ncut`. ``"paper"`` also numbers the
        segments as the published code does (its 3 x 3 median filter after PAMR sees the ids) and, up to
        :data:`~diffcut_lab.segmentation.PUBLISHED_ORDER_MAX_BYTES`, upsamples the features before the
        concept-assignment dot products as published (equal in exact arithmetic; float32 rounding moves a
        few pixels).
    refine : {"pamr", "median", "none"}
        Label refinement after upsampling (PAMR then the median filter; the median alone; none).
    upsample : {"concept", "nearest"}
        Grid-to-pixel upsampling.
    seed : int
        Seed of the noise added at ``timestep`` (one noise map shared by a batch), ``0 <= seed <=``
        :data:`MAX_SEED` (an int64).
    image_size : int or (H, W), optional
        UNet input size in pixels (default: the backbone's native size).
    policy : {"resize", "center_crop"}
        ``"resize"``: the whole image; ``"center_crop"``: the published evaluation's centred square of
        side ``min(H, W) - 1`` (:func:`~diffcut_lab.images.center_crop_box`).
    antialias : bool
        Antialias bilinear downsizing of the image (to the UNet input, and to PAMR's guide).
    noise_device : {"cpu", "model"}
        Where the noise is drawn: ``"cpu"`` (the same noise on every device) or the model's device (as
        published).
    mask_size : int or (H, W), optional
        Output label size (default: the segmented region's size; paper: 128).
    refine_max_side : int, optional
        Upsample and refine at most at this longer side, then resize the labels (nearest) to the output
        size (default 1024; None = no limit).
    pamr_iter : int
        PAMR iterations, at most :data:`MAX_PAMR_ITER` (paper eval: 10).
    pamr_dilations : tuple of int
        PAMR dilations, at most :data:`MAX_PAMR_DILATION` (paper eval: 1, 2, 4, 8).
    pamr_guide : {"image", "input"}
        The image PAMR follows: the segmented region resized to the label size, or the UNet input
        resized to it (as published).
    median_size : int
        Median filter window after PAMR, at most :data:`MAX_MEDIAN_SIZE`.
    min_size : int
        Smallest segment the recursion may cut off, in grid cells (fixed mode; 1 = no limit).
    max_depth : int, optional
        Deepest recursion level: 0 cuts nothing (the root is level 0), None = no limit.
    solver : {"auto", "dense", "eigsh", "torch32", "torch64"}
        Eigen solver of :func:`~diffcut_lab.ncut.recursive_ncut` (``torch32``: paper mode only;
        ``torch64``: fixed mode only, dense float64 ``eigh`` on the features' device). ``"auto"`` chooses
        by device and size: on an accelerator the whole cut stays there.
    knn : int, optional
        Keep only each node's ``knn`` strongest edges (:func:`~diffcut_lab.affinities.affinity`): a sparse
        graph, whose memory grows with ``N x knn`` instead of ``N^2``. Needed above a 128 x 128 feature
        grid (:data:`MAX_DENSE_NODES`), faster from 64 x 64; fixed mode only (the published recursion is
        dense; not with ``partition="kway"``, which cuts the dense graph). None: the dense graph.
    affinity : {"cosine", "attention"}
        The graph that is cut: DiffCut's ``alpha``-sharpened feature cosines, or ``walk_steps``-step random
        walks on the layer's self-attention probabilities (:mod:`~diffcut_lab.walks`; needs the
        attention, which :class:`~diffcut_lab.pipeline.DiffCut` captures in the same forward).
    walk_steps : int
        Steps of the attention random walk (``affinity="attention"``), at most :data:`MAX_WALK_STEPS`:
        more steps, a smoother graph and fewer segments. Above 64 x 64 grid nodes only short walks run
        (:meth:`check_grid`, :func:`~diffcut_lab.walks.max_walk_steps`).
    partition : {"recursive", "kway"}
        Recursive two-way normalized cuts (DiffCut), or one K-way normalized cut (:mod:`~diffcut_lab.kway`)
        whose K is ``n_segments``, else the automatic rule (``tau="auto"``), else the number of segments
        the recursive cut gives at ``tau``.
    n_segments : int, optional
        K of the K-way cut (``partition="kway"``): at most the grid's nodes, with ``K x nodes <=``
        :data:`MAX_KWAY_WORK` (:func:`check_kway_segments`; refused, never clamped).
    auto_rule : {"dynamic", "stable"}
        The stopping rule of ``tau="auto"``: ``"dynamic"``, a threshold per cut read from the spectrum of
        the region being cut (the eigengap of its normalised Laplacian); ``"stable"``, one tau per image,
        the middle of the widest range of tau over which the partition does not change.
    """

    layer: str = _setting("diffcut", "hook point to read: 'diffcut' (the paper's layer for the model) or "
                          "one name from 'diffcut-lab layers'")  # fmt: skip
    timestep: int = _setting(50, "noising timestep t", metavar="T")
    alpha: float = _setting(DEFAULT_ALPHA, "affinity exponent, > 0", metavar="A")
    tau: float | str = _setting(0.5, "normalized-cut threshold, 0 < tau <= 2: a cut is kept when its NCut "
                                "is below tau; larger tau, more and smaller segments; 'auto': stop by "
                                "--auto-rule", metavar="TAU")  # fmt: skip
    mode: str = _setting("fixed", "'fixed': exact threshold, guarded solver, no dropped pixels; 'paper': "
                         "the published recursion with its quirks", choices=MODES)  # fmt: skip
    refine: str = _setting("pamr", "refinement: PAMR along colour edges then a median filter, the median "
                           "only, or none", choices=REFINES)  # fmt: skip
    upsample: str = _setting("concept", "grid-to-pixel upsampling: concept assignment or nearest neighbour",
                             choices=UPSAMPLES)  # fmt: skip
    seed: int = _setting(42, "seed of the added noise, 0 to 2**63 - 1", metavar="S")
    image_size: int | tuple[int, int] | None = _setting(
        None, "UNet input side in pixels (SSD-1B's native size is 1024)",
        metavar="N")  # fmt: skip
    policy: str = _setting("resize", "'resize': segment the whole image (squeezed to the square UNet "
                           "input); 'center_crop': the published centred square of side min(H, W) - 1",
                           choices=POLICIES)  # fmt: skip
    antialias: bool = _setting(True, "antialias bilinear downsizing of the image (the published code "
                               "does not)")  # fmt: skip
    noise_device: str = _setting("cpu", "draw the noise on the CPU (same features on every device) or on "
                                 "the model's device (as published)", choices=NOISE_DEVICES)  # fmt: skip
    mask_size: int | tuple[int, int] | None = _setting(
        None, "output label side (the paper evaluates at 128)", metavar="N"
    )
    refine_max_side: int | None = _setting(1024, "upsample and refine at most at this longer side, then "
                                           "resize the labels", metavar="N")  # fmt: skip
    pamr_iter: int = _setting(10, f"PAMR iterations, 0 to {MAX_PAMR_ITER}", metavar="K")
    pamr_dilations: tuple[int, ...] = _setting((1, 2, 4, 8), f"PAMR dilations, 1 to {MAX_PAMR_DILATION} pixels",
                                               metavar="D")  # fmt: skip
    pamr_guide: str = _setting("image", "the image PAMR follows: the image itself or the UNet input "
                               "(as published), resized to the label size", choices=PAMR_GUIDES)  # fmt: skip
    median_size: int = _setting(3, f"median filter window after PAMR, 1 to {MAX_MEDIAN_SIZE}", metavar="K")
    min_size: int = _setting(1, "smallest segment the recursion may cut off, in feature-grid cells "
                             "(fixed mode)", metavar="P")  # fmt: skip
    max_depth: int | None = _setting(None, "deepest recursion level (the root is level 0)", metavar="D")
    solver: str = _setting("auto", "eigen solver of the recursion", choices=SOLVERS)
    knn: int | None = _setting(None, "keep each node's K strongest edges (a sparse graph: needed above a "
                               "128x128 feature grid, faster from 64x64; fixed mode)", metavar="K")  # fmt: skip
    affinity: str = _setting("cosine", "the graph that is cut: feature cosines (DiffCut) or random walks "
                             "on the layer's self-attention", choices=AFFINITIES)  # fmt: skip
    walk_steps: int = _setting(1, "steps of the attention random walk (affinity 'attention'), 1 to "
                               f"{MAX_WALK_STEPS}; more steps, fewer segments", metavar="K")  # fmt: skip
    partition: str = _setting("recursive", "recursive two-way cuts (DiffCut) or one K-way normalized cut",
                              choices=PARTITIONS)  # fmt: skip
    n_segments: int | None = _setting(None, "K of the K-way cut (partition 'kway'), at most the feature grid's "
                                      f"nodes and segments x nodes <= {MAX_KWAY_WORK:,}", metavar="K")  # fmt: skip
    auto_rule: str = _setting("dynamic", "stopping rule of tau 'auto': a threshold per cut from the "
                              "region's spectrum, or the most stable tau of the image", choices=AUTO_RULES)  # fmt: skip

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in _OPTIONAL_FIELDS:  # None, or "none" as text writes it; 0 is a number, never None
            set_(self, name, _optional(getattr(self, name)))
        alpha, tau = self._check_values()
        self._check_ranges()
        dil = self._check_dilations()
        self._normalise(alpha, tau, dil)

    def _check_values(self) -> tuple[float, Any]:
        """The layer, timestep, alpha, tau and the choices, and the solver and mode they allow."""
        if not isinstance(self.layer, str) or not self.layer:
            raise ParameterError(f"layer must be a non-empty layer name or alias; got {self.layer!r}.")
        check_int(self.timestep, "timestep", minimum=0, hint="The paper uses 50.")
        alpha, tau = _number(self.alpha, "alpha"), check_tau(self.tau, auto=True)
        if not alpha > 0:
            raise ParameterError(
                f"alpha must be a finite number > 0 (the paper uses 10); got {self.alpha!r}."
            )
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ParameterError(
                    f"unknown {f.name} {getattr(self, f.name)!r}; expected one of {choices}."
                )
        if self.solver == "torch32" and self.mode != "paper":
            raise ParameterError("solver 'torch32' (the published float32 eigh) exists in mode 'paper' only.")
        if self.solver == "torch64" and self.mode != "fixed":
            raise ParameterError(
                "solver 'torch64' (dense float64 eigh on the device) exists in mode 'fixed' only."
            )
        if self.mode == "paper" and self.min_size != 1:
            raise ParameterError(
                "min_size must be 1 in mode 'paper' (the published recursion has no minimum)."
            )
        return alpha, tau

    def _check_ranges(self) -> None:
        """Flags, counts and their bounds, and the settings that exclude each other."""
        if not isinstance(self.antialias, bool):
            raise ParameterError(f"antialias must be True or False; got {self.antialias!r}.")
        check_int(self.seed, "seed", minimum=0, maximum=MAX_SEED, hint="Seeds are int64: 0 to 2**63 - 1.")
        for name, lo in (("pamr_iter", 0), ("median_size", 1), ("min_size", 1)):
            check_int(getattr(self, name), name, minimum=lo)
        _at_most("pamr_iter", self.pamr_iter, MAX_PAMR_ITER, "the published evaluation runs 10")
        _at_most("median_size", self.median_size, MAX_MEDIAN_SIZE, "the published filter is 3 x 3")
        if self.knn is not None and self.mode == "paper":
            raise ParameterError(
                "knn exists in mode 'fixed' only (the published recursion cuts the dense graph)."
            )
        if self.affinity == "attention" and self.knn is not None:
            raise ParameterError("knn applies to the cosine affinity; the attention walk graph is dense.")
        if self.partition == "kway" and self.mode != "fixed":
            raise ParameterError("partition 'kway' has no paper mode (the published method is recursive); "
                                 "use mode='fixed'.")  # fmt: skip
        if self.n_segments is not None and self.partition != "kway":
            raise ParameterError(
                "n_segments sets K of partition='kway'; the recursive cut's granularity is tau."
            )
        if self.partition == "kway" and self.knn is not None:
            raise ParameterError("partition 'kway' cuts the dense graph (knn gives a sparse one); drop knn, or use "
                                 "partition='recursive'.")  # fmt: skip
        check_int(self.walk_steps, "walk_steps", minimum=1)
        _at_most(
            "walk_steps", self.walk_steps, MAX_WALK_STEPS, "the walk has converged to one segment long before"
        )
        for name, lo in (("refine_max_side", 1), ("max_depth", 0), ("knn", 1), ("n_segments", 1)):
            v = getattr(self, name)
            if v is not None:
                check_int(v, name, minimum=lo, hint=f"Or None: {NONE_MEANS[name]}.")
        if self.n_segments is not None:
            _at_most("n_segments", self.n_segments, _MAX_KWAY_SEGMENTS, "a K-way cut needs K grid nodes and "
                     f"segments x nodes <= {MAX_KWAY_WORK:,}")  # fmt: skip

    def _check_dilations(self) -> tuple[int, ...]:
        """The PAMR dilations as a tuple of ints (each at least 1, at most MAX_PAMR_DILATION)."""
        dil = tuple(self.pamr_dilations) if isinstance(self.pamr_dilations, (list, tuple)) else ()
        if not dil or any(not is_int(d) or d < 1 for d in dil):
            raise ParameterError(
                f"pamr_dilations must be a non-empty tuple of positive ints; got {self.pamr_dilations!r}."
            )
        _at_most("pamr_dilations", max(dil), MAX_PAMR_DILATION, "PAMR pads the image by the largest one")
        return dil

    def _normalise(self, alpha: float, tau: Any, dil: tuple[int, ...]) -> None:
        """Store the checked values in their canonical types (frozen dataclass: set through object)."""
        set_ = object.__setattr__
        set_(self, "timestep", int(self.timestep))
        set_(self, "alpha", alpha)
        set_(self, "tau", tau)
        set_(self, "seed", int(self.seed))
        for name in ("image_size", "mask_size"):
            v = getattr(self, name)
            set_(self, name, None if v is None else parse_size(v, name))
            size = getattr(self, name)
            if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
                raise ParameterError(
                    f"{name} {size[0]} x {size[1]} is above the limit of {MAX_IMAGE_PIXELS:,} pixels; pass a "
                    "smaller size."
                )
        for name in ("pamr_iter", "median_size", "min_size", "refine_max_side", "max_depth", "knn", "walk_steps",
                     "n_segments"):  # fmt: skip
            v = getattr(self, name)
            set_(self, name, None if v is None else int(v))
        set_(self, "pamr_dilations", tuple(int(d) for d in dil))

    # -- presets and copies -----------------------------------------------------------------------------

    @classmethod
    def paper(cls, **overrides: Any) -> DiffCutConfig:
        """The published evaluation pipeline (DiffCut, ``eval_diffcut.py`` with ``--refinement``).

        Centre crop to ``(min(H, W) - 1)^2``; bilinear resize to the model's input size without
        antialias; noise from a generator on the model's device, seed 42, t = 50; the paper's layer;
        ``alpha=10``; the published recursion (``mode="paper"``) at ``tau=0.5``; concept assignment to
        128 x 128; PAMR (10 iterations, dilations 1, 2, 4, 8) guided by the model input bilinearly
        downsampled to 128 x 128 without antialias; a 3 x 3 median filter. ``overrides`` change fields
        (e.g. ``tau=0.2`` for SD 1.4, or ``refine="none"`` for the evaluation without ``--refinement``).
        """
        base = cls(**_PAPER_CHANGES)
        return base.replace(**overrides) if overrides else base

    @classmethod
    def build(cls, config: DiffCutConfig | None = None, **changes: Any) -> DiffCutConfig:
        """``config`` (default: the defaults) with some fields changed: the one way every entry point
        (``DiffCut``, ``segment_features``, the layer views) turns "a config and keyword settings" into
        settings."""
        base = config if config is not None else cls()
        if not isinstance(base, DiffCutConfig):
            raise ParameterError(f"config must be a DiffCutConfig; got {type(base).__name__}.")
        return base.replace(**changes) if changes else base

    def replace(self, **changes: Any) -> DiffCutConfig:
        """A copy with some fields changed (validated again); unknown names raise ParameterError."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ParameterError(
                f"unknown DiffCut setting(s) {unknown}; valid settings: {list(self.field_names())}."
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every setting's name, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def check_grid(self, grid: Sequence[int]) -> None:
        """Refuse what these settings cannot cut on an ``(h, w)`` feature grid, before any work.

        A dense cosine affinity above :data:`MAX_DENSE_NODES` nodes (``knn`` makes it sparse), an attention
        walk longer than :func:`~diffcut_lab.walks.max_walk_steps` allows on the grid, and a K-way
        ``n_segments`` that :func:`check_kway_segments` refuses (more segments than nodes, or beyond
        :data:`MAX_KWAY_WORK`).

        Raises
        ------
        ParameterError
            One line naming the grid and a setting that works.
        """
        h, w = parse_size(tuple(grid), "grid")
        n = h * w
        if self.affinity == "attention":
            from .walks import max_walk_steps  # (torch: the grid is known once a model is loaded)

            if self.walk_steps > max_walk_steps(n):
                raise ParameterError(
                    f"walk_steps={self.walk_steps} with affinity='attention' on the {h} x {w} feature grid "
                    f"({n:,} nodes) needs dense N x N products that do not finish in minutes; use walk_steps <= "
                    f"{max_walk_steps(n)}, affinity='cosine', or a coarser grid (layer or image_size)."
                )
        if self.affinity == "cosine" and self.knn is None and n > MAX_DENSE_NODES:
            raise ParameterError(
                f"the {h} x {w} feature grid ({n:,} nodes) is too large for a dense affinity "
                f"({n * n * 4 / 2**30:.0f} GiB); pass knn=32 (a sparse graph), a smaller image_size, or a coarser "
                "layer."
            )
        if self.partition == "kway" and self.n_segments is not None:
            check_kway_segments(self.n_segments, (h, w))

    # -- conversions ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (tuples as lists), suitable for JSON, YAML and papermill parameters."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiffCutConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ParameterError)."""
        return cls().replace(**dict(d))

    def changes(self, base: DiffCutConfig | None = None) -> dict[str, Any]:
        """The fields that differ from ``base`` (default: the defaults), as plain values."""
        ref = (base or DiffCutConfig()).to_dict()
        return {k: v for k, v in self.to_dict().items() if ref[k] != v}

    def describe(self, **resolved: Any) -> dict[str, str]:
        """Every setting as readable text, for tables (reports, notebooks).

        ``resolved`` replaces values with what they resolved to on a backbone, e.g.
        ``layer="down_blocks.2.attentions.1.transformer_blocks.3.attn1"``, ``image_size=(1024, 1024)``.
        """
        out: dict[str, str] = {}
        for name in self.field_names():
            value = resolved.get(name, getattr(self, name))
            out[name] = _readable(name, value)
        return out


#: where the published evaluation differs from the defaults (the module docstring says why); every other
#: field's default is the published value
_PAPER_CHANGES: dict[str, Any] = {
    "mode": "paper", "policy": "center_crop", "antialias": False, "noise_device": "model",
    "mask_size": PAPER_MASK_SIZE, "refine_max_side": None, "pamr_guide": "input",
}  # fmt: skip

#: the settings whose value may be None (written "none" on the command line and in YAML), and what None means
NONE_MEANS = {
    "image_size": "the model's native size", "mask_size": "the image's size", "refine_max_side": "no limit",
    "max_depth": "no limit; 0: no cut at all", "knn": "the dense graph",
    "n_segments": "K from tau or the automatic rule",
}  # fmt: skip
_OPTIONAL_FIELDS = tuple(NONE_MEANS)
#: the largest n_segments on any grid: K <= N and K * N <= MAX_KWAY_WORK
_MAX_KWAY_SEGMENTS = math.isqrt(MAX_KWAY_WORK)


def _at_most(name: str, value: int, limit: int, why: str) -> None:
    if value > limit:
        raise ParameterError(f"{name} must be at most {limit:,} ({why}); got {value!r}.")


def _number(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number; got {value!r}.") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ParameterError(f"{name} must be a finite number; got {value!r}.")
    return v


_NONE_TEXT = {
    "image_size": "the model's native size",
    "mask_size": "the image's size",
    "refine_max_side": "no limit",
    "max_depth": "no limit",
    "n_segments": "the recursive cut's count (at tau, or by the automatic rule)",
}


def _readable(name: str, value: Any) -> str:
    if value is None:
        return _NONE_TEXT.get(name, "none")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name in ("image_size", "mask_size") and isinstance(value, Sequence):
        h, w = value
        return f"{w} x {h}" if h != w else f"{h} x {h}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


#: settings that decide the UNet input and the features (a feature cache is keyed by them)
INPUT_FIELDS = ("layer", "timestep", "seed", "image_size", "policy", "antialias", "noise_device")
#: settings of the cut on the feature grid (recorded in ``CutTree.params``)
CUT_FIELDS = ("alpha", "tau", "mode", "min_size", "max_depth", "solver", "knn", "affinity", "walk_steps", "partition",
              "n_segments", "auto_rule")  # fmt: skip
#: the cut settings a tree records in ``CutTree.params`` (its ``tau`` and ``mode`` are attributes of their own)
TREE_FIELDS = tuple(f for f in CUT_FIELDS if f not in ("tau", "mode"))


def cut_key(config: DiffCutConfig) -> tuple:
    """What a cut depends on besides tau: configurations with one key share one tree, pruned per tau
    (:func:`~diffcut_lab.segmentation.cut_trees`)."""
    return tuple(getattr(config, f) for f in CUT_FIELDS if f != "tau")


#: settings from the grid labels to the output labels
LABEL_FIELDS = (
    "upsample", "refine", "mask_size", "refine_max_side", "pamr_iter", "pamr_dilations", "pamr_guide",
    "median_size",
)  # fmt: skip
assert set(INPUT_FIELDS + CUT_FIELDS + LABEL_FIELDS) == set(DiffCutConfig.field_names())
