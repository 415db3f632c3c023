"""The pocket model's UNet in plain torch: the diffusers blocks its config uses, without importing diffusers.

Importing diffusers costs seconds (its package imports ``torch._dynamo``, peft helpers and every model
class); the pocket model needs five block types of it. This module writes them out -- the same module
paths (``down_blocks.1.attentions.0.transformer_blocks.0.attn1``), the same parameter names and
registration order (the ``safetensors`` state dict loads with ``strict=True``, and ``state_dict()``
iterates in diffusers' order), and the same operations in the same order, attention by
``F.scaled_dot_product_attention`` as diffusers' ``AttnProcessor2_0`` -- so the UNet output and every
hooked activation are the same bits as diffusers' ``UNet2DConditionModel`` (diffusers 0.42) gives on the
same weights. Written from diffusers' ``unet_2d_condition.py``, ``unet_2d_blocks.py``, ``resnet.py``,
``transformer_2d.py``, ``attention.py``, ``attention_processor.py``, ``embeddings.py``,
``downsampling.py`` and ``upsampling.py``; ``tests/test_pocket_light.py`` checks the equality.

Only the configs :func:`supports` accepts are built (the Stable Diffusion family's blocks without the
options the pocket model does not use); :func:`load_unet` reads a ``unet/`` folder, :func:`new_unet`
builds one from a config (on the ``meta`` device for a weightless outline).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Attention",
    "AttnProcessor2_0",
    "BasicTransformerBlock",
    "Config",
    "ResnetBlock2D",
    "Transformer2DModel",
    "UNet2DConditionModel",
    "load_unet",
    "new_unet",
    "supports",
]

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


class Config(dict):
    """A model's ``config.json`` as a dict that also answers attribute access (as diffusers' ``config``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


# ----------------------------------------------------------------------------------------------------
# which configs


#: what diffusers' ``UNet2DConditionModel`` takes for the settings read here when config.json omits them
_DEFAULTS: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dropout": 0.0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 1280,
    "transformer_layers_per_block": 1,
    "attention_head_dim": 8,
    "use_linear_projection": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}

#: settings this module does not implement: each must keep diffusers' default (the first value) or one of
#: the values listed
_FIXED: dict[str, tuple] = {
    "_class_name": ("UNet2DConditionModel",),
    "center_input_sample": (False,),
    "only_cross_attention": (False,),
    "mid_block_only_cross_attention": (None, False),
    "reverse_transformer_layers_per_block": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "num_attention_heads": (None,),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "num_class_embeds": (None,),
    "upcast_attention": (False,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "time_embedding_type": ("positional",),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "cross_attention_norm": (None,),
    "act_fn": ("silu", "swish"),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
}

_DOWN = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}


#: the settings a built UNet's ``config`` holds when config.json omits them (diffusers' defaults)
_CONFIG_DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    **_DEFAULTS,
    **{k: allowed[0] for k, allowed in _FIXED.items() if not k.startswith("_")},
}


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    return cfg.get(key, _DEFAULTS.get(key))


