"""Every detail of diffusers' (and transformers') internals the package relies on, in one place: a
diffusers upgrade touches this file.

- Hooks: the module classes that carry hook points (diffusers' and the pocket model's own), and an
  attention processor that also keeps the attention probabilities (for either's attention modules).
- Models: UNet and VAE construction (seeded, or weightless on the meta device), loading a component
  from a model folder, the noise schedulers, the VAE's latent scale, and the prompt encoder of the
  Stable Diffusion / SDXL pipelines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = [
    "PROBS_CHUNK_BYTES",
    "ProbsProcessor",
    "ddim_scheduler",
    "ddpm_scheduler",
    "load_component",
    "module_classes",
    "new_unet",
    "new_vae",
    "outputs_modified_in_place",
    "prompt_encoder",
    "vae_latent_scale",
]

PROBS_CHUNK_BYTES = 1 << 28  # bound on the float32 attention scores materialised at once


#: the module classes that carry hook points, by hook kind: (defining module, class name) in diffusers
_HOOK_CLASSES = {
    "attention": ("diffusers.models.attention_processor", "Attention"),
    "block": ("diffusers.models.attention", "BasicTransformerBlock"),
    "attentions": ("diffusers.models.transformers.transformer_2d", "Transformer2DModel"),
    "resnet": ("diffusers.models.resnet", "ResnetBlock2D"),
}


def module_classes() -> dict[str, tuple[type, ...]]:
    """The module classes whose instances carry hook points, by hook kind (for ``isinstance``).

    Each kind has the pocket model's own class (:mod:`diffcut_lab.pocket.unet`, which imports no
    diffusers) and diffusers' class when diffusers has loaded the module that defines it -- which it has
    whenever a diffusers UNet exists, so nothing is imported here.
    """
    from .pocket import unet as light

    own = {
        "attention": light.Attention,
        "block": light.BasicTransformerBlock,
        "attentions": light.Transformer2DModel,
        "resnet": light.ResnetBlock2D,
    }
    out = {}
    for kind, (module, name) in _HOOK_CLASSES.items():
        loaded = sys.modules.get(module)
        theirs = getattr(loaded, name, None) if loaded is not None else None
        out[kind] = (own[kind],) if theirs is None else (own[kind], theirs)
    return out


class ProbsProcessor:
    """Self-attention processor that also keeps head-averaged attention probabilities.

    The module's output is computed by the processor it replaces (``original``, diffusers' default
    scaled-dot-product one), so capturing probabilities never changes a feature: the same bits whether
    or not ``.probs`` is asked for (a hand-written softmax-times-values differs from the fused kernel in
    the last bits, enough to move a K-way cut). The probabilities are then computed on the side in
    float32, a chunk of query rows at a time (bounding memory to about ``PROBS_CHUNK_BYTES`` of scores),
    with diffusers' pre-processing (spatial/group norm, q/k norms, mask), and handed to ``sink`` as
    ``(B, N, N)``.
    """

    def __init__(self, original: Any, sink: Callable[[torch.Tensor], None], store_dtype: torch.dtype):
        self.original = original
        self.sink = sink
        self.store_dtype = store_dtype

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        self.sink(self._probs(attn, hidden_states, encoder_hidden_states, attention_mask, temb))
        return out

    def _probs(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
    ) -> torch.Tensor:
        """``(B, N_q, N_k)`` head-averaged ``softmax(q k^T * scale)``, in the store dtype."""
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim == 4:
            b4, c4, h4, w4 = hidden_states.shape
            hidden_states = hidden_states.view(b4, c4, h4 * w4).transpose(1, 2)
        batch, seq, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        q = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        k = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        n_q, n_k = q.shape[2], k.shape[2]
        scale = attn.scale if getattr(attn, "scale_qk", True) else 1.0
        kf = k.float()
        probs = torch.empty(batch, n_q, n_k, device=q.device, dtype=self.store_dtype)
        rows = max(1, PROBS_CHUNK_BYTES // (4 * batch * heads * n_k))
        for s in range(0, n_q, rows):
            e = min(n_q, s + rows)
            scores = torch.matmul(q[:, :, s:e].float(), kf.transpose(-1, -2)) * scale
            if attention_mask is not None:
                scores = scores + attention_mask[:, :, s:e].float()
            probs[:, s:e] = scores.softmax(dim=-1).mean(dim=1).to(self.store_dtype)
        return probs


# ----------------------------------------------------------------------------------------------------
# models


def new_unet(config: Mapping[str, Any], *, seed: int | None = 0, empty: bool = False) -> Any:
    """A ``UNet2DConditionModel`` from its config: seeded random weights, or none (``empty``: meta device).

    The caller's global random state is left alone (the seed is applied inside a forked RNG).
    """
    from diffusers import UNet2DConditionModel

    if empty:
        from accelerate import init_empty_weights

        with init_empty_weights():
            return UNet2DConditionModel.from_config(dict(config))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return UNet2DConditionModel(**config)


def new_vae(config: Mapping[str, Any], *, seed: int = 0) -> Any:
    """An ``AutoencoderKL`` with seeded random weights (the caller's random state is left alone)."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**config)


def load_component(kind: str, root: str, subfolder: str, **kwargs: Any) -> Any:
    """``from_pretrained`` of the ``"unet"`` or ``"vae"`` in ``root/subfolder``.

    Only the class asked for is imported: diffusers' ``autoencoders`` package imports every VAE it has
    (about 40 modules, 0.1-0.2 s), which a pixel-space model such as the pocket model never needs.
    """
    import diffusers  # a lazy module: an attribute imports only the module that defines it

    cls = getattr(diffusers, {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL"}[kind])
    return cls.from_pretrained(root, subfolder=subfolder, **kwargs)


def vae_latent_scale(vae_config: Mapping[str, Any] | Any) -> int:
    """Pixels per latent cell of a VAE (its config, or the model): ``2 ** (levels - 1)``."""
    cfg = getattr(vae_config, "config", vae_config)
    channels = cfg.get("block_out_channels", (0,) * 4) if isinstance(cfg, Mapping) else cfg.block_out_channels
    return 2 ** (len(channels) - 1)


def ddim_scheduler(config: Mapping[str, Any] | None = None) -> Any:
    """The DDIM scheduler whose ``add_noise`` noises images, as the paper does whatever the sampler.

    From a model's ``scheduler_config.json`` when given (trailing timestep spacing), else Stable
    Diffusion's schedule (scaled-linear betas 0.00085-0.012 over 1,000 steps).
    """
    from diffusers import DDIMScheduler

    if config is not None:
        return DDIMScheduler.from_config(dict(config), timestep_spacing="trailing")
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )


def ddpm_scheduler(**config: Any) -> Any:
    """A ``DDPMScheduler`` (training noise schedule) from keyword settings."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**config)


def prompt_encoder(root: str, subfolders: tuple[str, ...], device: torch.device) -> Callable:
    """Load the tokenizer(s) and text encoder(s); return ``prompt -> (embeds, pooled)``.

    One encoder (SD 1.x/2.x): the last hidden state. Two (SDXL): the penultimate hidden states of both,
    concatenated along channels, and the pooled (projected) output of the second. Raises ``LookupError``
    for an encoder class transformers does not have, and what ``from_pretrained`` raises (``OSError``,
    ``ValueError``) for missing or broken files.
    """
    import json
    from pathlib import Path

    import transformers

    encoders = []
    for sub in subfolders:
        tok_sub = sub.replace("text_encoder", "tokenizer")
        cfg = json.loads((Path(root) / sub / "config.json").read_text())
        arch = (cfg.get("architectures") or ["CLIPTextModel"])[0]
        cls = getattr(transformers, arch, None)
        if cls is None:
            raise LookupError(f"text encoder class {arch!r} is not in transformers")
        tok = transformers.AutoTokenizer.from_pretrained(root, subfolder=tok_sub)
        enc = cls.from_pretrained(root, subfolder=sub)
        encoders.append((tok, enc.to(device).eval().requires_grad_(False)))
    sdxl = len(encoders) == 2

    @torch.inference_mode()
    def encode(prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, pooled = [], None
        for tok, enc in encoders:
            ids = tok(
                [prompt],
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            out = enc(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2] if sdxl else out.last_hidden_state)
            pooled = getattr(out, "text_embeds", None)
            if pooled is None:
                pooled = getattr(out, "pooler_output", None)
        return torch.cat(states, dim=-1).float().cpu(), None if pooled is None else pooled.float().cpu()

    return encode


def outputs_modified_in_place(unet: Any) -> bool:
    """Whether diffusers may write into a hooked module's output after the module has returned.

    ``UNet2DConditionModel`` never does (residuals are added out of place: ``attn_output + hidden_states``,
    ``input_tensor + hidden_states``, ``hidden_states + residual``), with two exceptions: FreeU
    (``unet.enable_freeu``) scales half the channels of each up block's input in place, and T2I-Adapter
    residuals are added in place (``sample += ...``), which :meth:`Backbone.forward` never passes. So an
    output is kept without a copy unless FreeU is on.
    """
    freeu = ("b1", "b2", "s1", "s2")
    return any(getattr(blk, k, None) is not None for blk in getattr(unet, "up_blocks", ()) for k in freeu)
