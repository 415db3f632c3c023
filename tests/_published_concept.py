"""A frozen copy of the published concept assignment's arithmetic (for tests only).

DiffCut's ``generate_masks`` (``diffcut/recursive_normalized_cut.py``, steps 2 and 3) with ODISE's
``MaskPooling`` (``tools/utils.py``), rewritten for one image on the CPU and kept operation for operation:
the attention output's ``(1, h, w, C)`` storage viewed as ``(1, C, h, w)`` and L2-normalised over
channels, one mask pooled at a time into row ``k`` of a ``(K, C)`` matrix, the features upsampled by
``nn.Upsample(mode="bilinear")``, ``t(features) @ t(embeddings)`` and ``torch.argmax``. Do not simplify
this file: layout, grouping and reduction order all change float32 bits, and the tests compare bit for
bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskPooling", "published_concept_assignment"]


class MaskPooling(nn.Module):
    """ODISE's mask pooling, as the published DiffCut code holds it."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)``; ``mask``: ``(B, Q, H, W)`` -> ``(B, Q, C)``."""
        if not x.shape[-2:] == mask.shape[-2:]:
            mask = F.interpolate(mask, size=x.shape[-2:], mode="nearest-exact")
        with torch.no_grad():
            mask = mask.detach()
            mask = (mask > 0).to(mask.dtype)
            denorm = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
        return torch.einsum("bchw,bqhw->bqc", x, mask / denorm)


def published_concept_assignment(
    labels: np.ndarray, features: torch.Tensor, size: int | tuple[int, int]
) -> np.ndarray:
    """``size`` (an int: a square) indices into the sorted ids of ``(h, w)`` ``labels`` for ``(C, h, w)``
    features."""
    h_mask, w_mask = (size, size) if isinstance(size, int) else size
    mask_size = (h_mask, w_mask)
    features = torch.as_tensor(features)
    c, h, w = features.shape
    # the hook's (1, h*w, C) output reshaped to (1, h, w, C) and permuted, as generate_masks does
    hook_output = features.permute(1, 2, 0).contiguous().reshape(1, h * w, c)
    feats = hook_output.reshape(1, h, w, -1).permute(0, 3, 1, 2).to(torch.float32)
    feats_norm = F.normalize(feats, dim=1)
    masks = torch.from_numpy(np.asarray(labels))[None, None]
    mask_pooling = MaskPooling()
    clusters_embeddings = torch.zeros(len(torch.unique(masks)), c)
    for k, cls_idx in enumerate(torch.unique(masks)):
        mask = masks == cls_idx
        mask_embed = mask_pooling(feats_norm, mask)[0]
        clusters_embeddings[k, :] = mask_embed
    upsampled_feats = torch.nn.Upsample(size=mask_size, mode="bilinear")(feats_norm)
    similarity_scores = torch.t(upsampled_feats.reshape(c, h_mask * w_mask)) @ torch.t(clusters_embeddings)
    return torch.argmax(similarity_scores, dim=1).reshape(h_mask, w_mask).numpy()