def _per_block(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def supports(config: Mapping[str, Any]) -> bool:
    """Whether this module builds the UNet of ``config`` (else diffusers has to).

    The blocks ``DownBlock2D``, ``CrossAttnDownBlock2D``, ``UNetMidBlock2DCrossAttn``,
    ``CrossAttnUpBlock2D`` and ``UpBlock2D`` with sinusoidal time embedding, SiLU, group norms, default
    (non-gated) attention with GEGLU feed-forward, and no class, added or encoder-projection embeddings.
    """
    cfg = dict(config)
    for key, allowed in _FIXED.items():
        if key in cfg and cfg[key] not in allowed:
            return False
    downs, ups = list(_get(cfg, "down_block_types")), list(_get(cfg, "up_block_types"))
    n = len(downs)
    if not downs or len(ups) != n or any(b not in _DOWN for b in downs) or any(b not in _UP for b in ups):
        return False
    if _get(cfg, "norm_num_groups") is None or _get(cfg, "cross_attention_dim") is None:
        return False
    try:
        per_block = [
            _per_block(_get(cfg, k), n)
            for k in ("block_out_channels", "layers_per_block", "attention_head_dim", "cross_attention_dim")
        ]
        depths = _per_block(_get(cfg, "transformer_layers_per_block"), n)
    except TypeError:
        return False
    if any(len(v) != n for v in (*per_block, depths)):
        return False
    return all(isinstance(d, int) for d in depths) and all(isinstance(h, int) for h in per_block[2])


# ----------------------------------------------------------------------------------------------------
# attention


class AttnProcessor2_0:
    """Scaled-dot-product attention, as diffusers' ``AttnProcessor2_0`` computes it.

    Called as ``processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)``: the
    interface :class:`diffcut_lab._diffusers.ProbsProcessor` wraps.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention with ``to_q``, ``to_k``, ``to_v`` and ``to_out.0``.

    The attributes and methods diffusers' processors read are here (``heads``, ``scale``, ``group_norm``,
    ``spatial_norm``, ``norm_q``/``norm_k``, ``norm_cross``, :meth:`prepare_attention_mask`), and the
    processor is swapped the diffusers way (:meth:`set_processor`).
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inner_dim = dim_head * heads
        self.query_dim = query_dim
        self.is_cross_attention = cross_attention_dim is not None
        self.cross_attention_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.rescale_output_factor = 1.0
        self.residual_connection = False
        self.scale_qk = True
        self.scale = dim_head**-0.5
        self.heads = heads
        self.group_norm = None
        self.spatial_norm = None
        self.norm_q = None
        self.norm_k = None
        self.norm_cross = None
        self.to_q = nn.Linear(query_dim, self.inner_dim, bias=False)
        self.to_k = nn.Linear(self.cross_attention_dim, self.inner_dim, bias=False)
        self.to_v = nn.Linear(self.cross_attention_dim, self.inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(self.inner_dim, query_dim, bias=True), nn.Dropout(dropout)])
        self.processor: Any = AttnProcessor2_0()

    def set_processor(self, processor: Any) -> None:
        """Use ``processor`` (a callable ``(attn, hidden_states, encoder_hidden_states, attention_mask,
        temb)``) from now on."""
        self.processor = processor

    def get_processor(self) -> Any:
        """The processor in use."""
        return self.processor

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **cross_attention_kwargs: Any,
    ) -> torch.Tensor:
        return self.processor(
            self,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **cross_attention_kwargs,
        )

    def prepare_attention_mask(
        self, attention_mask: torch.Tensor, target_length: int, batch_size: int, out_dim: int = 3
    ) -> torch.Tensor:
        """The mask padded to ``target_length`` and repeated per head (diffusers' method of that name)."""
        head_size = self.heads
        if attention_mask.shape[-1] != target_length:
            attention_mask = F.pad(attention_mask, (0, target_length), value=0.0)
        if out_dim == 3:
            if attention_mask.shape[0] < batch_size * head_size:
                attention_mask = attention_mask.repeat_interleave(
                    head_size, dim=0, output_size=attention_mask.shape[0] * head_size
                )
        elif out_dim == 4:
            attention_mask = attention_mask.unsqueeze(1)
            attention_mask = attention_mask.repeat_interleave(
                head_size, dim=1, output_size=attention_mask.shape[1] * head_size
            )
        return attention_mask

    def norm_encoder_hidden_states(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Never called: this attention has no cross-attention norm (``norm_cross`` is None)."""
        raise AssertionError("self.norm_cross must be defined to call self.norm_encoder_hidden_states")


class GEGLU(nn.Module):
    """``proj`` to twice the width, then ``x * gelu(gate)``."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.proj(hidden_states)
        hidden_states, gate = hidden_states.chunk(2, dim=-1)
        return hidden_states * F.gelu(gate)


class FeedForward(nn.Module):
    """``net``: GEGLU, dropout, linear."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4) -> None:
        super().__init__()
        inner_dim = int(dim * mult)
        self.net = nn.ModuleList([GEGLU(dim, inner_dim), nn.Dropout(dropout), nn.Linear(inner_dim, dim)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            hidden_states = module(hidden_states)
        return hidden_states


class BasicTransformerBlock(nn.Module):
    """Layer norm, self-attention ``attn1``, layer norm, cross-attention ``attn2``, layer norm, ``ff``."""

    def __init__(
        self, dim: int, num_attention_heads: int, attention_head_dim: int, *, cross_attention_dim: int,
        dropout: float = 0.0, norm_eps: float = 1e-5,
    ) -> None:  # fmt: skip
        super().__init__()
        self.dim = dim
        self.num_attention_heads = num_attention_heads
        self.attention_head_dim = attention_head_dim
        self.only_cross_attention = False
        self.pos_embed = None
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=True, eps=norm_eps)
        self.attn1 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, norm_eps, True)
        self.attn2 = Attention(
            dim, cross_attention_dim, heads=num_attention_heads, dim_head=attention_head_dim, dropout=dropout
        )
        self.norm3 = nn.LayerNorm(dim, norm_eps, True)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        norm_hidden_states = self.norm1(hidden_states)
        attn_output = self.attn1(
            norm_hidden_states, encoder_hidden_states=None, attention_mask=attention_mask
        )
        hidden_states = attn_output + hidden_states
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.squeeze(1)
        norm_hidden_states = self.norm2(hidden_states)
        attn_output = self.attn2(
            norm_hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
        )
        hidden_states = attn_output + hidden_states
        norm_hidden_states = self.norm3(hidden_states)
        ff_output = self.ff(norm_hidden_states)
        hidden_states = ff_output + hidden_states
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.squeeze(1)
        return hidden_states


class Transformer2DModel(nn.Module):
    """Group norm, ``proj_in``, the transformer blocks over ``h * w`` tokens, ``proj_out``, residual.

    Returns ``(output,)``, as diffusers' does with ``return_dict=False``.
    """

    def __init__(
        self, num_attention_heads: int, attention_head_dim: int, in_channels: int, *, num_layers: int,
        cross_attention_dim: int, norm_num_groups: int, use_linear_projection: bool, dropout: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.use_linear_projection = use_linear_projection
        self.num_attention_heads = num_attention_heads
        self.attention_head_dim = attention_head_dim
        self.inner_dim = num_attention_heads * attention_head_dim
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=1e-6, affine=True)
        if use_linear_projection:
            self.proj_in: nn.Module = nn.Linear(in_channels, self.inner_dim)
        else:
            self.proj_in = nn.Conv2d(in_channels, self.inner_dim, kernel_size=1, stride=1, padding=0)
        block = {"cross_attention_dim": cross_attention_dim, "dropout": dropout}
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(self.inner_dim, num_attention_heads, attention_head_dim, **block)
                for _ in range(num_layers)
            ]
        )
        if use_linear_projection:
            self.proj_out: nn.Module = nn.Linear(self.inner_dim, self.out_channels)
        else:
            self.proj_out = nn.Conv2d(self.inner_dim, self.out_channels, kernel_size=1, stride=1, padding=0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        if attention_mask is not None and attention_mask.ndim == 2:
            attention_mask = (1 - attention_mask.to(hidden_states.dtype)) * -10000.0
            attention_mask = attention_mask.unsqueeze(1)
        if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
            encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
            encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
        batch_size, _, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        if not self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_size, height * width, inner_dim)
        else:
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_size, height * width, inner_dim)
            hidden_states = self.proj_in(hidden_states)
        for block in self.transformer_blocks:
            hidden_states = block(
                hidden_states,
                attention_mask=attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
            )
        if not self.use_linear_projection:
            hidden_states = (
                hidden_states.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
            )
            hidden_states = self.proj_out(hidden_states)
        else:
            hidden_states = self.proj_out(hidden_states)
            hidden_states = (
                hidden_states.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
            )
        return (hidden_states + residual,)


# ----------------------------------------------------------------------------------------------------
# resnets, resampling, time embedding


class ResnetBlock2D(nn.Module):
    """Norm, SiLU, conv, + projected time embedding, norm, SiLU, dropout, conv, + (1x1-projected) input."""

    def __init__(
        self, *, in_channels: int, out_channels: int, temb_channels: int, eps: float, groups: int,
        dropout: float = 0.0, output_scale_factor: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(num_groups=groups, num_channels=out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=True
            )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden_states = input_tensor
        hidden_states = self.norm1(hidden_states)
        hidden_states = self.nonlinearity(hidden_states)
        hidden_states = self.conv1(hidden_states)
        temb = self.nonlinearity(temb)
        temb = self.time_emb_proj(temb)[:, :, None, None]
        hidden_states = hidden_states + temb
        hidden_states = self.norm2(hidden_states)
        hidden_states = self.nonlinearity(hidden_states)
        hidden_states = self.dropout(hidden_states)
        hidden_states = self.conv2(hidden_states)
        if self.conv_shortcut is not None:
            if self.training:
                input_tensor = input_tensor.contiguous()
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden_states) / self.output_scale_factor


class Downsample2D(nn.Module):
    """A stride-2 3x3 convolution (``conv``)."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            hidden_states = F.pad(hidden_states, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(hidden_states)


class Upsample2D(nn.Module):
    """Nearest-neighbour upsampling by 2 (or to ``output_size``), then a 3x3 convolution (``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor, output_size: Any = None) -> torch.Tensor:
        if hidden_states.shape[0] >= 64:
            hidden_states = hidden_states.contiguous()
        scale_factor = (
            2 if output_size is None else max(f / s for f, s in zip(output_size, hidden_states.shape[-2:]))
        )
        if hidden_states.numel() * scale_factor > pow(2, 31):
            hidden_states = hidden_states.contiguous()
        if output_size is None:
            hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        else:
            hidden_states = F.interpolate(hidden_states, size=output_size, mode="nearest")
        return self.conv(hidden_states)


def timestep_embedding(
    timesteps: torch.Tensor, embedding_dim: int, flip_sin_to_cos: bool, downscale_freq_shift: float
) -> torch.Tensor:
    """Sinusoidal embedding ``(N, embedding_dim)`` of 1-D timesteps (diffusers' ``get_timestep_embedding``)."""
    half_dim = embedding_dim // 2
    exponent = -math.log(10000) * torch.arange(
        start=0, end=half_dim, dtype=torch.float32, device=timesteps.device
    )
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = 1 * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class Timesteps(nn.Module):
    """The sinusoidal embedding of timesteps (no weights)."""

    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(
            timesteps, self.num_channels, self.flip_sin_to_cos, self.downscale_freq_shift
        )


class TimestepEmbedding(nn.Module):
    """``linear_1``, SiLU, ``linear_2``."""

    def __init__(self, in_channels: int, time_embed_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim, True)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim, True)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))


# ----------------------------------------------------------------------------------------------------
# blocks


class _Settings(NamedTuple):
    """What every block of one UNet shares."""

    temb: int
    eps: float
    groups: int
    dropout: float
    scale: float
    linear: bool


def _resnet(s: _Settings, cin: int, cout: int, scale: float | None = None) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=cin, out_channels=cout, temb_channels=s.temb, eps=s.eps, groups=s.groups, dropout=s.dropout,
        output_scale_factor=s.scale if scale is None else scale,
    )  # fmt: skip


