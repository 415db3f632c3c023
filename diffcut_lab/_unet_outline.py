"""UNet outlines: a UNet's hook points in forward order and where it changes resolution, from its modules
or from its config alone.

:func:`unet_outline` reads a built diffusers UNet; :func:`outline_from_config` reads the Stable Diffusion
family's ``unet/config.json`` without torch or diffusers (what ``diffcut-lab layers`` uses to start fast).
:func:`order_key` orders hook points as a forward fires them. The public names are
:mod:`diffcut_lab.hook_points`'.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Row",
    "UNetOutline",
    "block_resolutions",
    "forward_order",
    "layer_stage",
    "order_key",
    "outline_from_config",
    "unet_outline",
]

#: the UNet's top-level module of each stage (the first part of a hook point's name) -> the stage
_STAGES = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
#: the stages in the order a forward runs them (for :func:`order_key`)
_STAGE_RANK = {"down": 0, "mid": 1, "up": 2}
#: inside a transformer block, self-attention finishes before cross-attention (the block itself, 9, last)
_SUB_RANK = {"attn1": 0, "attn2": 1}


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


#: one hook point before resolutions: (name, kind, stage, block key, channels); channels -1 for probs
Row = tuple[str, str, str, str, int]


@dataclass(frozen=True)
class UNetOutline:
    """What hook points need of a UNet: its hook points in forward order and where it changes resolution.

    Made from the modules of a built UNet (:func:`unet_outline`) or from a ``UNet2DConditionModel`` config
    alone (:func:`outline_from_config`, which imports neither torch nor diffusers); both give the same
    outline for the configs the latter reads.

    Attributes
    ----------
    rows : tuple of (name, kind, stage, block, channels)
        Every hook point in firing order; ``block`` is ``down_blocks.i``, ``mid_block`` or ``up_blocks.i``;
        ``channels`` is ``-1`` for ``probs`` (their row length depends on the input size).
    downsamples : tuple of bool
        Whether each down block ends with a downsampler.
    upsamples : tuple of bool
        Whether each up block ends with an upsampler.
    """

    rows: tuple[Row, ...]
    downsamples: tuple[bool, ...]
    upsamples: tuple[bool, ...]


def block_resolutions(outline: UNetOutline, latent: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """``(h, w)`` at each down/mid/up block for a UNet input of ``latent`` size."""
    h, w = latent
    out: dict[str, tuple[int, int]] = {}
    levels: list[tuple[int, int]] = []
    for i, down in enumerate(outline.downsamples):
        out[f"down_blocks.{i}"] = (h, w)
        if not levels or levels[-1] != (h, w):
            levels.append((h, w))
        if down:
            h, w = (h + 1) // 2, (w + 1) // 2  # stride-2 convolution with padding 1
    out["mid_block"] = (h, w)
    if not levels or levels[-1] != (h, w):
        levels.append((h, w))
    level = len(levels) - 1
    for i, up in enumerate(outline.upsamples):
        out[f"up_blocks.{i}"] = levels[level]
        if up:
            level = max(0, level - 1)  # the upsampler restores the size of the matching skip connection
    return out


# outlines of built UNets, cached per module (the walk over named_modules costs a few ms on SDXL)
_OUTLINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unet_outline(unet: Any) -> UNetOutline:
    """The :class:`UNetOutline` of a built diffusers UNet, read from its modules (cached per UNet).

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel or UNetOutline
        An outline is returned as it is.
    """
    if isinstance(unet, UNetOutline):
        return unet
    cached = _OUTLINES.get(unet)
    if cached is not None:
        return cached
    from ._diffusers import module_classes

    cls = module_classes()
    rows: list[Row] = []
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
        elif (
            isinstance(module, cls["attention"])
            and parts[-1] in ("attn1", "attn2")
            and "transformer_blocks" in parts
        ):
            ch = int(module.to_out[0].out_features)
            rows.append((name, parts[-1], stage, block_key, ch))
            if parts[-1] == "attn1":
                rows.append((f"{name}.probs", "probs", stage, block_key, -1))
        elif isinstance(module, cls["resnet"]) and parts[-2] == "resnets":
            rows.append((name, "resnet", stage, block_key, int(module.out_channels)))
    rows.sort(key=lambda r: order_key(r[0]))
    outline = UNetOutline(
        rows=tuple(rows),
        downsamples=tuple(getattr(b, "downsamplers", None) is not None for b in unet.down_blocks),
        upsamples=tuple(getattr(b, "upsamplers", None) is not None for b in unet.up_blocks),
    )
    _OUTLINES[unet] = outline
    return outline


# The blocks outline_from_config knows, as UNet2DConditionModel builds them (diffusers 0.2x-0.4x): block
# type -> whether it has attentions. Any other block (or option that changes the module tree) is read from
# the built modules instead.
_CONFIG_DOWN = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_CONFIG_UP = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
_CONFIG_MID = {"UNetMidBlock2DCrossAttn": (1, True), "UNetMidBlock2D": (0, False), None: None}
# settings that would change the module tree away from what outline_from_config writes, with the values it reads
_CONFIG_PLAIN = {
    "dual_cross_attention": (False, None),
    "attention_type": ("default", None),
    "num_attention_heads": (None,),
}


def _per_block(value: Any, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries for {n} blocks")
        return list(value)
    return [value] * n


def _per_layer(value: Any, n: int) -> list[int]:
    """Transformer depth of each of the ``n`` layers of a block (an int, or one int per layer)."""
    if isinstance(value, (list, tuple)):
        if len(value) < n:
            raise ValueError("fewer transformer depths than layers")
        return [int(v) for v in value[:n]]
    return [int(value)] * n


def outline_from_config(config: Mapping[str, Any]) -> UNetOutline | None:
    """The :class:`UNetOutline` of a ``UNet2DConditionModel`` from its config alone (no torch, no diffusers).

    It reads the Stable Diffusion family's blocks (``DownBlock2D``, ``CrossAttnDownBlock2D``,
    ``UNetMidBlock2DCrossAttn``, ``UNetMidBlock2D``, ``UpBlock2D``, ``CrossAttnUpBlock2D``), with per-block
    and per-layer transformer depths (SDXL, SSD-1B, Vega) and the pocket model. For any other block or
    setting it returns ``None``: build the UNet (on the meta device) and use :func:`unet_outline`.

    Parameters
    ----------
    config : mapping
        The UNet's ``config.json`` contents.

    Returns
    -------
    UNetOutline or None

    Examples
    --------
    >>> cfg = {"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    ...        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1}
    >>> outline_from_config(cfg).rows[0]
    ('down_blocks.0.resnets.0', 'resnet', 'down', 'down_blocks.0', 32)
    """
    cfg = dict(config)
    if not _config_is_known(cfg):
        return None
    n = len(cfg["down_block_types"])
    try:
        rows = _config_rows(cfg, n)
    except (KeyError, TypeError, ValueError):
        return None  # a config this reader does not understand: the built modules will tell
    if rows is None:
        return None
    rows.sort(key=lambda r: order_key(r[0]))
    return UNetOutline(
        rows=tuple(rows),
        downsamples=tuple(i < n - 1 for i in range(n)),
        upsamples=tuple(i < n - 1 for i in range(n)),
    )


def _config_is_known(cfg: Mapping[str, Any]) -> bool:
    """Whether every block type and setting of a UNet config is one :func:`outline_from_config` reads."""
    if cfg.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        return False
    if "cross_attention_dim" in cfg and cfg["cross_attention_dim"] is None:
        return False  # transformer blocks without attn2
    if any(cfg.get(key, accepted[0]) not in accepted for key, accepted in _CONFIG_PLAIN.items()):
        return False
    downs = list(cfg.get("down_block_types", ()))
    ups = list(cfg.get("up_block_types", ()))
    return (
        bool(downs)
        and len(ups) == len(downs)
        and all(b in _CONFIG_DOWN for b in downs)
        and all(b in _CONFIG_UP for b in ups)
        and cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") in _CONFIG_MID
    )


def _attention_rows(prefix: str, stage: str, block: str, width: int, n_heads: int, n_tb: int) -> list[Row]:
    """The rows of one ``Transformer2DModel`` at ``prefix`` with ``n_tb`` transformer blocks."""
    inner = n_heads * (width // n_heads)  # Transformer2DModel(n_heads, width // n_heads, width)
    rows: list[Row] = [(prefix, "attentions", stage, block, width)]
    for k in range(n_tb):
        tb = f"{prefix}.transformer_blocks.{k}"
        rows.append((tb, "block", stage, block, inner))
        rows.append((f"{tb}.attn1", "attn1", stage, block, inner))
        rows.append((f"{tb}.attn1.probs", "probs", stage, block, -1))
        rows.append((f"{tb}.attn2", "attn2", stage, block, inner))
    return rows


def _config_rows(cfg: Mapping[str, Any], n: int) -> list[Row] | None:
    """The rows of a known config's ``n`` down blocks, mid block and up blocks (unsorted); None when its
    widths or heads do not fit. Raises KeyError, TypeError or ValueError on what it cannot read."""
    downs, ups = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    widths = [int(c) for c in cfg["block_out_channels"]]
    heads = _per_block(cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8), n, "heads")
    layers = [int(v) for v in _per_block(cfg.get("layers_per_block", 2), n, "layers_per_block")]
    depth = _per_block(cfg.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block")
    reverse = cfg.get("reverse_transformer_layers_per_block")
    up_depth = list(reversed(depth)) if reverse is None else _per_block(reverse, n, "reverse depths")
    if len(widths) != n or any(h is None or int(h) < 1 for h in heads):
        return None
    rows: list[Row] = []
    for i, kind in enumerate(downs):
        block = f"down_blocks.{i}"
        per_layer = _per_layer(depth[i], layers[i]) if _CONFIG_DOWN[kind] else []
        for j in range(layers[i]):
            rows.append((f"{block}.resnets.{j}", "resnet", "down", block, widths[i]))
            if _CONFIG_DOWN[kind]:
                rows += _attention_rows(
                    f"{block}.attentions.{j}", "down", block, widths[i], int(heads[i]), per_layer[j]
                )
    mid = _CONFIG_MID[cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")]
    if mid is not None:
        n_attn, has_attn = mid
        for j in range(n_attn + 1):
            rows.append((f"mid_block.resnets.{j}", "resnet", "mid", "mid_block", widths[-1]))
        if has_attn:
            mid_depth = _per_layer(depth[-1], 1)[0]
            rows += _attention_rows(
                "mid_block.attentions.0", "mid", "mid_block", widths[-1], int(heads[-1]), mid_depth
            )
    r_widths, r_heads, r_layers = widths[::-1], [int(h) for h in heads[::-1]], layers[::-1]
    for i, kind in enumerate(ups):
        block = f"up_blocks.{i}"
        per_layer = _per_layer(up_depth[i], r_layers[i] + 1) if _CONFIG_UP[kind] else []
        for j in range(r_layers[i] + 1):
            rows.append((f"{block}.resnets.{j}", "resnet", "up", block, r_widths[i]))
            if _CONFIG_UP[kind]:
                rows += _attention_rows(
                    f"{block}.attentions.{j}", "up", block, r_widths[i], r_heads[i], per_layer[j]
                )
    return rows
