"""Diffusion UNet backbones: load a model, encode images, add noise, run one UNet pass.

A :class:`Backbone` holds only what feature extraction needs: the UNet, the VAE (``None`` for
pixel-space models), a scheduler for ``add_noise`` and the conditioning of the empty prompt (text
encoders are run once and dropped). This module is where a model is loaded: it finds the source and
reads its outline; the parts live beside it, one concern each:

- :mod:`diffcut_lab._families`: the families and UNet classes the toolkit knows (:func:`detect_family`);
- :mod:`diffcut_lab._checkpoints`: a model directory's layout and its checks, and Hub downloads;
- :mod:`diffcut_lab._assembly`: the modules, weights and conditioning of a directory made a backbone;
- :mod:`diffcut_lab._backbone`: the :class:`Backbone` itself (encode, noise, forward) and default
  devices and dtypes;

the calls into diffusers and transformers themselves live in :mod:`diffcut_lab._diffusers`, and hook
points in :mod:`diffcut_lab.hook_points`.

Sources accepted by :func:`load_backbone`:

- ``"pocket"``: the small model bundled in ``diffcut_lab/pocket/weights/`` (offline);
- a local directory with the diffusers layout (``unet/``, ``scheduler/``, optional ``vae/``,
  ``text_encoder/`` + ``tokenizer/`` [+ ``_2``], optional ``conditioning.safetensors`` and
  ``diffcut_lab.json``);
- a Hugging Face Hub id such as ``"segmind/SSD-1B"``, ``"segmind/Segmind-Vega"``,
  ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` or ``"stabilityai/stable-diffusion-xl-base-1.0"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._assembly import build, family_and_sizes, skeleton
from ._backbone import (
    DTYPES,
    Backbone,
    InputSizes,
    default_device,
    default_dtype,
    parse_dtype,
    sdxl_added_cond,
)
from ._checkpoints import Layout, Request, fetch_from_hub, read_layout
from ._families import FAMILIES, HUB_ID, detect_family
from .errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from ._unet_outline import UNetOutline

__all__ = [
    "DTYPES",
    "FAMILIES",
    "Backbone",
    "ModelOutline",
    "backbone_from_config",
    "default_device",
    "default_dtype",
    "detect_family",
    "load_backbone",
    "model_outline",
    "parse_dtype",
    "pocket_weights_dir",
    "sdxl_added_cond",
]


def pocket_weights_dir() -> Path:
    """Where the bundled pocket model's weights live (:data:`diffcut_lab.pocket.WEIGHTS_DIR`)."""
    from .pocket import WEIGHTS_DIR

    return WEIGHTS_DIR


