"""``FeatureCache``: what :func:`~diffcut_lab.capturing.capture` returns, and its files on disk.

``cache[layer, t]`` is a ``(B, C, h, w)`` feature map (``probs``: ``(B, N, N)``) of one hook point at one
timestep; ``save`` / ``load`` write and read a ``.safetensors`` file of the tensors and a ``.json``
sidecar that says which tensor is which (checked on load: a sidecar that does not describe its tensors is
refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import FeatureError, ParameterError, UnknownLayerError
from .hook_points import close_names

__all__ = ["FeatureCache"]


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
            raise UnknownLayerError(
                f"layer {layer!r} was not captured; captured: {close_names(layer, self.layers + list(self.aliases))}."
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
            feats, layers=self.layers, timesteps=self.timesteps, meta=meta, images=images, aliases=self.aliases
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
        save_file(tensors, str(tensor_path))
        sidecar = {
            "format": "diffcut_lab.FeatureCache",
            "version": 1,
            "layers": self.layers,
            "timesteps": self.timesteps,
            "aliases": self.aliases,
            "meta": _jsonable(self.meta),
            "keys": {_key(layer, t): [layer, t] for (layer, t) in self._features},
        }
        json_path.write_text(json.dumps(sidecar, indent=2))
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


def _checked_entries(sidecar: dict, tensors: dict[str, torch.Tensor], json_path: Path) -> dict:
    """The sidecar's (layer, t) -> tensor entries, each checked against the tensor file: a tensor is
    stored under its own (layer, t) name, so a sidecar that names another one is refused, never believed."""
    try:
        entries = {k: (str(layer), int(t)) for k, (layer, t) in sidecar["keys"].items()}
        layers, timesteps = list(sidecar["layers"]), [int(t) for t in sidecar["timesteps"]]
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise FeatureError(f"{json_path} is malformed ({type(err).__name__}: {err}); save the cache again.") from None
    wrong = [k for k, (layer, t) in entries.items() if _key(layer, t) != k or k not in tensors]
    stored = {k for k in tensors if k != "__images__"}
    if wrong or stored != set(entries) or {(layer, t) for layer in layers for t in timesteps} != set(entries.values()):
        raise FeatureError(
            f"{json_path} does not describe the tensors beside it (entries {sorted(wrong or stored ^ set(entries))}); "
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