def _transformer(s: _Settings, ch: int, heads: int, depth: int, cross: int) -> Transformer2DModel:
    return Transformer2DModel(
        heads, ch // heads, ch, num_layers=depth, cross_attention_dim=cross, norm_num_groups=s.groups,
        use_linear_projection=s.linear, dropout=s.dropout,
    )  # fmt: skip


class _DownBlock(nn.Module):
    """What both down blocks run: each resnet (then its transformer, in a cross-attention block), then the
    downsampler; returns the features and every intermediate output (the skip connections)."""

    has_cross_attention = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple]:
        output_states: tuple = ()
        attentions = self.attentions if self.has_cross_attention else [None] * len(self.resnets)
        for resnet, attn in zip(self.resnets, attentions):
            hidden_states = resnet(hidden_states, temb)
            if attn is not None:
                hidden_states = attn(hidden_states, encoder_hidden_states=encoder_hidden_states)[0]
            output_states = (*output_states, hidden_states)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            output_states = (*output_states, hidden_states)
        return hidden_states, output_states


class DownBlock2D(_DownBlock):
    """Resnets, then a downsampler (all but the last stage)."""

    def __init__(
        self, s: _Settings, cin: int, cout: int, layers: int, downsample: bool, padding: int
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_resnet(s, cin if i == 0 else cout, cout) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout, padding)]) if downsample else None


