"""The :class:`Backbone`: a diffusion UNet with its encoder, noise schedule and conditioning.

A :class:`Backbone` holds only what feature extraction needs: the UNet, the VAE (``None`` for
pixel-space models), a scheduler for ``add_noise`` and the conditioning of the empty prompt (text
encoders are run once and dropped). Its three steps -- :meth:`~Backbone.encode`,
:meth:`~Backbone.add_noise`, :meth:`~Backbone.forward` -- are the whole of feature extraction; the calls
into diffusers live in :mod:`diffcut_lab._diffusers` (the pocket model runs without them). Also here: the devices and dtypes a backbone goes to
by default. Loading is :mod:`diffcut_lab.backbones`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from . import _diffusers
from .config import DiffCutConfig, parse_size
from .errors import ModelLoadError, ParameterError
from .options import NOISE_DEVICES
from .validation import check_int

__all__ = [
    "DTYPES",
    "Backbone",
    "InputSizes",
    "default_device",
    "default_dtype",
    "parse_dtype",
    "sdxl_added_cond",
]

#: the settings' defaults: the seed of the noise and where it is drawn when none is given
_DEFAULTS = DiffCutConfig()

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


class InputSizes:
    """Input sizes of a UNet model, for :class:`Backbone` and :class:`ModelOutline` alike (they define
    ``name``, ``image_size``, ``latent_scale`` and ``size_multiple``)."""

    name: str
    image_size: int
    latent_scale: int
    size_multiple: int

    def latent_size(self, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """``(h, w)`` of the UNet input for an image of ``image_size`` pixels (default: native size)."""
        h, w = parse_size(self.image_size if image_size is None else image_size)
        return h // self.latent_scale, w // self.latent_scale

    def check_image_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Validate an input size for this UNet and return it as ``(H, W)``.

        Raises
        ------
        ParameterError
            A side is not a multiple of :attr:`size_multiple`.
        """
        h, w = parse_size(image_size)
        m = self.size_multiple
        if h % m or w % m:
            near = (max(m, round(h / m) * m), max(m, round(w / m) * m))
            raise ParameterError(
                f"image size {(h, w)} does not fit {self.name or 'this model'}: sides must be multiples of "
                f"{m} pixels (latent scale {self.latent_scale} x the UNet's downsampling); try {near}."
            )
        return h, w


class Backbone(InputSizes):
    """A diffusion UNet ready for feature extraction, with its encoder, noise schedule and conditioning.

    Usually made by :func:`load_backbone` or :func:`diffcut_lab.testing.tiny_backbone`.

    Attributes
    ----------
    unet : diffusers.UNet2DConditionModel
        (for the bundled pocket model, :class:`diffcut_lab.pocket.unet.UNet2DConditionModel`: the same
        modules and arithmetic without importing diffusers)
    vae : diffusers.AutoencoderKL or None
        ``None`` for pixel-space models (images are fed as ``2 x - 1``).
    scheduler : diffusers.DDIMScheduler
        Used for ``add_noise``; ``scheduler.config.num_train_timesteps`` bounds the timesteps (the pocket
        model's is a :class:`diffcut_lab.pocket.schedule.NoiseSchedule`, the same numbers).
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
            self.added_cond_kwargs = {
                k: v.to(self.device, self.dtype) for k, v in self.added_cond_kwargs.items()
            }
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
        seed: int | None = _DEFAULTS.seed,
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
        seed: int | None = _DEFAULTS.seed,
        generator: torch.Generator | None = None,
        noise_device: str = _DEFAULTS.noise_device,
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
        t_int = check_int(int(t.item()) if isinstance(t, torch.Tensor) else t, "timestep")
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
            added = {
                k: v.to(self.device, self.dtype).expand(b, *v.shape[1:]) for k, v in added_cond_kwargs.items()
            }
        ts = torch.full((b,), t_int, dtype=torch.long, device=self.device)
        out = self.unet(
            x_t.to(self.device, self.dtype),
            ts,
            encoder_hidden_states=enc,
            added_cond_kwargs=added,
            return_dict=False,
        )
        return out[0]

    __call__ = forward


def sdxl_added_cond(pooled: torch.Tensor, image_size: int | tuple[int, int]) -> dict[str, torch.Tensor]:
    """SDXL's ``added_cond_kwargs`` for the pooled embedding and ``time_ids = (size, (0, 0), size)``."""
    h, w = parse_size(image_size)
    pooled = pooled.reshape(1, -1)
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)
    return {"text_embeds": pooled, "time_ids": time_ids}
