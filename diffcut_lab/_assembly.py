"""Building a :class:`~diffcut_lab._backbone.Backbone` from a read model directory.

:func:`build` loads the weights (UNet, VAE), the scheduler and the conditioning (the stored
``conditioning.safetensors``, or the text encoders run once on the empty prompt); :func:`skeleton` builds
the UNet from its config alone on the ``meta`` device. :mod:`diffcut_lab._checkpoints` reads the directory
first; the calls into diffusers and transformers live in :mod:`diffcut_lab._diffusers`.

The bundled pocket model is built without diffusers (importing it costs seconds): its UNet by
:mod:`diffcut_lab.pocket.unet`, its noise schedule by :mod:`diffcut_lab.pocket.schedule`, both the same
bits as diffusers' (see :func:`builds_light`). Every other model goes through diffusers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import _diffusers
from ._backbone import Backbone, sdxl_added_cond
from ._checkpoints import Layout, component_variant, read_json, weight_ext
from ._families import detect_family
from .errors import ModelLoadError, UnsupportedModelError
from .pocket import schedule as light_schedule
from .pocket import unet as light_unet

__all__ = ["build", "builds_light", "family_and_sizes", "skeleton"]

#: a prompt -> (prompt_embeds, added_cond_kwargs or None)
PromptFn = Callable[[str], tuple[torch.Tensor, Any]]


def builds_light(layout: Layout, name: str, *, use_safetensors: bool = True) -> bool:
    """Whether the model is the bundled pocket model (source ``"pocket"``) and is built without diffusers.

    Always, for the shipped weights: a pixel-space UNet whose config :func:`diffcut_lab.pocket.unet.supports`
    reads, stored as safetensors. A retrained pocket model with other blocks goes through diffusers.
    """
    return (
        name == "pocket"
        and use_safetensors
        and not layout.has_vae
        and light_unet.supports(layout.unet_config)
        and (layout.root / "unet" / light_unet.WEIGHTS_FILE).is_file()
    )


def skeleton(layout: Layout, *, name: str, image_size: int | None) -> Backbone:
    """A weightless backbone: the UNet built from its config on the meta device."""
    if builds_light(layout, name):
        unet = light_unet.new_unet(layout.unet_config, empty=True)
    else:
        unet = _diffusers.new_unet(layout.unet_config, empty=True)
    family, image_size, latent_scale = family_and_sizes(layout, unet.config, image_size)
    return Backbone(
        unet,
        family=family,
        name=name,
        image_size=image_size,
        latent_scale=latent_scale,
        diffcut_layer=layout.meta.get("diffcut_layer"),
    )


def family_and_sizes(
    layout: Layout, unet_config: Mapping[str, Any], image_size: int | None
) -> tuple[str, int, int]:
    """``(family, image_size, latent_scale)`` of a model directory, from its config files."""
    latent_scale = 1
    if layout.has_vae:
        latent_scale = _diffusers.vae_latent_scale(read_json(layout.root / "vae" / "config.json"))
    family = layout.meta.get("family") or detect_family(unet_config)
    if image_size is None:
        image_size = layout.meta.get("image_size") or int(unet_config["sample_size"]) * latent_scale
    return family, int(image_size), latent_scale


def _load_scheduler(root: Path, *, light: bool = False) -> Any:
    """The DDIM noise schedule of ``scheduler/`` (Stable Diffusion's without one); ``light``: without
    diffusers when :func:`diffcut_lab.pocket.schedule.supports_schedule` reads the config."""
    cfg_path = root / "scheduler" / "scheduler_config.json"
    cfg = read_json(cfg_path) if cfg_path.exists() else None
    if light and cfg is not None and light_schedule.supports_schedule(cfg):
        return light_schedule.ddim_schedule(cfg, timestep_spacing="trailing")
    return _diffusers.ddim_scheduler(cfg)


def _from_pretrained(
    kind: str, root: Path, sub: str, name: str, *, light: bool = False, **kwargs: Any
) -> Any:
    """``root/sub``'s UNet or VAE with its weights (``light``: the UNet without diffusers)."""
    try:
        if light:
            return light_unet.load_unet(root / sub, dtype=kwargs["torch_dtype"])
        return _diffusers.load_component(kind, str(root), sub, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load {sub}/ of {name!r}: {err}. The weights may be missing or incomplete; "
            "re-download them, or use 'pocket' offline."
        ) from err


def _load_modules(
    layout: Layout,
    *,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    use_safetensors: bool,
    variant: str | None,
    light: bool = False,
) -> tuple[Any, Any]:
    """``(unet, vae)`` with their weights, on ``device`` in eval mode (``vae`` None in pixel space);
    ``light``: the pocket model's UNet without diffusers."""
    root = layout.root
    ext = weight_ext(use_safetensors)

    def weights_kw(sub: str) -> dict[str, Any]:
        kw: dict[str, Any] = {"use_safetensors": use_safetensors}
        v = component_variant(root / sub, variant, ext)
        if v:
            kw["variant"] = v
        return kw

    unet = _from_pretrained("unet", root, "unet", name, light=light, torch_dtype=dtype, **weights_kw("unet"))
    unet.to(device).eval().requires_grad_(False)
    vae = None
    if layout.has_vae:
        vae = _from_pretrained("vae", root, "vae", name, torch_dtype=vae_dtype, **weights_kw("vae"))
        vae.to(device).eval().requires_grad_(False)
    elif int(unet.config.in_channels) != 3:
        raise ModelLoadError(
            f"{name!r} has no vae/ but its UNet takes {unet.config.in_channels} channels; a pixel-space "
            "model takes 3. Add the VAE the model was trained with."
        )
    return unet, vae


def _empty_prompt(
    layout: Layout,
    *,
    name: str,
    device: torch.device,
    prompt_embeds: torch.Tensor | None,
    pooled_prompt_embeds: torch.Tensor | None,
    keep_text_encoders: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, PromptFn | None]:
    """``(prompt_embeds, pooled_prompt_embeds, text_fn)``: the given embeddings, else the stored ones, else
    the text encoders' on the empty prompt; ``text_fn`` (the encoders' ``prompt -> (embeds, pooled)``)
    only with ``keep_text_encoders``."""
    text_fn = None
    if prompt_embeds is None and layout.conditioning is not None:
        prompt_embeds, pooled_file = _read_conditioning(layout.conditioning)
        pooled_prompt_embeds = pooled_prompt_embeds if pooled_prompt_embeds is not None else pooled_file
        if keep_text_encoders and layout.text_encoders:
            text_fn = _text_encoder_fn(layout.root, layout.text_encoders, name, device)
    elif prompt_embeds is None:
        if not layout.text_encoders:
            raise ModelLoadError(
                f"{name!r} has no text encoder + tokenizer and no conditioning.safetensors; pass "
                "prompt_embeds=... (1, L, D) (and pooled_prompt_embeds=... for SDXL-family models)."
            )
        text_fn = _text_encoder_fn(layout.root, layout.text_encoders, name, device)
        prompt_embeds, pooled_prompt_embeds = text_fn("")
        if not keep_text_encoders:
            text_fn = None
    return prompt_embeds, pooled_prompt_embeds, text_fn


def _added_cond(
    unet_config: Any, pooled: torch.Tensor | None, image_size: int, name: str
) -> dict[str, torch.Tensor] | None:
    """SDXL's ``added_cond_kwargs`` for a ``text_time`` UNet (None for the others)."""
    if unet_config.addition_embed_type != "text_time":
        return None
    if pooled is None:
        raise ModelLoadError(
            f"{name!r} is an SDXL-family UNet (text_time conditioning) but no pooled prompt embedding "
            "was found; pass pooled_prompt_embeds=... (1, D) or add it to conditioning.safetensors."
        )
    return sdxl_added_cond(pooled, image_size)


def _prompt_fn(text_fn: PromptFn | None, unet_config: Any, image_size: int) -> PromptFn | None:
    """The backbone's ``prompt -> (prompt_embeds, added_cond_kwargs)`` from the encoders' ``text_fn``."""
    if text_fn is None:
        return None
    inner = text_fn
    if unet_config.addition_embed_type == "text_time":

        def with_time(prompt: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            emb, pooled = inner(prompt)
            return emb, sdxl_added_cond(pooled, image_size)

        return with_time

    def plain(prompt: str) -> tuple[torch.Tensor, None]:
        return inner(prompt)[0], None

    return plain


def build(
    layout: Layout,
    *,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    prompt_embeds: torch.Tensor | None,
    pooled_prompt_embeds: torch.Tensor | None,
    image_size: int | None,
    use_safetensors: bool,
    variant: str | None,
    keep_text_encoders: bool,
) -> Backbone:
    """The backbone of a model directory, with its weights (see :func:`diffcut_lab.load_backbone`)."""
    light = builds_light(layout, name, use_safetensors=use_safetensors)
    unet, vae = _load_modules(
        layout, name=name, device=device, dtype=dtype, vae_dtype=vae_dtype, use_safetensors=use_safetensors,
        variant=variant, light=light,
    )  # fmt: skip
    family, image_size, latent_scale = family_and_sizes(layout, unet.config, image_size)
    prompt_embeds, pooled_prompt_embeds, text_fn = _empty_prompt(
        layout, name=name, device=device, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
        keep_text_encoders=keep_text_encoders,
    )  # fmt: skip
    prompt_embeds = _check_embeds(prompt_embeds, unet.config, name)
    added = _added_cond(unet.config, pooled_prompt_embeds, image_size, name)
    return Backbone(
        unet,
        vae=vae,
        scheduler=_load_scheduler(layout.root, light=light),
        prompt_embeds=prompt_embeds,
        added_cond_kwargs=added,
        family=family,
        name=name,
        image_size=image_size,
        latent_scale=latent_scale,
        diffcut_layer=layout.meta.get("diffcut_layer"),
        text_encoder_fn=_prompt_fn(text_fn, unet.config, image_size),
    )


def _check_embeds(embeds: torch.Tensor, unet_config: Any, name: str) -> torch.Tensor:
    if embeds.ndim == 2:
        embeds = embeds[None]
    cross = unet_config.cross_attention_dim
    cross = cross[-1] if isinstance(cross, (list, tuple)) else cross
    if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[-1] != cross:
        raise ModelLoadError(
            f"prompt embeddings of shape {tuple(embeds.shape)} do not fit {name!r}: expected (1, L, {cross})."
        )
    return embeds


def _read_conditioning(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from err
    if "prompt_embeds" not in tensors:
        raise ModelLoadError(f"{path} has no 'prompt_embeds' tensor (keys: {sorted(tensors)}).")
    return tensors["prompt_embeds"].float(), tensors.get("pooled_prompt_embeds")


def _text_encoder_fn(root: Path, subs: tuple[str, ...], name: str, device: torch.device) -> PromptFn:
    """The prompt encoder of the model in ``root`` (see :func:`diffcut_lab._diffusers.prompt_encoder`)."""
    try:
        return _diffusers.prompt_encoder(str(root), subs, device)
    except LookupError as err:
        raise UnsupportedModelError(f"{name!r}: {err}.") from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load the text encoder(s) {', '.join(subs)} or their tokenizers of {name!r}: {err}. "
            "Pass prompt_embeds=... instead."
        ) from err
