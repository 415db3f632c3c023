"""Hook points: every capturable activation of a diffusion UNet, named by its diffusers module path.

Every capturable activation is a :class:`HookPoint` named by its diffusers module path
(``down_blocks.2.attentions.1.transformer_blocks.3.attn1``), so names match ``unet.named_modules()``
and diffusers' processor keys. Kinds:

- ``attn1``: self-attention output (after ``to_out``, before the residual), the DiffCut feature;
- ``attn2``: cross-attention output;
- ``block``: a ``BasicTransformerBlock``'s output (residual stream);
- ``attentions``: a ``Transformer2DModel``'s output (after ``proj_out`` and its residual);
- ``resnet``: a ``ResnetBlock2D``'s output;
- ``probs``: head-averaged self-attention probabilities ``(B, N, N)`` of an ``attn1``, named
  ``<attn1 path>.probs``.

This module lists them (:func:`list_hook_points`, :func:`hook_points_frame`), resolves names, patterns
and the ``"diffcut"`` alias (:func:`resolve_layers`, :func:`diffcut_layer_name`). Capturing them is
:mod:`diffcut_lab.capturing`; what a capture returns is :mod:`diffcut_lab.feature_cache`.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._diffusers import module_classes as _classes
from .backbones import Backbone
from .errors import ParameterError, UnknownLayerError
from .options import KINDS

__all__ = [
    "KINDS",
    "HookPoint",
    "LayerSpec",
    "diffcut_layer_name",
    "forward_order",
    "hook_points_frame",
    "layer_stage",
    "list_hook_points",
    "resolve_layers",
    "short_layer_name",
]

#: Kinds of hook points, in the order they are listed.
_STAGES = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
_STAGE_RANK = {"down": 0, "mid": 1, "up": 2}
_SUB_RANK = {"attn1": 0, "attn2": 1}


@dataclass(frozen=True)
class HookPoint:
    """One capturable activation of a UNet.

    Attributes
    ----------
    name : str
        Diffusers module path, e.g. ``down_blocks.2.attentions.1.transformer_blocks.3.attn1``
        (``....attn1.probs`` for attention probabilities).
    kind : str
        One of :data:`KINDS`.
    stage : str
        ``"down"``, ``"mid"`` or ``"up"``.
    channels : int
        Feature channels ``C`` of the ``(B, C, h, w)`` map; for ``probs`` the row length ``N = h * w``.
    resolution : tuple of int
        ``(h, w)`` of the feature map for the input size it was listed for.
    """

    name: str
    kind: str
    stage: str
    channels: int
    resolution: tuple[int, int]

    @property
    def module_name(self) -> str:
        """Path of the module the hook sits on (the ``attn1`` for ``probs``)."""
        return self.name[: -len(".probs")] if self.kind == "probs" else self.name

    @property
    def tokens(self) -> int:
        """``h * w``: the number of spatial positions."""
        return self.resolution[0] * self.resolution[1]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for JSON and data frames)."""
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d


# ----------------------------------------------------------------------------------------------------
# enumerating hook points


def order_key(name: str) -> tuple:
    """Completion order of a hook point in a diffusers UNet forward, from its name alone.

    Inside every down/mid/up block, ``resnets.j`` runs before ``attentions.j`` (the mid block runs
    ``resnets.0, attentions.0, resnets.1``); inside a transformer block ``attn1`` finishes before
    ``attn2``, which finishes before the block itself; a ``Transformer2DModel`` finishes after all its
    blocks. A forward hook fires when its module *finishes*, so this orders hooks by firing time.
    """
    parts = name.split(".")
    stage = _STAGE_RANK[_STAGES[parts[0]]]
    if parts[0] == "mid_block":
        block, rest = 0, parts[1:]
    else:
        block, rest = int(parts[1]), parts[2:]
    group, j = rest[0], int(rest[1])
    if group == "resnets":
        return (stage, block, j, 0, 0, 0)
    tail = rest[2:]
    if not tail:
        return (stage, block, j, 1, math.inf, 0)
    k = int(tail[1])
    sub = _SUB_RANK.get(tail[2], 9) if len(tail) > 2 else 9
    return (stage, block, j, 1, k, sub)


def forward_order(name: str) -> tuple:
    """:func:`order_key` for any name: names that are no full hook-point path sort after those that are,
    by stage (down, mid, up, other), then by their parts with numbers compared as numbers."""
    try:
        return (0, order_key(name))
    except (KeyError, ValueError, IndexError):
        parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))
        return (1, _STAGE_RANK.get(layer_stage(name), 3), parts)


def layer_stage(name: str) -> str:
    """``"down"``, ``"mid"``, ``"up"`` or ``"other"`` from a diffusers module path."""
    return _STAGES.get(name.split(".")[0], "other")


_ABBREV = [
    ("down_blocks.", "down"),
    ("up_blocks.", "up"),
    ("mid_block", "mid"),
    (".attentions.", ".att"),
    (".transformer_blocks.", ".tb"),
    (".resnets.", ".res"),
]


