"""The pocket model's noise schedule without diffusers: what ``DDIMScheduler.add_noise`` computes.

:func:`ddim_schedule` reads a ``scheduler_config.json`` as ``DDIMScheduler.from_config(config,
timestep_spacing="trailing")`` does (the same ``config`` dict, so a model's fingerprint does not change) and
:meth:`NoiseSchedule.add_noise` noises samples with the same operations in the same order (diffusers
0.42's ``scheduling_ddim.py``); ``tests/test_pocket_light.py`` checks both against diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .unet import Config

__all__ = ["NoiseSchedule", "ddim_schedule", "supports_schedule"]

#: ``DDIMScheduler.__init__``'s parameters and defaults, in order
DDIM_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}
_BETAS = ("linear", "scaled_linear")


def supports_schedule(config: Mapping[str, Any]) -> bool:
    """Whether :func:`ddim_schedule` reads ``config`` (linear or scaled-linear betas, nothing rescaled)."""
    cfg = _given(config)
    return (
        "_diffusers_version" in config
        and cfg.get("beta_schedule", DDIM_DEFAULTS["beta_schedule"]) in _BETAS
        and cfg.get("trained_betas") is None
        and not cfg.get("rescale_betas_zero_snr", False)
    )


def _given(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a stored config that were written by hand (not defaults a save filled in)."""
    used_defaults = config.get("_use_default_values", [])
    return {k: v for k, v in config.items() if k not in used_defaults and k != "_use_default_values"}


def ddim_schedule(config: Mapping[str, Any], **overrides: Any) -> NoiseSchedule:
    """The schedule ``DDIMScheduler.from_config(config, **overrides)`` would make, with the same ``config``.

    Raises
    ------
    ValueError
        A config :func:`supports_schedule` refuses.
    """
    if not supports_schedule(config):
        raise ValueError("this scheduler config is not one diffcut_lab.pocket.schedule reads")
    given = _given(config)
    init = {k: overrides.get(k, given.get(k, default)) for k, default in DDIM_DEFAULTS.items()}
    defaults_used = [k for k in DDIM_DEFAULTS if k not in overrides and k not in given]
    hidden = {k: v for k, v in given.items() if k not in init and k != "_class_name"}
    return NoiseSchedule(
        Config({**init, "_use_default_values": defaults_used, "_class_name": "DDIMScheduler", **hidden})
    )


class NoiseSchedule:
    """The forward diffusion of a DDIM schedule: betas, ``alphas_cumprod`` and :meth:`add_noise`.

    Attributes
    ----------
    config : Config
        The settings (as ``DDIMScheduler.config``).
    betas, alphas, alphas_cumprod : torch.Tensor
        ``(num_train_timesteps,)`` float32.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        n, start, end = config.num_train_timesteps, config.beta_start, config.beta_end
        if config.beta_schedule == "linear":
            self.betas = torch.linspace(start, end, n, dtype=torch.float32)
        else:  # scaled_linear
            self.betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``sqrt(abar_t) x + sqrt(1 - abar_t) noise`` per sample, in ``original_samples``' dtype."""
        self.alphas_cumprod = self.alphas_cumprod.to(device=original_samples.device)
        alphas_cumprod = self.alphas_cumprod.to(dtype=original_samples.dtype)
        timesteps = timesteps.to(original_samples.device)
        sqrt_alpha_prod = alphas_cumprod[timesteps] ** 0.5
        sqrt_alpha_prod = sqrt_alpha_prod.flatten()
        while len(sqrt_alpha_prod.shape) < len(original_samples.shape):
            sqrt_alpha_prod = sqrt_alpha_prod.unsqueeze(-1)
        sqrt_one_minus_alpha_prod = (1 - alphas_cumprod[timesteps]) ** 0.5
        sqrt_one_minus_alpha_prod = sqrt_one_minus_alpha_prod.flatten()
        while len(sqrt_one_minus_alpha_prod.shape) < len(original_samples.shape):
            sqrt_one_minus_alpha_prod = sqrt_one_minus_alpha_prod.unsqueeze(-1)
        return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

    def __repr__(self) -> str:
        return f"NoiseSchedule({dict(self.config)})"
