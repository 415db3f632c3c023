"""Diffusion UNet backbones: load a model, encode images, add noise, run one UNet pass.

A :class:`Backbone` holds only what feature extraction needs: the UNet, the VAE (``None`` for
pixel-space models), a scheduler for ``add_noise`` and the conditioning of the empty prompt (text
encoders are run once and dropped). This module owns the model folder's layout, the family rules,
the conditioning and the errors a user sees; the calls into diffusers and transformers themselves live
in :mod:`diffcut_lab._diffusers`, and hook points in :mod:`diffcut_lab.hook_points`.

Sources accepted by :func:`load_backbone`:

- ``"pocket"``: the small model bundled in ``diffcut_lab/pocket/weights/`` (offline);
- a local directory with the diffusers layout (``unet/``, ``scheduler/``, optional ``vae/``,
  ``text_encoder/`` + ``tokenizer/`` [+ ``_2``], optional ``conditioning.safetensors`` and
  ``diffcut_lab.json``);
- a Hugging Face Hub id such as ``"segmind/SSD-1B"``, ``"segmind/Segmind-Vega"``,
  ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` or ``"stabilityai/stable-diffusion-xl-base-1.0"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import _diffusers
from .errors import ModelLoadError, ParameterError, UnsupportedModelError
from .options import NOISE_DEVICES

if TYPE_CHECKING:  # pragma: no cover
    from .hook_points import UNetOutline

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
]

#: Families :func:`detect_family` can return.
FAMILIES = ("sdxl", "ssd-1b", "vega", "sd1", "sd2", "pocket", "unknown")

#: UNet classes whose blocks carry cross-attention transformer blocks.
_SUPPORTED_UNETS = ("UNet2DConditionModel",)
_TRANSFORMER_DIRS = ("transformer", "prior", "decoder")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ----------------------------------------------------------------------------------------------------
# devices and dtypes


def default_device() -> torch.device:
    """The device a backbone goes to when none is given: a CUDA GPU when available, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


#: dtype names the toolkit accepts (settings, YAML grids, the command line)
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}  # fmt: skip


def parse_dtype(dtype: torch.dtype | str | None, what: str = "dtype") -> torch.dtype | None:
    """A floating torch dtype from a dtype or one of :data:`DTYPES`' names (``"torch.float16"`` too);
    None stays None. Anything else raises ParameterError."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    key = str(dtype).replace("torch.", "").lower() if isinstance(dtype, str) else None
    if key not in DTYPES:
        raise ParameterError(f"unknown {what} {dtype!r}; expected one of {sorted(DTYPES)}.")
    return DTYPES[key]


def default_dtype(device: torch.device | str) -> torch.dtype:
    """The UNet dtype used when none is given: float16 on CUDA, float32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


# ----------------------------------------------------------------------------------------------------
# the backbone