def load_backbone(
    source: str | Path = "segmind/SSD-1B",
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    prompt_embeds: torch.Tensor | None = None,
    pooled_prompt_embeds: torch.Tensor | None = None,
    image_size: int | None = None,
    vae_dtype: torch.dtype = torch.float32,
    use_safetensors: bool = True,
    variant: str | None = "auto",
    revision: str | None = None,
    local_files_only: bool = False,
    keep_text_encoders: bool = False,
    weights: bool = True,
) -> Backbone:
    """Load a diffusion UNet backbone for feature extraction.

    Parameters
    ----------
    source : str or Path
        ``"pocket"`` (the bundled offline model), a local diffusers directory, or a Hugging Face Hub id
        (default ``"segmind/SSD-1B"``, the paper's model).
    dtype : torch.dtype, optional
        UNet dtype. Default: float16 on CUDA, float32 on the CPU (pass ``torch.bfloat16`` to halve the
        CPU time on CPUs with bf16 support). The model is built directly in this dtype.
    device : torch.device or str, optional
        Default: a CUDA GPU when available, else the CPU.
    prompt_embeds : torch.Tensor, optional
        ``(1, L, D)`` precomputed conditioning; skips the text encoders (needed offline when the model
        has no ``conditioning.safetensors``). SDXL-family models also need ``pooled_prompt_embeds``.
    pooled_prompt_embeds : torch.Tensor, optional
        ``(1, D2)`` pooled embedding for SDXL-style ``text_time`` conditioning.
    image_size : int, optional
        Native input side in pixels; default from ``diffcut_lab.json`` or ``sample_size x latent_scale``.
        For SDXL models it also sets the ``time_ids`` (original and target size).
    vae_dtype : torch.dtype
        dtype of the VAE (float32 by default, which avoids the fp16 overflow of the SDXL VAE).
    use_safetensors : bool
        Load only ``.safetensors`` weights (default).
    variant : str or None
        Weight variant on the Hub (``"fp16"``); ``"auto"`` asks for ``"fp16"`` when loading in float16
        and falls back to the full-precision files when the repository has none.
    revision : str, optional
        Hub revision.
    local_files_only : bool
        Use only the local Hugging Face cache for hub ids (no network).
    keep_text_encoders : bool
        Keep the text encoders to encode other prompts later (``capture(..., prompt="a photo")``).
    weights : bool
        ``False`` reads only the configs and builds the UNet on the ``meta`` device: hook names,
        channels and resolutions are available (:func:`diffcut_lab.hooks.list_hook_points`), nothing is
        downloaded but a few JSON files, and the backbone cannot run a forward.

    Returns
    -------
    Backbone

    Raises
    ------
    ModelLoadError
        The pocket model is not installed, the directory or hub id cannot be found or downloaded, or
        weights are missing.
    UnsupportedModelError
        The model has no UNet with cross-attention (e.g. a DiT/transformer pipeline or a ``UNet2DModel``).
    """
    from .threads import apply_env

    apply_env()  # --threads N of the command that started this process (a report's kernel, a worker)
    dev = torch.device(device) if device is not None else default_device()
    dt = dtype if dtype is not None else default_dtype(dev)
    name = str(source)
    if variant == "auto":
        variant = "fp16" if dt == torch.float16 else None
    request = Request(
        variant=variant, use_safetensors=use_safetensors, revision=revision, local_files_only=local_files_only,
        configs_only=not weights, need_text_encoders=prompt_embeds is None,
    )  # fmt: skip
    root, variant = _locate(name, request)
    layout = read_layout(root, name)
    if not weights:
        return skeleton(layout, name=name, image_size=image_size)
    return build(
        layout, name=name, device=dev, dtype=dt, vae_dtype=vae_dtype, prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled_prompt_embeds, image_size=image_size, use_safetensors=use_safetensors,
        variant=variant, keep_text_encoders=keep_text_encoders,
    )  # fmt: skip


def _locate(name: str, request: Request) -> tuple[Path, str | None]:
    """The model directory of a source (``"pocket"``, a directory or a hub id) and the weight variant to read
    (``request.variant``; None for the pocket model)."""
    variant = request.variant
    if name == "pocket":
        root = pocket_weights_dir()
        if not (root / "unet").is_dir():
            raise ModelLoadError(
                f"the bundled pocket model is not installed (no weights in {root}). Train it with "
                "`python -m diffcut_lab.pocket.train` (a few minutes on a CPU), or load real weights, "
                "e.g. load_backbone('segmind/SSD-1B') on a GPU."
            )
        variant = None
    elif Path(name).expanduser().exists():
        root = Path(name).expanduser()
        if not root.is_dir():
            raise ModelLoadError(f"{name!r} is a file; expected a diffusers model directory (with unet/).")
    elif HUB_ID.match(name):
        root = fetch_from_hub(name, request)
    else:
        raise ModelLoadError(
            f"model source {name!r} is neither 'pocket', an existing directory, nor a Hugging Face Hub id "
            "('owner/name'); check the path, or use 'pocket' to run offline."
        )
    return root, variant


