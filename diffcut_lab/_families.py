"""The models the toolkit knows: families, the UNet classes it reads, and how to tell them apart.

Read from config files alone (no torch, no diffusers): :func:`detect_family` for a UNet config, and the
names :mod:`diffcut_lab._checkpoints` checks a model directory against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FAMILIES", "HUB_ID", "SUPPORTED_UNETS", "TRANSFORMER_DIRS", "detect_family"]

#: Families :func:`detect_family` can return.
FAMILIES = ("sdxl", "ssd-1b", "vega", "sd1", "sd2", "pocket", "unknown")

#: UNet classes whose blocks carry cross-attention transformer blocks.
SUPPORTED_UNETS = ("UNet2DConditionModel",)
#: folders of transformer-based pipelines (no UNet), named in the refusal
TRANSFORMER_DIRS = ("transformer", "prior", "decoder")
#: a Hugging Face Hub id, ``owner/name``
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: the SDXL-family members by the depth of their lowest-resolution encoder stage (SDXL's widths and
#: 2048-d cross-attention)
_SDXL_DEPTHS = {10: "sdxl", 4: "ssd-1b", 2: "vega"}


def _max_depth(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return max((_max_depth(v) for v in value), default=0)
    return int(value)


def detect_family(unet_config: Mapping[str, Any]) -> str:
    """Guess the model family from a UNet config.

    Rules: ``addition_embed_type == "text_time"`` means the SDXL family; with SDXL's widths and 2048-d
    cross-attention, the depth of the lowest-resolution encoder stage tells SDXL (10 transformer blocks),
    SSD-1B (4) and Segmind-Vega (2) apart. Otherwise ``cross_attention_dim`` 768 means SD 1.x and 1024
    SD 2.x. Anything else is ``"unknown"``.

    Parameters
    ----------
    unet_config : mapping
        ``unet.config`` or the parsed ``unet/config.json``.

    Returns
    -------
    str
        One of :data:`FAMILIES` (never ``"pocket"``, which only ``diffcut_lab.json`` sets).
    """
    cfg = dict(unet_config)
    cross = cfg.get("cross_attention_dim")
    cross = cross[-1] if isinstance(cross, (list, tuple)) else cross
    if cfg.get("addition_embed_type") == "text_time":
        tl = cfg.get("transformer_layers_per_block", 1)
        last = tl[-1] if isinstance(tl, (list, tuple)) else tl
        depth = _max_depth(last)
        widths = list(cfg.get("block_out_channels", ()))
        if cross == 2048 and widths == [320, 640, 1280]:
            return _SDXL_DEPTHS.get(depth, "sdxl")
        return "sdxl"
    if cross == 768:
        return "sd1"
    if cross == 1024:
        return "sd2"
    return "unknown"
