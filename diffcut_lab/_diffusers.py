"""Every detail of diffusers' internals the hooks rely on, in one place (a diffusers upgrade touches this
file): the module classes that carry hook points, and an attention processor that also keeps the
attention probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["PROBS_CHUNK_BYTES", "ProbsProcessor", "module_classes"]

PROBS_CHUNK_BYTES = 1 << 28  # bound on the float32 attention scores materialised at once


def module_classes() -> dict[str, type]:
    """The diffusers classes whose instances carry hook points, by hook kind."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    return {
        "attention": Attention,
        "block": BasicTransformerBlock,
        "attentions": Transformer2DModel,
        "resnet": ResnetBlock2D,
    }



class ProbsProcessor:
    """Self-attention processor that also keeps head-averaged attention probabilities.

    Computes softmax(q k^T * scale) v in float32, a chunk of query rows at a time (bounding memory to
    about ``PROBS_CHUNK_BYTES`` of scores), and hands ``(B, N, N)`` probabilities to ``sink``. The
    pre- and post-processing follows diffusers' default processor (group/spatial norm, q/k norms,
    ``to_out``, residual connection, output rescale).
    """

    def __init__(self, sink: Callable[[torch.Tensor], None], store_dtype: torch.dtype):
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
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
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
        value = attn.to_v(encoder_hidden_states)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        q = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        k = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        v = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        n_q, n_k = q.shape[2], k.shape[2]
        scale = attn.scale if getattr(attn, "scale_qk", True) else 1.0
        kf, vf = k.float(), v.float()
        out = torch.empty(batch, heads, n_q, head_dim, device=q.device, dtype=torch.float32)
        probs = torch.empty(batch, n_q, n_k, device=q.device, dtype=self.store_dtype)
        rows = max(1, PROBS_CHUNK_BYTES // (4 * batch * heads * n_k))
        for s in range(0, n_q, rows):
            e = min(n_q, s + rows)
            scores = torch.matmul(q[:, :, s:e].float(), kf.transpose(-1, -2)) * scale
            if attention_mask is not None:
                scores = scores + attention_mask[:, :, s:e].float()
            p = scores.softmax(dim=-1)
            out[:, :, s:e] = torch.matmul(p, vf)
            probs[:, s:e] = p.mean(dim=1).to(self.store_dtype)
        hidden_states = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b4, c4, h4, w4)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        self.sink(probs)
        return hidden_states
