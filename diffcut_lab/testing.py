"""Tiny random diffusion backbones for tests: the same code paths as a real model, in milliseconds.

- ``"sd1"``: a tiny VAE (latent scale 4) and a UNet with cross-attention in two encoder stages and a
  last stage without attention, like Stable Diffusion 1.x.
- ``"sdxl"``: the same VAE and a UNet with SDXL's ``text_time`` added conditioning (pooled text
  embedding plus ``time_ids``), two attention stages and two transformer blocks in the deepest one.
- ``"pixel"``: no VAE (images enter as ``2 x - 1``), like the bundled pocket model.

All weights come from ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's random
state is left as it was); the conditioning is a fixed random tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from . import _diffusers
from .backbones import Backbone, sdxl_added_cond

__all__ = ["TINY_FAMILIES", "save_tiny_model", "tiny_backbone", "tiny_configs"]

TINY_FAMILIES = ("sd1", "sdxl", "pixel")
Family = Literal["sd1", "sdxl", "pixel"]

_CROSS_DIM = 32
_POOLED_DIM = 16
_TIME_EMBED_DIM = 8
_PROMPT_LEN = 8
_VAE_SCALE = 4


def tiny_configs(family: Family = "sd1", image_size: int = 64) -> dict[str, Any]:
    """UNet and VAE configs (dicts) of a tiny model of ``family``.

    Returns
    -------
    dict
        ``{"unet": {...}, "vae": {...} or None, "family": str, "latent_scale": int}``.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {TINY_FAMILIES}.")
    common = dict(
        layers_per_block=1,
        cross_attention_dim=_CROSS_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
        act_fn="silu",
    )
    vae = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=image_size,
    )
    if family == "sd1":
        unet = dict(
            common,
            sample_size=image_size // _VAE_SCALE,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        )
        return {"unet": unet, "vae": vae, "family": "sd1", "latent_scale": _VAE_SCALE}
    if family == "sdxl":
        unet = dict(
            common,
            sample_size=image_size // _VAE_SCALE,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=_POOLED_DIM + 6 * _TIME_EMBED_DIM,
        )
        return {"unet": unet, "vae": vae, "family": "sdxl", "latent_scale": _VAE_SCALE}
    unet = dict(
        common,
        sample_size=image_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    return {"unet": unet, "vae": None, "family": "pocket", "latent_scale": 1}


def _conditioning(family: Family, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(10_000 + seed)
    embeds = torch.randn(1, _PROMPT_LEN, _CROSS_DIM, generator=g)
    pooled = torch.randn(1, _POOLED_DIM, generator=g) if family == "sdxl" else None
    return embeds, pooled


def _build_modules(family: Family, seed: int, image_size: int, dtype: torch.dtype) -> tuple[Any, Any, dict]:
    cfgs = tiny_configs(family, image_size)
    # Seeded weights; the caller's random state is left alone.
    unet = _diffusers.new_unet(cfgs["unet"], seed=seed).eval().requires_grad_(False)
    if dtype != torch.float32:
        unet.to(dtype)
    vae = None
    if cfgs["vae"] is not None:
        vae = _diffusers.new_vae(cfgs["vae"], seed=seed).eval().requires_grad_(False)
    return unet, vae, cfgs


def tiny_backbone(
    family: Family = "sd1",
    *,
    seed: int = 0,
    image_size: int = 64,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Backbone:
    """A randomly initialised, very small backbone built in memory.

    Parameters
    ----------
    family : {"sd1", "sdxl", "pixel"}
        Architecture to mimic (see the module docstring). ``"pixel"`` reports ``family="pocket"``.
    seed : int
        Seed of the weights and of the fixed conditioning.
    image_size : int
        Native input side in pixels (a multiple of 16).
    dtype : torch.dtype
        UNet dtype (the VAE stays float32).
    device : torch.device or str
        Where to put it (the CPU by default; tests pass a CUDA device to check that path).

    Returns
    -------
    Backbone

    Examples
    --------
    >>> bb = tiny_backbone("sd1")
    >>> bb.family, bb.image_size, bb.latent_scale
    ('sd1', 64, 4)
    """
    unet, vae, cfgs = _build_modules(family, seed, image_size, dtype)
    embeds, pooled = _conditioning(family, seed)
    unet.to(device)
    if vae is not None:
        vae.to(device)
    return Backbone(
        unet,
        vae=vae,
        scheduler=_diffusers.ddim_scheduler(),
        prompt_embeds=embeds,
        added_cond_kwargs=None if pooled is None else sdxl_added_cond(pooled, image_size),
        family=cfgs["family"],
        name=f"tiny-{family}",
        image_size=image_size,
        latent_scale=cfgs["latent_scale"],
    )


def save_tiny_model(
    directory: str | Path,
    family: Family = "sd1",
    *,
    seed: int = 0,
    image_size: int = 64,
    text_encoders: bool = False,
    diffcut_layer: str | None = None,
    write_meta: bool = True,
) -> Path:
    """Write a tiny model as a diffusers directory, for :func:`~diffcut_lab.backbones.load_backbone`.

    Parameters
    ----------
    directory : str or Path
        Created if missing.
    family : {"sd1", "sdxl", "pixel"}
    seed, image_size : int
        As for :func:`tiny_backbone` (same weights for the same seed).
    text_encoders : bool
        Also write tiny CLIP text encoder(s) and tokenizer(s) (two for ``"sdxl"``) instead of
        ``conditioning.safetensors``, to exercise the empty-prompt encoding path.
    diffcut_layer : str, optional
        Written to ``diffcut_lab.json`` as the ``"diffcut"`` alias override.
    write_meta : bool
        Write ``diffcut_lab.json`` (family, image size); without it the family is detected.

    Returns
    -------
    Path
        The directory.
    """
    from safetensors.torch import save_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    unet, vae, cfgs = _build_modules(family, seed, image_size, torch.float32)
    unet.save_pretrained(root / "unet")
    if vae is not None:
        vae.save_pretrained(root / "vae")
    _diffusers.ddim_scheduler().save_pretrained(root / "scheduler")
    pipeline = "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline"
    index: dict[str, Any] = {"_class_name": pipeline, "unet": ["diffusers", "UNet2DConditionModel"]}
    if vae is not None:
        index["vae"] = ["diffusers", "AutoencoderKL"]
    if text_encoders:
        _save_text_encoders(root, family, seed)
    else:
        embeds, pooled = _conditioning(family, seed)
        tensors = {"prompt_embeds": embeds.contiguous()}
        if pooled is not None:
            tensors["pooled_prompt_embeds"] = pooled.contiguous()
        save_file(tensors, str(root / "conditioning.safetensors"))
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    if write_meta:
        meta: dict[str, Any] = {"family": cfgs["family"], "image_size": image_size}
        if diffcut_layer:
            meta["diffcut_layer"] = diffcut_layer
        (root / "diffcut_lab.json").write_text(json.dumps(meta, indent=2))
    return root


def _byte_chars() -> list[str]:
    """The 256 printable characters byte-level BPE tokenizers use for the bytes 0..255."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _tiny_tokenizer(directory: Path, max_length: int) -> Any:
    """A CLIP tokenizer with a byte-level vocabulary and no merges (works offline)."""
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        model_max_length=max_length,
        pad_token="<|endoftext|>",
    )
    return tok, len(vocab)


def _save_text_encoders(root: Path, family: Family, seed: int) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    max_len = 16
    subs = ("", "_2") if family == "sdxl" else ("",)
    hidden = _CROSS_DIM // len(subs)
    for i, suffix in enumerate(subs):
        tok, vocab_size = _tiny_tokenizer(root / f"tokenizer{suffix}", max_len)
        tok.save_pretrained(root / f"tokenizer{suffix}")
        cfg = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=max_len,
            projection_dim=_POOLED_DIM,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
        cls = CLIPTextModelWithProjection if suffix == "_2" else CLIPTextModel
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 100 + i)
            cls(cfg).save_pretrained(root / f"text_encoder{suffix}")
