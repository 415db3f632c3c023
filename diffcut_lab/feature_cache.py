"""Features kept: ``FeatureCache`` (what :func:`~diffcut_lab.capturing.capture` returns, and its files) and
``FeatureStore`` (the on-disk cache of single feature maps that ablations and ``eval`` reuse).

``cache[layer, t]`` is a ``(B, C, h, w)`` feature map (``probs``: ``(B, N, N)``) of one hook point at one
timestep; ``save`` / ``load`` write and read a ``.safetensors`` file of the tensors and a ``.json``
sidecar that says which tensor is which (checked on load: a sidecar that does not describe its tensors is
refused).

A :class:`FeatureStore` keeps one safetensors file per (model, image, input size, timestep, seed, noise
device, prompt, layer), under ``<cache_dir>/<key[:2]>/<key>.safetensors``; the key is a SHA-256 of a JSON
record of those fields, with the model identified by a fingerprint of its weights (not only its name: two
checkpoints under one path never share entries) and the image by a hash of the exact input tensor
(content, crop and size). A file is written to a temporary name and renamed, so a killed run never leaves
a half-written entry behind. An entry records its own key, what it holds (the image's content hash, layer,
timestep, size) and a checksum of its values; on reading, all are checked, so a damaged file, or one copied
or moved under another key (another image's features, another timestep's), is refused and computed again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import FeatureError, ParameterError, UnknownLayerError
from .hook_points import close_names

__all__ = ["FeatureCache", "FeatureStore", "feature_key", "image_hash", "model_fingerprint"]


def _key(layer: str, t: int) -> str:
    return f"{layer}@t={t}"


class FeatureCache:
    """Features captured by :func:`capture`: ``cache[layer, t] -> (B, C, h, w)`` (``probs``: ``(B, N, N)``).

    ``layer`` is a hook name or the ``"diffcut"`` alias (when it was captured); ``cache[layer]`` works
    when one timestep was captured.

    Attributes
    ----------
    layers : list of str
        Hook names, in the order requested.
    timesteps : list of int
    meta : dict
        ``model, family, seed, image_size, prompt, store_dtype, latent_scale, kinds, ...``.
    images : torch.Tensor or None
        The ``(B, 3, H, W)`` batch in [0, 1] that was encoded.
    aliases : dict
        ``{"diffcut": hook name}`` when known.
    """

    def __init__(
        self,
        features: dict[tuple[str, int], torch.Tensor],
        *,
        layers: Sequence[str],
        timesteps: Sequence[int],
        meta: dict[str, Any] | None = None,
        images: torch.Tensor | None = None,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self._features = dict(features)
        self.layers = list(layers)
        self.timesteps = [int(t) for t in timesteps]
        self.meta = dict(meta or {})
        self.images = images
        self.aliases = dict(aliases or {})

    # -- access ---------------------------------------------------------------------------------------

    def _layer(self, layer: str) -> str:
        name = self.aliases.get(layer, layer)
        if name not in self.layers:
            usable = self.layers + [a for a, target in self.aliases.items() if target in self.layers]
            if layer in self.aliases:
                raise UnknownLayerError(
                    f"{layer!r} stands for the layer {name!r} in this cache, which was not captured; captured: "
                    f"{close_names(name, usable)}."
                )
            raise UnknownLayerError(
                f"layer {layer!r} was not captured; captured: {close_names(layer, usable)}."
            )
        return name

    def __getitem__(self, key: str | tuple[str, int]) -> torch.Tensor:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise ParameterError(f"index a FeatureCache with cache[layer, t]; got {key!r}.")
            layer, t = key
            return self.get(layer, t)
        return self.get(key)

    def get(self, layer: str, t: int | None = None) -> torch.Tensor:
        """Features of ``layer`` at timestep ``t`` (``t`` may be omitted when one was captured)."""
        name = self._layer(layer)
        if t is None:
            if len(self.timesteps) != 1:
                raise ParameterError(
                    f"{len(self.timesteps)} timesteps were captured {self.timesteps}; use cache[layer, t]."
                )
            t = self.timesteps[0]
        if int(t) not in self.timesteps:
            raise ParameterError(f"timestep {t} was not captured; captured: {self.timesteps}.")
        return self._features[(name, int(t))]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple) and len(key) == 2:
            layer, t = key
            return self.aliases.get(layer, layer) in self.layers and t in self.timesteps
        return isinstance(key, str) and self.aliases.get(key, key) in self.layers

    def keys(self) -> list[tuple[str, int]]:
        """``(layer, t)`` pairs, layers first in requested order, then timesteps."""
        return [(layer, t) for layer in self.layers for t in self.timesteps]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._features)

    def items(self) -> Iterator[tuple[tuple[str, int], torch.Tensor]]:
        """``((layer, t), tensor)`` pairs."""
        for k in self.keys():
            yield k, self._features[k]

    def stack(self, layer: str) -> torch.Tensor:
        """All timesteps of one layer: ``(T, B, ...)`` in the order of :attr:`timesteps`."""
        name = self._layer(layer)
        return torch.stack([self._features[(name, t)] for t in self.timesteps])

    @property
    def batch_size(self) -> int:
        """Number of images ``B``."""
        first = next(iter(self._features.values()), None)
        return 0 if first is None else int(first.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the features (not counting :attr:`images`)."""
        return sum(t.numel() * t.element_size() for t in self._features.values())

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{layer}: {tuple(self._features[(layer, self.timesteps[0])].shape)}" for layer in self.layers[:4]
        )
        more = f", ... (+{len(self.layers) - 4})" if len(self.layers) > 4 else ""
        return (
            f"FeatureCache(model={self.meta.get('model')!r}, timesteps={self.timesteps}, "
            f"{len(self.layers)} layer(s) {{{shapes}{more}}}, {self.nbytes / 2**20:.1f} MiB)"
        )

    # -- conversion -----------------------------------------------------------------------------------

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> FeatureCache:
        """A copy with features moved/cast (``.images`` moves too and stays float32)."""
        feats = {k: v.to(device=device, dtype=dtype) for k, v in self._features.items()}
        images = None if self.images is None else self.images.to(device=device)
        meta = dict(self.meta)
        if dtype is not None:
            meta["store_dtype"] = str(dtype).replace("torch.", "")
        return FeatureCache(
            feats,
            layers=self.layers,
            timesteps=self.timesteps,
            meta=meta,
            images=images,
            aliases=self.aliases,
        )

    # -- files ----------------------------------------------------------------------------------------

    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        p = Path(path)
        if p.suffix in (".safetensors", ".json"):
            p = p.with_suffix("")
        return p.with_suffix(".safetensors"), p.with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (tensors) and ``<path>.json`` (layers, timesteps, meta).

        Returns
        -------
        Path
            The ``.safetensors`` file.
        """
        from safetensors.torch import save_file

        tensor_path, json_path = self._paths(path)
        tensor_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {_key(layer, t): v.detach().cpu().contiguous() for (layer, t), v in self._features.items()}
        if self.images is not None:
            tensors["__images__"] = self.images.detach().cpu().float().contiguous()
        sidecar = {
            "format": "diffcut_lab.FeatureCache",
            "version": 1,
            "layers": self.layers,
            "timesteps": self.timesteps,
            "aliases": self.aliases,
            "meta": _jsonable(self.meta),
            "keys": {_key(layer, t): [layer, t] for (layer, t) in self._features},
        }
        _write_whole(tensor_path, lambda tmp: save_file(tensors, str(tmp)))
        _write_whole(json_path, lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2)))
        return tensor_path

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str = "cpu") -> FeatureCache:
        """Read a cache written by :meth:`save` (give the ``.safetensors``, the ``.json`` or the stem).

        Raises
        ------
        FeatureError
            Files missing or not a FeatureCache.
        """
        from safetensors.torch import load_file

        tensor_path, json_path = cls._paths(path)
        if not tensor_path.exists() or not json_path.exists():
            raise FeatureError(
                f"no feature cache at {str(tensor_path.with_suffix(''))!r}: expected {tensor_path.name} and "
                f"{json_path.name} written by FeatureCache.save."
            )
        try:
            sidecar = json.loads(json_path.read_text())
            tensors = load_file(str(tensor_path), device=str(device))
        except Exception as err:
            raise FeatureError(f"cannot read the feature cache {tensor_path}: {err}") from err
        if not isinstance(sidecar, dict) or sidecar.get("format") != "diffcut_lab.FeatureCache":
            raise FeatureError(f"{json_path} is not a diffcut_lab feature cache sidecar.")
        feats = _checked_entries(sidecar, tensors, json_path)
        return cls(
            feats,
            layers=sidecar["layers"],
            timesteps=sidecar["timesteps"],
            meta=sidecar.get("meta", {}),
            images=tensors.get("__images__"),
            aliases=sidecar.get("aliases", {}),
        )


def _write_whole(path: Path, write: Any) -> None:
    """Write ``path`` through a temporary file beside it, renamed when complete; a failure (a full disk,
    which safetensors reports as ``SafetensorError``) is an ``OSError`` naming ``path``, nothing left behind."""
    from safetensors import SafetensorError

    tmp = path.with_name(f".{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise OSError(errno.EIO, f"cannot write ({err})", str(path)) from err


def _checked_entries(sidecar: dict, tensors: dict[str, torch.Tensor], json_path: Path) -> dict:
    """The sidecar's (layer, t) -> tensor entries, each checked against the tensor file: a tensor is
    stored under its own (layer, t) name, so a sidecar that names another one is refused, never believed."""
    try:
        entries = {k: (str(layer), int(t)) for k, (layer, t) in sidecar["keys"].items()}
        layers, timesteps = list(sidecar["layers"]), [int(t) for t in sidecar["timesteps"]]
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise FeatureError(
            f"{json_path} is malformed ({type(err).__name__}: {err}); save the cache again."
        ) from None
    wrong = [k for k, (layer, t) in entries.items() if _key(layer, t) != k or k not in tensors]
    stored = {k for k in tensors if k != "__images__"}
    if (
        wrong
        or stored != set(entries)
        or {(layer, t) for layer in layers for t in timesteps} != set(entries.values())
    ):
        raise FeatureError(
            f"{json_path} does not describe the tensors beside it (entries {sorted(wrong or stored ^ set(entries))}); "
            "the two files do not belong together: save the cache again."
        )
    aliases, meta = sidecar.get("aliases", {}), sidecar.get("meta", {})
    if not isinstance(aliases, dict) or not all(
        isinstance(a, str) and isinstance(v, str) for a, v in aliases.items()
    ):
        raise FeatureError(
            f"{json_path} is malformed ('aliases' must map names to layer names); save the cache again."
        )
    if not isinstance(meta, dict):
        raise FeatureError(f"{json_path} is malformed ('meta' must be a mapping); save the cache again.")
    stray = {a: v for a, v in aliases.items() if v not in layers}
    if stray:
        raise FeatureError(
            f"{json_path} maps the alias(es) {stray} to layers that are not in the cache (its layers: {layers}); "
            "the two files do not belong together: save the cache again."
        )
    return {lt: tensors[k] for k, lt in entries.items()}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# ----------------------------------------------------------------------------------------------------
# the on-disk store of single feature maps


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


def _content_hash(t: torch.Tensor) -> str:
    """SHA-256 of a stored tensor's shape, dtype and bytes (what a feature-cache entry's checksum covers)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(
    *,
    model: str,
    image: str,
    size: int,
    timestep: int,
    seed: int,
    prompt: str,
    layer: str,
    dtype: str,
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
        """The cached tensor of ``key``, or None.

        Parameters
        ----------
        key : str
            The entry's key (:func:`feature_key`).
        expect : dict, optional
            What the entry must hold (``{"image": ..., "layer": ..., "timestep": ..., "size": ...}``),
            compared with the metadata :meth:`put` stored.

        Returns
        -------
        torch.Tensor or None
            None for a missing entry, and (with a warning) for an unreadable or damaged one (its values
            do not match their checksum) or one that is not what was asked for: stored under another key (a file copied or moved from another image, layer or
            timestep) or holding other metadata than ``expect``. Such entries count as misses and are
            computed again.
        """
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
        if meta.get("sha256") != _content_hash(t):
            return self._bad(p, "is damaged (its values do not match the checksum written with them)")
        if meta.get("key") != key:
            stored = meta.get("key")
            return self._bad(p, "holds another feature map (it was written under another key: "
                                f"{stored[:16] + '...' if stored else 'none recorded'})")  # fmt: skip
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
        """Store ``tensor`` under ``key`` atomically, with ``meta`` and the key itself as metadata.

        Returns
        -------
        Path
            The entry's file.

        Raises
        ------
        OSError
            The entry cannot be written (a full or read-only disk); the message names the file and
            nothing is left behind.
        """
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        data = tensor.detach().cpu().contiguous()
        metadata = {**{k: str(v) for k, v in (meta or {}).items()}, "key": key, "sha256": _content_hash(data)}
        try:
            save_file({"features": data}, str(tmp), metadata=metadata)
            os.replace(tmp, p)
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk as SafetensorError
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise
            raise OSError(errno.EIO, f"cannot write the feature cache entry ({err})", str(p)) from err
        return p

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.safetensors")) if self.root.is_dir() else 0

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, hits={self.hits}, misses={self.misses})"