def short_layer_name(name: str) -> str:
    """Compact label for a module path, e.g. ``down2.att1.tb3.attn1``."""
    for long, short in _ABBREV:
        name = name.replace(long, short)
    return name


def _resolutions(unet: Any, latent: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """``(h, w)`` at each down/mid/up block for a UNet input of ``latent`` size."""
    h, w = latent
    out: dict[str, tuple[int, int]] = {}
    levels: list[tuple[int, int]] = []
    for i, blk in enumerate(unet.down_blocks):
        out[f"down_blocks.{i}"] = (h, w)
        if not levels or levels[-1] != (h, w):
            levels.append((h, w))
        if getattr(blk, "downsamplers", None) is not None:
            h, w = (h + 1) // 2, (w + 1) // 2  # stride-2 convolution with padding 1
    out["mid_block"] = (h, w)
    if not levels or levels[-1] != (h, w):
        levels.append((h, w))
    level = len(levels) - 1
    for i, blk in enumerate(unet.up_blocks):
        out[f"up_blocks.{i}"] = levels[level]
        if getattr(blk, "upsamplers", None) is not None:
            level = max(0, level - 1)  # the upsampler restores the size of the matching skip connection
    return out


# structural listing (no resolution) cached per UNet: name, kind, stage, block key, channels
_STRUCTURE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(unet: Any) -> list[tuple[str, str, str, str, int]]:
    cached = _STRUCTURE.get(unet)
    if cached is not None:
        return cached
    cls = _classes()
    rows: list[tuple[str, str, str, str, int]] = []
    for name, module in unet.named_modules():
        head = name.split(".", 1)[0]
        if head not in _STAGES:
            continue
        parts = name.split(".")
        block_key = head if head == "mid_block" else ".".join(parts[:2])
        stage = _STAGES[head]
        if isinstance(module, cls["attentions"]) and parts[-2] == "attentions":
            rows.append((name, "attentions", stage, block_key, int(module.out_channels)))
        elif isinstance(module, cls["block"]):
            rows.append((name, "block", stage, block_key, int(module.attn1.to_out[0].out_features)))
        elif isinstance(module, cls["attention"]) and parts[-1] in ("attn1", "attn2") and "transformer_blocks" in parts:
            ch = int(module.to_out[0].out_features)
            rows.append((name, parts[-1], stage, block_key, ch))
            if parts[-1] == "attn1":
                rows.append((f"{name}.probs", "probs", stage, block_key, -1))
        elif isinstance(module, cls["resnet"]) and parts[-2] == "resnets":
            rows.append((name, "resnet", stage, block_key, int(module.out_channels)))
    rows.sort(key=lambda r: order_key(r[0]))
    _STRUCTURE[unet] = rows
    return rows


def _check_kinds(kind: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if kind is None:
        return None
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ParameterError(f"unknown hook kind(s) {bad}; expected some of {KINDS}.")
    return kinds


def list_hook_points(
    backbone: Backbone,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> list[HookPoint]:
    """Every capturable activation of the backbone's UNet, in the order a forward pass produces them.

    Parameters
    ----------
    backbone : Backbone
    kind : str or sequence of str, optional
        Keep only these kinds (see :data:`KINDS`). ``None`` lists all, ``probs`` included.
    image_size : int or (H, W), optional
        Input size the resolutions are computed for (default: the backbone's native size).

    Returns
    -------
    list of HookPoint

    Examples
    --------
    >>> from diffcut_lab.testing import tiny_backbone
    >>> [p.name for p in list_hook_points(tiny_backbone("sd1"), kind="attn1")][:1]
    ['down_blocks.0.attentions.0.transformer_blocks.0.attn1']
    """
    kinds = _check_kinds(kind)
    size = backbone.image_size if image_size is None else image_size
    res = _resolutions(backbone.unet, backbone.latent_size(size))
    points = []
    for name, k, stage, block_key, ch in _structure(backbone.unet):
        if kinds is not None and k not in kinds:
            continue
        hw = res[block_key]
        points.append(HookPoint(name, k, stage, hw[0] * hw[1] if k == "probs" else ch, hw))
    return points


def hook_points_frame(
    backbone: Backbone,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> Any:
    """:func:`list_hook_points` as a pandas DataFrame (one row per hook point, in execution order).

    Columns: ``name, kind, stage, block, channels, height, width, tokens, order, diffcut``
    (``diffcut`` marks the layer the ``"diffcut"`` alias resolves to).
    """
    import pandas as pd

    points = list_hook_points(backbone, kind=kind, image_size=image_size)
    try:
        alias = diffcut_layer_name(backbone)
    except UnknownLayerError:
        alias = None
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "stage": p.stage,
            "block": p.name.split(".attentions")[0].split(".resnets")[0],
            "channels": p.channels,
            "height": p.resolution[0],
            "width": p.resolution[1],
            "tokens": p.tokens,
            "order": i,
            "diffcut": p.name == alias,
        }
        for i, p in enumerate(points)
    ]
    cols = ["name", "kind", "stage", "block", "channels", "height", "width", "tokens", "order", "diffcut"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------------------
# resolving names


def diffcut_layer_name(backbone: Backbone) -> str:
    """The hook name of the paper's layer for this backbone (what ``"diffcut"`` resolves to).

    An explicit ``diffcut_layer`` (from ``diffcut_lab.json``) wins. Otherwise: the last ``attn1`` of the
    last transformer block of the last attention of the lowest-resolution encoder stage that has
    attention (SSD-1B: ``down_blocks.2.attentions.1.transformer_blocks.3.attn1``; SD 1.x:
    ``down_blocks.2.attentions.1.transformer_blocks.0.attn1``).

    Raises
    ------
    UnknownLayerError
        The override names no ``attn1``-like hook point, or the encoder has no attention at all.
    """
    names = [r[0] for r in _structure(backbone.unet)]
    override = getattr(backbone, "diffcut_layer", None)
    if override:
        if override not in names:
            raise UnknownLayerError(
                f"diffcut_lab.json of {backbone.name!r} sets diffcut_layer={override!r}, which is not a hook "
                f"point of this UNet; closest: {close_names(override, names)}."
            )
        return override
    down_attn1 = [r for r in _structure(backbone.unet) if r[1] == "attn1" and r[2] == "down"]
    if not down_attn1:
        raise UnknownLayerError(
            f"{backbone.name or 'this UNet'} has no self-attention in its encoder, so there is no 'diffcut' "
            "layer; name a layer explicitly (see list_hook_points)."
        )
    res = _resolutions(backbone.unet, backbone.latent_size())
    lowest = min(res[r[3]][0] * res[r[3]][1] for r in down_attn1)
    candidates = [r for r in down_attn1 if res[r[3]][0] * res[r[3]][1] == lowest]
    return candidates[-1][0]  # already in execution order: the last one finishes last


def close_names(name: str, names: Sequence[str], n: int = 5) -> str:
    matches = difflib.get_close_matches(name, list(names), n=n, cutoff=0.5)
    if not matches:
        # fall back to names sharing the longest prefix
        matches = sorted(names, key=lambda x: -len(_common_prefix(x, name)))[:n]
    return ", ".join(repr(m) for m in matches)


def _common_prefix(a: str, b: str) -> str:
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return a[:i]


LayerSpec = str | Sequence[str] | Callable[[str], bool]


def resolve_layers(backbone: Backbone, spec: LayerSpec) -> list[str]:
    """Turn a layer specification into hook-point names.

    Parameters
    ----------
    backbone : Backbone
    spec : str, sequence of str, or callable
        - an exact hook name (``"down_blocks.2.attentions.1.transformer_blocks.3.attn1"``);
        - ``"diffcut"``: the paper's layer for this family (see :func:`diffcut_layer_name`);
        - a kind (``"attn1"``, ``"attn2"``, ``"block"``, ``"attentions"``, ``"resnet"``, ``"probs"``);
        - a glob (``"down_blocks.*.attn1"``, ``"*.probs"``);
        - ``"all"``: every hook point except ``probs`` (ask for those explicitly: they cost O(N^2));
        - a list of any of these (duplicates removed, order kept);
        - a callable ``name -> bool`` (a filter over all names, ``probs`` included).

    Returns
    -------
    list of str
        Names in the order requested (kinds, globs and ``"all"`` expand in execution order).

    Raises
    ------
    UnknownLayerError
        A name or pattern matches nothing; the message lists the closest valid names.
    """
    rows = _structure(backbone.unet)
    names = [r[0] for r in rows]
    out: list[str] = []

    def add(items: Iterable[str]) -> None:
        for it in items:
            if it not in out:
                out.append(it)

    def one(s: str) -> None:
        if not isinstance(s, str):
            raise ParameterError(f"a layer spec must be a string; got {type(s).__name__} {s!r}.")
        if s == "diffcut":
            add([diffcut_layer_name(backbone)])
        elif s == "all":
            add(r[0] for r in rows if r[1] != "probs")
        elif s in KINDS:
            add(r[0] for r in rows if r[1] == s)
        elif s in names:
            add([s])
        elif any(c in s for c in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, s)]
            if not hits:
                raise UnknownLayerError(
                    f"layer pattern {s!r} matches no hook point of {backbone.name or 'this UNet'}; "
                    f"closest names: {close_names(s.replace('*', ''), names)}. See list_hook_points(backbone) "
                    "or `diffcut-lab layers --model ...`."
                )
            add(hits)
        else:
            raise UnknownLayerError(
                f"unknown layer {s!r} for {backbone.name or 'this UNet'}; closest names: {close_names(s, names)}. "
                f"Also accepted: 'diffcut', 'all', a kind {KINDS}, or a glob like 'down_blocks.*.attn1'."
            )

    if callable(spec) and not isinstance(spec, str):
        add(n for n in names if spec(n))
        if not out:
            raise UnknownLayerError("the layer filter selected no hook point.")
    elif isinstance(spec, str):
        one(spec)
    else:
        items = list(spec)
        if not items:
            raise ParameterError("empty layer list; name at least one layer (or 'diffcut').")
        for s in items:
            one(s)
    return out
