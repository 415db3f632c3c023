"""The pocket model: a small pixel-space diffusion UNet (diffusers) with a learned null-prompt embedding.

The architecture is a plain :class:`diffusers.UNet2DConditionModel` so that every tool of the package
(hooks, layer names, the "diffcut" alias, noising, conditioning) runs through the same code path as for
Stable Diffusion models. It works directly on RGB pixels scaled to [-1, 1] (no VAE), at 128 x 128:

======================  ===========  ================================  ===========================
stage                   resolution   blocks                            attention (attn1 / attn2)
======================  ===========  ================================  ===========================
``down_blocks.0``       128 x 128    ResNet, downsample                none
``down_blocks.1``        64 x 64     ResNet + Transformer, downsample  yes (4096 tokens)
``down_blocks.2``        32 x 32     ResNet + Transformer              yes (1024 tokens) <- "diffcut"
``mid_block``            32 x 32     ResNet + Transformer + ResNet     yes
``up_blocks.0``          32 x 32     2 x (ResNet + Transformer), up    yes
``up_blocks.1/2``     64, 128        ResNets, up                       none (keeps CPU training cheap)
======================  ===========  ================================  ===========================

The "diffcut" layer (last ``attn1`` of the lowest-resolution encoder stage with attention) is
``down_blocks.2.attentions.0.transformer_blocks.0.attn1``: a 32 x 32 grid, as in the paper's SSD-1B at
1024 pixels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from . import WEIGHTS_DIR

__all__ = [
    "WEIGHTS_DIR",
    "PocketConfig",
    "PocketDenoiser",
    "build_scheduler",
    "build_unet",
    "diffcut_layer_name",
    "export_weights",
]


@dataclass(frozen=True)
class PocketConfig:
    """Architecture and noise schedule of a pocket UNet.

    Parameters
    ----------
    image_size : int
        Native input side in pixels (the model is fully convolutional plus global attention; other sizes
        run but were not trained).
    block_out_channels : tuple of int
        Channels of the three encoder stages.
    down_block_types, up_block_types : tuple of str
        diffusers block class names.
    layers_per_block : int
        ResNet (+ transformer) layers per encoder stage.
    transformer_layers_per_block : int
        Transformer blocks inside each attention module.
    attention_heads : int
        Heads per attention layer (diffusers calls this ``attention_head_dim`` in this class).
    cross_attention_dim : int
        Width D of the null-prompt embedding (1, L, D).
    prompt_length : int
        Token count L of the null-prompt embedding.
    norm_num_groups : int
        GroupNorm groups.
    num_train_timesteps, beta_schedule, beta_start, beta_end :
        DDPM noise schedule; the default equals Stable Diffusion's (so t=50 adds the same noise level).
    """

    image_size: int = 128
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    transformer_layers_per_block: int = 1
    attention_heads: int = 4
    cross_attention_dim: int = 64
    prompt_length: int = 8
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self) -> None:
        if len(self.block_out_channels) != len(self.down_block_types) or len(self.up_block_types) != len(
            self.down_block_types
        ):
            raise ParameterError(
                "block_out_channels, down_block_types and up_block_types need the same length, got "
                f"{len(self.block_out_channels)}, {len(self.down_block_types)}, {len(self.up_block_types)}"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ParameterError(
                f"every block width must be divisible by norm_num_groups={self.norm_num_groups}, "
                f"got {self.block_out_channels}"
            )
        if self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ParameterError(
                f"image_size={self.image_size} must be divisible by {2 ** (len(self.block_out_channels) - 1)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (lists instead of tuples), for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PocketConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        fields = set(cls.__dataclass_fields__)
        unknown = set(d) - fields
        if unknown:
            raise ParameterError(f"unknown PocketConfig keys {sorted(unknown)}; expected {sorted(fields)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def tiny(cls) -> PocketConfig:
        """A very small variant (32 px, ~0.1 M parameters) for tests."""
        return cls(
            image_size=32,
            block_out_channels=(8, 16, 16),
            attention_heads=2,
            cross_attention_dim=16,
            prompt_length=4,
            norm_num_groups=4,
        )


def build_unet(config: PocketConfig, *, seed: int = 0) -> Any:
    """A randomly initialised ``UNet2DConditionModel`` for `config` (seeded, CPU, float32)."""
    from .._diffusers import new_unet

    return new_unet(
        {
            "sample_size": config.image_size,
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": tuple(config.block_out_channels),
            "down_block_types": tuple(config.down_block_types),
            "up_block_types": tuple(config.up_block_types),
            "layers_per_block": config.layers_per_block,
            "transformer_layers_per_block": config.transformer_layers_per_block,
            "attention_head_dim": config.attention_heads,
            "cross_attention_dim": config.cross_attention_dim,
            "norm_num_groups": config.norm_num_groups,
        },
        seed=seed,
    )


def build_scheduler(config: PocketConfig) -> Any:
    """The DDPM noise scheduler used for training (and saved with the weights)."""
    from .._diffusers import ddpm_scheduler

    return ddpm_scheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type="epsilon",
        clip_sample=False,
    )


def diffcut_layer_name(config: PocketConfig) -> str:
    """Module path of the paper's layer: last ``attn1`` of the lowest-resolution attention encoder stage."""
    stage = max(i for i, b in enumerate(config.down_block_types) if "CrossAttn" in b)
    return (
        f"down_blocks.{stage}.attentions.{config.layers_per_block - 1}."
        f"transformer_blocks.{config.transformer_layers_per_block - 1}.attn1"
    )


class PocketDenoiser(nn.Module):
    """UNet plus the learned null-prompt embedding (1, L, D) it is always conditioned on.

    Parameters
    ----------
    config : PocketConfig
    seed : int
        Initialisation seed (UNet weights and the embedding).
    """

    def __init__(self, config: PocketConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.unet = build_unet(config, seed=seed)
        gen = torch.Generator().manual_seed(seed + 1)
        self.prompt_embeds = nn.Parameter(
            torch.randn(1, config.prompt_length, config.cross_attention_dim, generator=gen)
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise for x_t (B, 3, H, W) in [-1, 1] scale at integer timesteps t (B,)."""
        cond = self.prompt_embeds.expand(x_t.shape[0], -1, -1)
        return self.unet(x_t, t, encoder_hidden_states=cond).sample


def export_weights(
    model: PocketDenoiser,
    out: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as a diffusers directory that ``load_backbone`` reads.

    Layout: ``unet/`` (config.json + diffusion_pytorch_model.safetensors, stored in `dtype`),
    ``scheduler/``, ``conditioning.safetensors`` (``prompt_embeds`` (1, L, D), float32),
    ``diffcut_lab.json`` (family, image_size, diffcut_layer, pocket config) and, if given,
    ``training.json`` with `extra`.

    Returns
    -------
    pathlib.Path
        The directory written.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unet").mkdir(exist_ok=True)
    model.unet.save_config(out / "unet")
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.unet.state_dict().items()}
    save_file(state, str(out / "unet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    build_scheduler(model.config).save_pretrained(out / "scheduler")
    save_file(
        {"prompt_embeds": model.prompt_embeds.detach().to("cpu", torch.float32).contiguous()},
        str(out / "conditioning.safetensors"),
    )
    meta = {
        "family": "pocket",
        "image_size": model.config.image_size,
        "diffcut_layer": diffcut_layer_name(model.config),
        "pixel_space": True,
        "pocket_config": model.config.to_dict(),
    }
    (out / "diffcut_lab.json").write_text(json.dumps(meta, indent=2) + "\n")
    if extra is not None:
        (out / "training.json").write_text(json.dumps(extra, indent=2) + "\n")
    return out