class CrossAttnDownBlock2D(_DownBlock):
    """(Resnet, transformer) pairs, then a downsampler (all but the last stage)."""

    has_cross_attention = True

    def __init__(
        self, s: _Settings, cin: int, cout: int, layers: int, downsample: bool, padding: int, *, heads: int,
        depth: int, cross: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_attention_heads = heads
        self.attentions = nn.ModuleList([_transformer(s, cout, heads, depth, cross) for _ in range(layers)])
        self.resnets = nn.ModuleList([_resnet(s, cin if i == 0 else cout, cout) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout, padding)]) if downsample else None


class UNetMidBlock2DCrossAttn(nn.Module):
    """Resnet, transformer, resnet."""

    def __init__(self, s: _Settings, ch: int, *, heads: int, depth: int, cross: int, scale: float) -> None:
        super().__init__()
        self.has_cross_attention = True
        self.num_attention_heads = heads
        self.in_channels = self.out_channels = ch
        self.attentions = nn.ModuleList([_transformer(s, ch, heads, depth, cross)])
        self.resnets = nn.ModuleList([_resnet(s, ch, ch, scale), _resnet(s, ch, ch, scale)])

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            hidden_states = attn(hidden_states, encoder_hidden_states=encoder_hidden_states)[0]
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


def _up_resnets(s: _Settings, cin: int, cout: int, prev: int, layers: int) -> nn.ModuleList:
    """The resnets of an up block: each takes the running features and one skip connection."""
    return nn.ModuleList(
        [
            _resnet(s, (prev if i == 0 else cout) + (cin if i == layers - 1 else cout), cout)
            for i in range(layers)
        ]
    )