class _InputSizes:
    """Input sizes of a UNet model, for :class:`Backbone` and :class:`ModelOutline` alike (they define
    ``name``, ``image_size``, ``latent_scale`` and ``size_multiple``)."""

    name: str
    image_size: int
    latent_scale: int
    size_multiple: int

    def latent_size(self, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """``(h, w)`` of the UNet input for an image of ``image_size`` pixels (default: native size)."""
        from .config import parse_size

        h, w = parse_size(self.image_size if image_size is None else image_size)
        return h // self.latent_scale, w // self.latent_scale

    def check_image_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Validate an input size for this UNet and return it as ``(H, W)``.

        Raises
        ------
        ParameterError
            A side is not a multiple of :attr:`size_multiple`.
        """
        from .config import parse_size

        h, w = parse_size(image_size)
        m = self.size_multiple
        if h % m or w % m:
            near = (max(m, round(h / m) * m), max(m, round(w / m) * m))
            raise ParameterError(
                f"image size {(h, w)} does not fit {self.name or 'this model'}: sides must be multiples of "
                f"{m} pixels (latent scale {self.latent_scale} x the UNet's downsampling); try {near}."
            )
        return h, w


class Backbone(_InputSizes):
    """A diffusion UNet ready for feature extraction, with its encoder, noise schedule and conditioning.

    Usually made by :func:`load_backbone` or :func:`diffcut_lab.testing.tiny_backbone`.

    Attributes
    ----------
    unet : diffusers.UNet2DConditionModel
    vae : diffusers.AutoencoderKL or None
        ``None`` for pixel-space models (images are fed as ``2 x - 1``).
    scheduler : diffusers.DDIMScheduler
        Used for ``add_noise``; ``scheduler.config.num_train_timesteps`` bounds the timesteps.
    prompt_embeds : torch.Tensor
        ``(1, L, D)`` encoder hidden states of the prompt (the empty prompt by default).
    added_cond_kwargs : dict or None
        SDXL-style extra conditioning: ``{"text_embeds": (1, D2), "time_ids": (1, 6)}``.
    family : str
        One of :data:`FAMILIES`.
    name : str
        The source the backbone was loaded from.
    image_size : int
        Native input side in pixels (1024 for the SDXL family, 512 for SD 1.x, ...).
    latent_scale : int
        Pixels per latent cell (8 with the Stable Diffusion VAE, 1 in pixel space).
    device, dtype : torch.device, torch.dtype
        Where the UNet lives and its dtype. The VAE keeps ``vae_dtype`` (float32 by default).
    diffcut_layer : str or None
        An explicit hook name for the ``"diffcut"`` alias (from ``diffcut_lab.json``); ``None`` uses
        the rule of :func:`diffcut_lab.hooks.diffcut_layer_name`.
    """

    def __init__(
        self,
        unet: Any,
        *,
        vae: Any | None = None,
        scheduler: Any | None = None,
        prompt_embeds: torch.Tensor | None = None,
        added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
        family: str = "unknown",
        name: str = "",
        image_size: int | None = None,
        latent_scale: int | None = None,
        diffcut_layer: str | None = None,
        text_encoder_fn: Any | None = None,
    ) -> None:
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler if scheduler is not None else _diffusers.ddim_scheduler()
        self.family = family
        self.name = name
        if latent_scale is None:
            latent_scale = _diffusers.vae_latent_scale(vae) if vae is not None else 1
        self.latent_scale = int(latent_scale)
        if image_size is None:
            image_size = int(unet.config.sample_size) * self.latent_scale
        self.image_size = int(image_size)
        self.diffcut_layer = diffcut_layer
        param = next(iter(unet.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.float32
        self.prompt_embeds = None if prompt_embeds is None else prompt_embeds.to(self.device, self.dtype)
        self.added_cond_kwargs = (
            None
            if added_cond_kwargs is None
            else {k: v.to(self.device, self.dtype) for k, v in added_cond_kwargs.items()}
        )
        self._text_encoder_fn = text_encoder_fn

    # -- description ---------------------------------------------------------------------------------

    @property
    def vae_dtype(self) -> torch.dtype | None:
        """dtype of the VAE (``None`` without one)."""
        if self.vae is None:
            return None
        return next(iter(self.vae.parameters())).dtype

    @property
    def in_channels(self) -> int:
        """Channels the UNet takes (4 for SD latents, 3 in pixel space)."""
        return int(self.unet.config.in_channels)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this many pixels (latent scale x UNet downsampling)."""
        n_down = sum(1 for blk in self.unet.down_blocks if getattr(blk, "downsamplers", None) is not None)
        return self.latent_scale * 2**n_down

    def __repr__(self) -> str:
        vae = "none (pixel space)" if self.vae is None else f"{type(self.vae).__name__} ({self.vae_dtype})"
        return (
            f"Backbone(name={self.name!r}, family={self.family!r}, image_size={self.image_size}, "
            f"latent_scale={self.latent_scale}, device={self.device}, dtype={self.dtype}, vae={vae})"
        )

    # -- moving ---------------------------------------------------------------------------------------

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """Move the UNet (and VAE, keeping its dtype) and the conditioning; returns ``self``."""
        if device is not None:
            device = torch.device(device)
            if self.vae is not None:
                self.vae.to(device)
        self.unet.to(device=device, dtype=dtype)
        param = next(iter(self.unet.parameters()))
        self.device, self.dtype = param.device, param.dtype
        if self.prompt_embeds is not None:
            self.prompt_embeds = self.prompt_embeds.to(self.device, self.dtype)
        if self.added_cond_kwargs is not None:
            self.added_cond_kwargs = {k: v.to(self.device, self.dtype) for k, v in self.added_cond_kwargs.items()}
        return self

    # -- the three steps of feature extraction --------------------------------------------------------

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images to the UNet's input space.

        Parameters
        ----------
        images : torch.Tensor
            ``(B, 3, H, W)`` float in [0, 1] (any device).

        Returns
        -------
        torch.Tensor
            ``(B, C, H / s, W / s)`` in the UNet dtype on the UNet device: the VAE latent mean times
            ``scaling_factor`` (``s = latent_scale``), or ``2 x - 1`` pixels for pixel-space models.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ParameterError(f"encode expects (B, 3, H, W) images in [0, 1]; got {tuple(images.shape)}.")
        x = images.to(self.device, torch.float32) * 2.0 - 1.0
        if self.vae is None:
            return x.to(self.dtype)
        vae_dtype = self.vae_dtype
        posterior = self.vae.encode(x.to(vae_dtype)).latent_dist
        latents = posterior.mean
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift is not None:
            latents = latents - shift
        latents = latents * self.vae.config.scaling_factor
        return latents.to(self.dtype)

    def noise(
        self,
        shape: tuple[int, ...],
        *,
        seed: int | None = 42,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """One Gaussian noise map ``(1, C, h, w)`` (float32) for latents of ``shape``.

        With a ``seed``, it is drawn by a generator on ``device``: the CPU (default) gives the same noise
        on every machine; the model's device is what the published code does (on a GPU its CUDA
        generator gives other numbers than the CPU's for the same seed).
        """
        if generator is None:
            if seed is None:
                raise ParameterError("add_noise needs a seed or a torch.Generator (randomness is explicit).")
            generator = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
        return torch.randn((1, *shape[1:]), generator=generator, device=generator.device, dtype=torch.float32)

    @torch.inference_mode()
    def add_noise(
        self,
        latents: torch.Tensor,
        t: int | torch.Tensor,
        *,
        seed: int | None = 42,
        generator: torch.Generator | None = None,
        noise_device: str = "cpu",
    ) -> torch.Tensor:
        """Noise latents to timestep ``t`` with ``scheduler.add_noise``, one noise map shared by the batch.

        Parameters
        ----------
        latents : torch.Tensor
            ``(B, C, h, w)`` from :meth:`encode`.
        t : int
            Timestep in ``[0, num_train_timesteps)``.
        seed : int, optional
            Seed of the noise (default 42, as the paper); ignored when ``generator`` is given.
        generator : torch.Generator, optional
            Source of the noise.
        noise_device : {"cpu", "model"}
            Where a seeded noise map is drawn: the CPU, or the latents' device (as published).

        Returns
        -------
        torch.Tensor
            ``x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps`` in the UNet dtype.
        """
        if noise_device not in NOISE_DEVICES:
            raise ParameterError(f"noise_device must be one of {NOISE_DEVICES}; got {noise_device!r}.")
        t_int = self.check_timestep(t)
        where = latents.device if noise_device == "model" else torch.device("cpu")
        eps = self.noise(tuple(latents.shape), seed=seed, generator=generator, device=where)
        eps = eps.to(latents.device).expand(latents.shape[0], -1, -1, -1)
        ts = torch.full((latents.shape[0],), t_int, dtype=torch.long, device=latents.device)
        x_t = self.scheduler.add_noise(latents.float(), eps, ts)
        return x_t.to(self.dtype)

    def check_timestep(self, t: int | torch.Tensor) -> int:
        """Validate a timestep and return it as an int."""
        t_int = int(t.item()) if isinstance(t, torch.Tensor) else t
        if isinstance(t_int, bool) or not isinstance(t_int, int):
            raise ParameterError(f"timestep must be an int; got {t!r}.")
        n = int(self.scheduler.config.num_train_timesteps)
        if not 0 <= t_int < n:
            raise ParameterError(f"timestep {t_int} out of range; expected 0 <= t < {n} (the paper uses 50).")
        return t_int

    def conditioning(self, prompt: str = "") -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """``(prompt_embeds, added_cond_kwargs)`` for ``prompt`` (the stored ones for ``""``).

        Raises
        ------
        ParameterError
            A non-empty prompt with no text encoder kept (load with ``keep_text_encoders=True``).
        ModelLoadError
            The backbone has no conditioning at all.
        """
        if prompt == "" or prompt is None:
            if self.prompt_embeds is None:
                raise ModelLoadError(
                    f"{self.name or 'this backbone'} has no prompt embeddings; pass prompt_embeds=... to "
                    "load_backbone or add conditioning.safetensors to the model directory."
                )
            return self.prompt_embeds, self.added_cond_kwargs
        if self._text_encoder_fn is None:
            raise ParameterError(
                f"prompt {prompt!r} needs the text encoders, which were dropped after encoding the empty "
                "prompt; load with load_backbone(..., keep_text_encoders=True) or use prompt=''."
            )
        embeds, added = self._text_encoder_fn(prompt)
        embeds = embeds.to(self.device, self.dtype)
        if added is not None:
            added = {k: v.to(self.device, self.dtype) for k, v in added.items()}
        return embeds, added

    @torch.inference_mode()
    def forward(
        self,
        x_t: torch.Tensor,
        t: int | torch.Tensor,
        *,
        prompt_embeds: torch.Tensor | None = None,
        added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One UNet call on ``x_t`` at timestep ``t`` with the stored (empty-prompt) conditioning.

        Returns
        -------
        torch.Tensor
            The UNet output (noise prediction) ``(B, C, h, w)``.
        """
        t_int = self.check_timestep(t)
        b = x_t.shape[0]
        if prompt_embeds is None:
            prompt_embeds, stored_added = self.conditioning("")
            added_cond_kwargs = stored_added if added_cond_kwargs is None else added_cond_kwargs
        enc = prompt_embeds.to(self.device, self.dtype).expand(b, -1, -1)
        added = None
        if added_cond_kwargs is not None:
            added = {k: v.to(self.device, self.dtype).expand(b, *v.shape[1:]) for k, v in added_cond_kwargs.items()}
        ts = torch.full((b,), t_int, dtype=torch.long, device=self.device)
        out = self.unet(
            x_t.to(self.device, self.dtype), ts, encoder_hidden_states=enc, added_cond_kwargs=added, return_dict=False
        )
        return out[0]

    __call__ = forward


# ----------------------------------------------------------------------------------------------------
# family detection


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
            return {10: "sdxl", 4: "ssd-1b", 2: "vega"}.get(depth, "sdxl")
        return "sdxl"
    if cross == 768:
        return "sd1"
    if cross == 1024:
        return "sd2"
    return "unknown"


# ----------------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class _Layout:
    """What a model directory holds (read from its files, before any weights are loaded)."""

    root: Path
    unet_config: dict
    has_vae: bool
    text_encoders: tuple[str, ...]  # subfolders with a text encoder and a tokenizer, in order
    meta: dict  # diffcut_lab.json
    conditioning: Path | None


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
    root, variant = _locate(
        name, variant=variant, use_safetensors=use_safetensors, revision=revision,
        local_files_only=local_files_only, configs_only=not weights, need_text_encoders=prompt_embeds is None,
    )  # fmt: skip
    layout = _read_layout(root, name)
    if not weights:
        return _skeleton(layout, name=name, image_size=image_size)
    return _build(
        layout,
        name=name,
        device=dev,
        dtype=dt,
        vae_dtype=vae_dtype,
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled_prompt_embeds,
        image_size=image_size,
        use_safetensors=use_safetensors,
        variant=variant,
        keep_text_encoders=keep_text_encoders,
    )


def _locate(
    name: str,
    *,
    variant: str | None,
    use_safetensors: bool,
    revision: str | None,
    local_files_only: bool,
    configs_only: bool,
    need_text_encoders: bool,
) -> tuple[Path, str | None]:
    """The model directory of a source (``"pocket"``, a directory or a hub id) and the weight variant to read."""
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
    elif _HUB_ID.match(name):
        root, variant = _fetch_from_hub(
            name, variant=variant, use_safetensors=use_safetensors, revision=revision,
            local_files_only=local_files_only, configs_only=configs_only,
            need_text_encoders=need_text_encoders,
        )
    else:
        raise ModelLoadError(
            f"model source {name!r} is neither 'pocket', an existing directory, nor a Hugging Face Hub id "
            "('owner/name'); check the path, or use 'pocket' to run offline."
        )
    return root, variant


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from err


def _read_layout(root: Path, name: str) -> _Layout:
    index = _read_json(root / "model_index.json") if (root / "model_index.json").exists() else {}
    if not (root / "unet").is_dir():
        pipeline = index.get("_class_name", "")
        found = [d for d in _TRANSFORMER_DIRS if (root / d).is_dir() or d in index]
        if found:
            raise UnsupportedModelError(
                f"{name!r} is a transformer-based diffusion pipeline ({pipeline or found[0]}: no UNet, a "
                f"{found[0]}/ instead). DiffCut reads the self-attention of a UNet encoder; use a Stable "
                "Diffusion 1.x/2.x/XL-family model such as 'segmind/SSD-1B', or 'pocket' offline."
            )
        raise UnsupportedModelError(
            f"{name!r} has no unet/ folder; expected a diffusers UNet pipeline directory (unet/, "
            "scheduler/, optional vae/ and text encoders), e.g. 'segmind/SSD-1B' or 'pocket'."
        )
    cfg_path = root / "unet" / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(f"{name!r}: unet/config.json is missing; the model directory is incomplete.")
    unet_config = _read_json(cfg_path)
    cls = unet_config.get("_class_name", "UNet2DConditionModel")
    if cls not in _SUPPORTED_UNETS:
        why = (
            "it has no cross-attention transformer blocks (no attn1/attn2 to read)"
            if cls == "UNet2DModel"
            else "its blocks are not the Stable Diffusion UNet's"
        )
        raise UnsupportedModelError(
            f"{name!r} has a {cls}, which the toolkit cannot read: {why}. Supported: "
            f"{', '.join(_SUPPORTED_UNETS)} (Stable Diffusion 1.x/2.x/XL, SSD-1B, Vega, the pocket model)."
        )
    encoders = tuple(
        sub
        for sub in ("text_encoder", "text_encoder_2")
        if (root / sub).is_dir() and (root / sub.replace("text_encoder", "tokenizer")).is_dir()
    )
    meta = _read_json(root / "diffcut_lab.json") if (root / "diffcut_lab.json").exists() else {}
    cond = root / "conditioning.safetensors"
    return _Layout(
        root=root,
        unet_config=unet_config,
        has_vae=(root / "vae").is_dir(),
        text_encoders=encoders,
        meta=meta,
        conditioning=cond if cond.exists() else None,
    )


def _fetch_from_hub(
    repo_id: str,
    *,
    variant: str | None,
    use_safetensors: bool,
    revision: str | None,
    local_files_only: bool,
    configs_only: bool = False,
    need_text_encoders: bool = True,
) -> tuple[Path, str | None]:
    """Download (or find in the cache) only the files feature extraction needs; returns (dir, variant)."""
    import huggingface_hub

    def snapshot(patterns: list[str], ignore: list[str] | None = None) -> Path:
        try:
            path = huggingface_hub.snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=patterns,
                ignore_patterns=ignore,
                local_files_only=local_files_only,
            )
        except Exception as err:  # network, auth, missing repo, offline cache miss: one clear message
            raise ModelLoadError(
                f"could not get {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}). Check "
                "the id and your connection (gated models need `huggingface-cli login`), pass a local "
                "diffusers directory, or use load_backbone('pocket') to work offline."
            ) from err
        return Path(path)

    small = ["model_index.json", "diffcut_lab.json", "conditioning.safetensors", "*/*.json", "*/*.txt", "*/*.model"]
    root = snapshot(small)
    comps = [c for c in ("unet", "vae", "text_encoder", "text_encoder_2") if (root / c / "config.json").exists()]
    if "unet" not in comps or configs_only:
        return root, variant  # without a UNet, _read_layout explains what the repository is instead
    if not need_text_encoders or (root / "conditioning.safetensors").exists():
        comps = [c for c in comps if not c.startswith("text_encoder")]
    ext = "safetensors" if use_safetensors else "bin"
    if variant:
        root = snapshot([*small, *(f"{c}/*.{variant}.{ext}" for c in comps), *(f"{c}/*.{variant}-*.{ext}" for c in comps)])
    missing = [c for c in comps if _component_variant(root / c, variant, ext) is None]
    if missing:  # components without the variant (or no variant asked): the full-precision files
        root = snapshot([*small, *(f"{c}/*.{ext}" for c in missing)], ignore=["*.fp16*", "*.bf16*", "*.fp32*"])
    if _component_variant(root / "unet", variant, ext) is None and not _has_plain_weights(root / "unet", ext):
        raise ModelLoadError(
            f"{repo_id!r} has no {ext} UNet weights (looked for unet/*.{ext}"
            + (f" and the {variant!r} variant" if variant else "")
            + "). Try use_safetensors=False for .bin weights, or use 'pocket' offline."
        )
    return root, variant


def _skeleton(layout: _Layout, *, name: str, image_size: int | None) -> Backbone:
    """A weightless backbone: the UNet built from its config on the meta device."""
    unet = _diffusers.new_unet(layout.unet_config, empty=True)
    family, image_size, latent_scale = _family_and_sizes(layout, unet.config, image_size)
    return Backbone(
        unet,
        family=family,
        name=name,
        image_size=image_size,
        latent_scale=latent_scale,
        diffcut_layer=layout.meta.get("diffcut_layer"),
    )


def _family_and_sizes(layout: _Layout, unet_config: Mapping[str, Any], image_size: int | None) -> tuple[str, int, int]:
    """``(family, image_size, latent_scale)`` of a model directory, from its config files."""
    latent_scale = 1
    if layout.has_vae:
        latent_scale = _diffusers.vae_latent_scale(_read_json(layout.root / "vae" / "config.json"))
    family = layout.meta.get("family") or detect_family(unet_config)
    if image_size is None:
        image_size = layout.meta.get("image_size") or int(unet_config["sample_size"]) * latent_scale
    return family, int(image_size), latent_scale


@dataclass(frozen=True)
class ModelOutline(_InputSizes):
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
    from .hook_points import outline_from_config, unet_outline

    name = str(source)
    root, _ = _locate(
        name, variant=None, use_safetensors=True, revision=revision, local_files_only=local_files_only,
        configs_only=True, need_text_encoders=False,
    )  # fmt: skip
    layout = _read_layout(root, name)
    outline = outline_from_config(layout.unet_config)
    if outline is None:  # blocks the config reader does not know: the built (weightless) modules tell
        bb = _skeleton(layout, name=name, image_size=image_size)
        return ModelOutline(name, bb.family, bb.image_size, bb.latent_scale, unet_outline(bb.unet), bb.diffcut_layer)
    family, size, latent_scale = _family_and_sizes(layout, layout.unet_config, image_size)
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
    layout = _Layout(
        root=Path("."),
        unet_config=dict(unet_config),
        has_vae=False,
        text_encoders=(),
        meta={"family": family, "image_size": image_size, "diffcut_layer": diffcut_layer},
        conditioning=None,
    )
    bb = _skeleton(layout, name=name, image_size=image_size or int(unet_config.get("sample_size", 64)) * latent_scale)
    bb.latent_scale = int(latent_scale)
    return bb


def _component_variant(folder: Path, variant: str | None, ext: str = "safetensors") -> str | None:
    """``variant`` if ``folder`` holds weights of that variant, else ``None`` (the full-precision files)."""
    if not variant or not folder.is_dir():
        return None
    names = [f.name for f in folder.iterdir() if f.name.endswith(f".{ext}")]
    return variant if any(f".{variant}." in n or f".{variant}-" in n for n in names) else None


def _has_plain_weights(folder: Path, ext: str) -> bool:
    """Whether ``folder`` holds non-variant weight files (single or sharded)."""
    if not folder.is_dir():
        return False
    return any(f.name.endswith(f".{ext}") and "." not in f.name[: -len(ext) - 1] for f in folder.iterdir())


def _load_scheduler(root: Path) -> Any:
    cfg_path = root / "scheduler" / "scheduler_config.json"
    return _diffusers.ddim_scheduler(_read_json(cfg_path) if cfg_path.exists() else None)


def _from_pretrained(kind: str, root: Path, sub: str, name: str, **kwargs: Any) -> Any:
    try:
        return _diffusers.load_component(kind, str(root), sub, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load {sub}/ of {name!r}: {err}. The weights may be missing or incomplete; "
            "re-download them, or use 'pocket' offline."
        ) from err


def _build(
    layout: _Layout,
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
    root = layout.root
    ext = "safetensors" if use_safetensors else "bin"

    def weights_kw(sub: str) -> dict[str, Any]:
        kw: dict[str, Any] = {"use_safetensors": use_safetensors}
        v = _component_variant(root / sub, variant, ext)
        if v:
            kw["variant"] = v
        return kw

    unet = _from_pretrained("unet", root, "unet", name, torch_dtype=dtype, **weights_kw("unet"))
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
    latent_scale = _diffusers.vae_latent_scale(vae) if vae is not None else 1
    family = layout.meta.get("family") or detect_family(unet.config)
    if image_size is None:
        image_size = layout.meta.get("image_size") or int(unet.config.sample_size) * latent_scale
    image_size = int(image_size)

    text_fn = None
    if prompt_embeds is None and layout.conditioning is not None:
        prompt_embeds, pooled_file = _read_conditioning(layout.conditioning)
        pooled_prompt_embeds = pooled_prompt_embeds if pooled_prompt_embeds is not None else pooled_file
        if keep_text_encoders and layout.text_encoders:
            text_fn = _text_encoder_fn(root, layout.text_encoders, name, device)
    elif prompt_embeds is None:
        if not layout.text_encoders:
            raise ModelLoadError(
                f"{name!r} has no text encoder + tokenizer and no conditioning.safetensors; pass "
                "prompt_embeds=... (1, L, D) (and pooled_prompt_embeds=... for SDXL-family models)."
            )
        text_fn = _text_encoder_fn(root, layout.text_encoders, name, device)
        prompt_embeds, pooled_prompt_embeds = text_fn("")
        if not keep_text_encoders:
            text_fn = None
    prompt_embeds = _check_embeds(prompt_embeds, unet.config, name)

    added = None
    if unet.config.addition_embed_type == "text_time":
        if pooled_prompt_embeds is None:
            raise ModelLoadError(
                f"{name!r} is an SDXL-family UNet (text_time conditioning) but no pooled prompt embedding "
                "was found; pass pooled_prompt_embeds=... (1, D) or add it to conditioning.safetensors."
            )
        added = sdxl_added_cond(pooled_prompt_embeds, image_size)
    if text_fn is not None and unet.config.addition_embed_type == "text_time":
        inner = text_fn

        def text_fn(prompt: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            emb, pooled = inner(prompt)
            return emb, sdxl_added_cond(pooled, image_size)
    elif text_fn is not None:
        inner_plain = text_fn

        def text_fn(prompt: str) -> tuple[torch.Tensor, None]:
            return inner_plain(prompt)[0], None

    return Backbone(
        unet,
        vae=vae,
        scheduler=_load_scheduler(root),
        prompt_embeds=prompt_embeds,
        added_cond_kwargs=added,
        family=family,
        name=name,
        image_size=image_size,
        latent_scale=latent_scale,
        diffcut_layer=layout.meta.get("diffcut_layer"),
        text_encoder_fn=text_fn,
    )


def sdxl_added_cond(pooled: torch.Tensor, image_size: int | tuple[int, int]) -> dict[str, torch.Tensor]:
    """SDXL's ``added_cond_kwargs`` for the pooled embedding and ``time_ids = (size, (0, 0), size)``."""
    from .images import parse_size

    h, w = parse_size(image_size)
    pooled = pooled.reshape(1, -1)
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)
    return {"text_embeds": pooled, "time_ids": time_ids}


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


def _text_encoder_fn(root: Path, subs: tuple[str, ...], name: str, device: torch.device) -> Any:
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
