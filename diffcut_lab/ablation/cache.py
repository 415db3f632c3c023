"""Features on disk, keyed by everything that determines them.

One safetensors file per (model, image, input size, timestep, seed, noise device, prompt, layer), under
``<cache_dir>/<key[:2]>/<key>.safetensors``; the key is a SHA-256 of a JSON record of those fields, with
the model identified by a fingerprint of its weights (not only its name: two checkpoints under one path
never share entries) and the image by a hash of the exact input tensor (content, crop and size). A file
is written to a temporary name and renamed, so a killed run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

import torch

__all__ = ["FeatureStore", "feature_key", "image_hash", "model_fingerprint"]

_FP_LOCK = threading.Lock()
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensor_digest(h: Any, name: str, t: torch.Tensor) -> None:
    """Feed a tensor's identity and a cheap summary of its values into a hash."""
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    if t.numel() == 0:
        return
    flat = t.detach().reshape(-1)
    stats = torch.stack([flat.double().sum(), flat.double().abs().sum(), (flat.double() ** 2).sum()])
    head = flat[:16].double()
    tail = flat[-16:].double()
    h.update(torch.cat([stats, head, tail]).cpu().numpy().tobytes())


def model_fingerprint(backbone: Any) -> str:
    """A hash of a backbone's weights, conditioning and noise schedule (memoised per object).

    Every parameter contributes its name, shape, dtype, sum, absolute sum, sum of squares and first and
    last values: two different checkpoints (or dtypes) get different fingerprints, while the cost stays
    one pass of reductions over the weights (a fraction of a second for SSD-1B on a GPU).
    """
    with _FP_LOCK:
        cached = _FINGERPRINTS.get(backbone)
        if cached is not None:
            return cached
    h = hashlib.sha256()
    h.update(f"{getattr(backbone, 'family', '')}|{getattr(backbone, 'latent_scale', '')}|".encode())
    with torch.no_grad():
        for prefix, module in (("unet", backbone.unet), ("vae", getattr(backbone, "vae", None))):
            if module is None:
                continue
            for name, t in module.state_dict().items():
                _tensor_digest(h, f"{prefix}.{name}", t)
        embeds = getattr(backbone, "prompt_embeds", None)
        if embeds is not None:
            _tensor_digest(h, "prompt_embeds", embeds)
        for k, v in sorted((getattr(backbone, "added_cond_kwargs", None) or {}).items()):
            _tensor_digest(h, f"added.{k}", v)
    sched = getattr(backbone, "scheduler", None)
    if sched is not None and hasattr(sched, "config"):
        h.update(json.dumps(dict(sched.config), sort_keys=True, default=str).encode())
    fp = h.hexdigest()[:24]
    with _FP_LOCK:
        _FINGERPRINTS[backbone] = fp
    return fp


def image_hash(image: torch.Tensor) -> str:
    """SHA-256 (shortened) of the exact input tensor (values, shape and dtype)."""
    t = image.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:24]


def feature_key(
    *, model: str, image: str, size: int, timestep: int, seed: int, prompt: str, layer: str, dtype: str,
    noise_device: str = "cpu",
) -> str:
    """The cache key of one feature map (see the module docstring)."""
    record = {
        "v": 2,
        "noise_device": noise_device,
        "model": model,
        "image": image,
        "size": int(size),
        "timestep": int(timestep),
        "seed": int(seed),
        "prompt": prompt,
        "layer": layer,
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class FeatureStore:
    """A directory of cached feature maps (safe for several processes writing at once).

    Parameters
    ----------
    root : path
        Cache directory (created on first write). Share it between workers through a shared file
        system when running on a cluster.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        """Where the entry of ``key`` lives."""
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, expect: dict[str, Any] | None = None) -> torch.Tensor | None:
        """The cached tensor, or None: a missing or unreadable entry, or one whose stored metadata differs
        from ``expect`` (a file moved under another key), counts as missing and is recomputed (with a
        warning for the last two)."""
        from safetensors import safe_open

        p = self.path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                t = f.get_tensor("features")
        except Exception as err:  # a truncated or foreign file: recompute
            return self._bad(p, f"cannot be read ({type(err).__name__})")
        wrong = {k: (meta.get(k), str(v)) for k, v in (expect or {}).items() if meta.get(k) != str(v)}
        if wrong:
            return self._bad(p, f"holds another feature map (stored, expected: {wrong})")
        self.hits += 1
        return t

    def _bad(self, path: Path, why: str) -> None:
        import warnings

        warnings.warn(f"feature cache entry {path} {why}; computing it again", RuntimeWarning, stacklevel=3)
        self.misses += 1
        return None

    def put(self, key: str, tensor: torch.Tensor, meta: dict[str, Any] | None = None) -> Path:
        """Store ``tensor`` under ``key`` atomically; returns the file path."""
        from safetensors.torch import save_file

        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        metadata = {k: str(v) for k, v in (meta or {}).items()}
        save_file({"features": tensor.detach().cpu().contiguous()}, str(tmp), metadata=metadata)
        os.replace(tmp, p)
        return p

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.safetensors")) if self.root.is_dir() else 0

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, hits={self.hits}, misses={self.misses})"