class _UpBlock(nn.Module):
    """What both up blocks run: for each resnet, the last skip connection concatenated to the features, the
    resnet (then its transformer, in a cross-attention block); then the upsampler."""

    has_cross_attention = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        res_hidden_states_tuple: tuple,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        upsample_size: Any = None,
    ) -> torch.Tensor:
        attentions = self.attentions if self.has_cross_attention else [None] * len(self.resnets)
        for resnet, attn in zip(self.resnets, attentions):
            res_hidden_states = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states = torch.cat([hidden_states, res_hidden_states], dim=1)
            hidden_states = resnet(hidden_states, temb)
            if attn is not None:
                hidden_states = attn(hidden_states, encoder_hidden_states=encoder_hidden_states)[0]
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


class UpBlock2D(_UpBlock):
    """Resnets over (features, skip) concatenations, then an upsampler (all but the last stage)."""

    def __init__(
        self, s: _Settings, cin: int, cout: int, prev: int, layers: int, upsample: bool, idx: int
    ) -> None:
        super().__init__()
        self.resnets = _up_resnets(s, cin, cout, prev, layers)
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None
        self.resolution_idx = idx


class CrossAttnUpBlock2D(_UpBlock):
    """(Resnet, transformer) pairs over (features, skip) concatenations, then an upsampler."""

    has_cross_attention = True

    def __init__(
        self, s: _Settings, cin: int, cout: int, prev: int, layers: int, upsample: bool, idx: int, *,
        heads: int, depth: int, cross: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_attention_heads = heads
        self.attentions = nn.ModuleList([_transformer(s, cout, heads, depth, cross) for _ in range(layers)])
        self.resnets = _up_resnets(s, cin, cout, prev, layers)
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None
        self.resolution_idx = idx


# ----------------------------------------------------------------------------------------------------
# the UNet


class UNet2DConditionOutput(NamedTuple):
    """What :meth:`UNet2DConditionModel.forward` returns with ``return_dict=True``."""

    sample: torch.Tensor


class UNet2DConditionModel(nn.Module):
    """diffusers' ``UNet2DConditionModel`` for the configs :func:`supports` accepts.

    ``config`` is the model's ``config.json`` (a :class:`Config`); modules, parameters and their order
    are diffusers'.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        if not supports(config):
            raise ValueError("this UNet config uses blocks or options diffcut_lab.pocket.unet does not build")
        self.config = cfg = Config({**_CONFIG_DEFAULTS, **config})
        widths = [int(c) for c in _get(cfg, "block_out_channels")]
        n = len(widths)
        layers = [int(v) for v in _per_block(_get(cfg, "layers_per_block"), n)]
        heads = [int(v) for v in _per_block(_get(cfg, "attention_head_dim"), n)]
        cross = [int(v) for v in _per_block(_get(cfg, "cross_attention_dim"), n)]
        depth = [int(v) for v in _per_block(_get(cfg, "transformer_layers_per_block"), n)]
        self.sample_size = cfg.get("sample_size")
        k_in, k_out = int(_get(cfg, "conv_in_kernel")), int(_get(cfg, "conv_out_kernel"))
        self.conv_in = nn.Conv2d(
            int(_get(cfg, "in_channels")), widths[0], kernel_size=k_in, padding=(k_in - 1) // 2
        )
        time_embed_dim = _get(cfg, "time_embedding_dim") or widths[0] * 4
        self.time_proj = Timesteps(widths[0], bool(_get(cfg, "flip_sin_to_cos")), _get(cfg, "freq_shift"))
        self.time_embedding = TimestepEmbedding(widths[0], time_embed_dim)
        s = _Settings(
            temb=time_embed_dim, eps=_get(cfg, "norm_eps"), groups=int(_get(cfg, "norm_num_groups")),
            dropout=_get(cfg, "dropout"), scale=_get(cfg, "resnet_out_scale_factor"),
            linear=bool(_get(cfg, "use_linear_projection")),
        )  # fmt: skip
        self.down_blocks = nn.ModuleList([])
        self.up_blocks = nn.ModuleList([])  # registered before the mid block, as diffusers does
        out = widths[0]
        for i, kind in enumerate(_get(cfg, "down_block_types")):
            cin, out = out, widths[i]
            args = (s, cin, out, layers[i], i < n - 1, int(_get(cfg, "downsample_padding")))
            if _DOWN[kind]:
                self.down_blocks.append(
                    CrossAttnDownBlock2D(*args, heads=heads[i], depth=depth[i], cross=cross[i])
                )
            else:
                self.down_blocks.append(DownBlock2D(*args))
        self.mid_block = UNetMidBlock2DCrossAttn(
            s,
            widths[-1],
            heads=heads[-1],
            depth=depth[-1],
            cross=cross[-1],
            scale=_get(cfg, "mid_block_scale_factor"),
        )
        self.num_upsamplers = 0
        r_widths, r_heads, r_layers, r_cross = widths[::-1], heads[::-1], layers[::-1], cross[::-1]
        r_depth = depth[::-1]
        out = r_widths[0]
        for i, kind in enumerate(_get(cfg, "up_block_types")):
            upsample = i < n - 1
            self.num_upsamplers += int(upsample)
            prev, out, cin = out, r_widths[i], r_widths[min(i + 1, n - 1)]
            args = (s, cin, out, prev, r_layers[i] + 1, upsample, i)
            if _UP[kind]:
                self.up_blocks.append(
                    CrossAttnUpBlock2D(*args, heads=r_heads[i], depth=r_depth[i], cross=r_cross[i])
                )
            else:
                self.up_blocks.append(UpBlock2D(*args))
        self.conv_norm_out = nn.GroupNorm(num_channels=widths[0], num_groups=s.groups, eps=s.eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(
            widths[0], int(_get(cfg, "out_channels")), kernel_size=k_out, padding=(k_out - 1) // 2
        )

    @property
    def attn_processors(self) -> dict[str, Any]:
        """``{"<attention path>.processor": processor}``, as diffusers names them."""
        return {
            f"{name}.processor": m.processor for name, m in self.named_modules() if isinstance(m, Attention)
        }

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The parameters' device."""
        return next(self.parameters()).device

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """The noise prediction for ``sample`` at ``timestep`` conditioned on ``encoder_hidden_states``.

        ``added_cond_kwargs`` is accepted for the caller's convenience and must be None (this UNet has no
        added conditioning).
        """
        if added_cond_kwargs:
            raise ValueError("this UNet takes no added conditioning (added_cond_kwargs)")
        default_overall_up_factor = 2**self.num_upsamplers
        forward_upsample_size = any(dim % default_overall_up_factor != 0 for dim in sample.shape[-2:])
        upsample_size = None
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            dtype = torch.float64 if isinstance(timestep, float) else torch.int64
            if sample.device.type == "mps":
                dtype = torch.float32 if dtype == torch.float64 else torch.int32
            timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps.expand(sample.shape[0])
        t_emb = self.time_proj(timesteps).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        sample = self.conv_in(sample)
        down_block_res_samples: tuple = (sample,)
        for block in self.down_blocks:
            sample, res_samples = block(sample, emb, encoder_hidden_states)
            down_block_res_samples += res_samples
        sample = self.mid_block(sample, emb, encoder_hidden_states)
        for i, block in enumerate(self.up_blocks):
            is_final_block = i == len(self.up_blocks) - 1
            res_samples = down_block_res_samples[-len(block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            sample = block(sample, res_samples, emb, encoder_hidden_states, upsample_size)
        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        sample = self.conv_out(sample)
        if not return_dict:
            return (sample,)
        return UNet2DConditionOutput(sample=sample)


# ----------------------------------------------------------------------------------------------------
# building and loading


def read_config(folder: str | Path) -> Config:
    """The ``config.json`` of a ``unet/`` folder."""
    return Config(json.loads((Path(folder) / "config.json").read_text()))


def new_unet(config: Mapping[str, Any], *, empty: bool = False) -> UNet2DConditionModel:
    """A UNet from its config: default-initialised weights, or none (``empty``: on the meta device)."""
    if empty:
        with torch.device("meta"):
            return UNet2DConditionModel(config)
    return UNet2DConditionModel(config)


def load_unet(
    folder: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> UNet2DConditionModel:
    """The UNet of a ``unet/`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), with its
    weights (state dict loaded with ``strict=True``), on ``device`` in ``dtype``, in eval mode without
    gradients.

    Raises
    ------
    OSError, ValueError
        A file is missing or unreadable, or the weights do not fit the config.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    unet = new_unet(read_config(folder), empty=True)  # no random initialisation: the weights replace it
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise OSError(f"cannot read {folder / WEIGHTS_FILE}: {err}") from err
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"the weights in {folder} do not fit its config.json: {err}") from err
    return unet.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