@dataclass(frozen=True)
class ModelOutline(InputSizes):
    """A model's hook points and input sizes, read from its config files alone: no weights, and no
    diffusers import for the Stable Diffusion family's UNets and the pocket model.

    Made by :func:`model_outline`. It answers what a weightless backbone answers about names, channels
    and resolutions: :func:`~diffcut_lab.hook_points.list_hook_points`,
    :func:`~diffcut_lab.hook_points.resolve_layers`, :meth:`check_image_size`; it cannot run a forward.

    Attributes
    ----------
    name : str
        The source it was read from.
    family : str
        One of :data:`FAMILIES`.
    image_size : int
        Native input side in pixels.
    latent_scale : int
        Pixels per latent cell (1 in pixel space).
    unet : diffcut_lab.hook_points.UNetOutline
        Hook points in forward order and where the UNet changes resolution.
    diffcut_layer : str or None
        An explicit hook name for the ``"diffcut"`` alias (from ``diffcut_lab.json``).
    """

    name: str
    family: str
    image_size: int
    latent_scale: int
    unet: UNetOutline
    diffcut_layer: str | None = None

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this many pixels (latent scale x UNet downsampling)."""
        return self.latent_scale * 2 ** sum(self.unet.downsamples)


def model_outline(
    source: str | Path = "segmind/SSD-1B",
    *,
    image_size: int | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> ModelOutline:
    """Hook points and sizes of a model from its config files: what ``diffcut-lab layers`` prints.

    The cheap way to list a model's layers: the Stable Diffusion family's UNets (SD 1.x/2.x, SDXL,
    SSD-1B, Vega) and the pocket model are read from ``unet/config.json`` without importing diffusers or
    building any module; other UNets are built on the meta device as with ``load_backbone(...,
    weights=False)``. The names, channels and resolutions are the same either way.

    Parameters
    ----------
    source : str or Path
        ``"pocket"``, a local diffusers directory or a Hugging Face Hub id (only its JSON files are
        downloaded).
    image_size : int, optional
        Native input side in pixels; default from ``diffcut_lab.json`` or ``sample_size x latent_scale``.
    revision : str, optional
        Hub revision.
    local_files_only : bool
        Use only the local Hugging Face cache for hub ids (no network).

    Returns
    -------
    ModelOutline

    Raises
    ------
    ModelLoadError
        The source cannot be found or read.
    UnsupportedModelError
        The model has no UNet with cross-attention.
    """
    from ._unet_outline import outline_from_config, unet_outline

    name = str(source)
    request = Request(
        revision=revision, local_files_only=local_files_only, configs_only=True, need_text_encoders=False
    )
    root, _ = _locate(name, request)
    layout = read_layout(root, name)
    outline = outline_from_config(layout.unet_config)
    if outline is None:  # blocks the config reader does not know: the built (weightless) modules tell
        bb = skeleton(layout, name=name, image_size=image_size)
        return ModelOutline(
            name, bb.family, bb.image_size, bb.latent_scale, unet_outline(bb.unet), bb.diffcut_layer
        )
    family, size, latent_scale = family_and_sizes(layout, layout.unet_config, image_size)
    return ModelOutline(name, family, size, latent_scale, outline, layout.meta.get("diffcut_layer"))


def backbone_from_config(
    unet_config: Mapping[str, Any],
    *,
    family: str | None = None,
    name: str = "",
    image_size: int | None = None,
    latent_scale: int = 8,
    diffcut_layer: str | None = None,
) -> Backbone:
    """A weightless backbone built from a UNet config dict on the ``meta`` device (structure only).

    Useful to list hook points, channels and resolutions of a full-size model without its weights.

    Parameters
    ----------
    unet_config : mapping
        The UNet's ``config.json`` contents.
    family : str, optional
        Default: :func:`detect_family`.
    name : str
    image_size : int, optional
        Default: ``sample_size x latent_scale``.
    latent_scale : int
        Pixels per latent cell (8 for the Stable Diffusion VAE).
    diffcut_layer : str, optional
        Override of the ``"diffcut"`` alias.
    """
    layout = Layout(
        root=Path("."),
        unet_config=dict(unet_config),
        has_vae=False,
        text_encoders=(),
        meta={"family": family, "image_size": image_size, "diffcut_layer": diffcut_layer},
        conditioning=None,
    )
    bb = skeleton(
        layout, name=name, image_size=image_size or int(unet_config.get("sample_size", 64)) * latent_scale
    )
    bb.latent_scale = int(latent_scale)
    return bb
