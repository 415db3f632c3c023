"""Hook points on every block of a diffusion UNet, and one-pass feature capture with early exit.

Every capturable activation is a :class:`HookPoint` named by its diffusers module path
(``down_blocks.2.attentions.1.transformer_blocks.3.attn1``), so names match ``unet.named_modules()``
and diffusers' processor keys. Kinds:

- ``attn1``: self-attention output (after ``to_out``, before the residual), the DiffCut feature;
- ``attn2``: cross-attention output;
- ``block``: a ``BasicTransformerBlock``'s output (residual stream);
- ``attentions``: a ``Transformer2DModel``'s output (after ``proj_out`` and its residual);
- ``resnet``: a ``ResnetBlock2D``'s output;
- ``probs``: head-averaged self-attention probabilities ``(B, N, N)`` of an ``attn1``, named
  ``<attn1 path>.probs``; materialised only when asked for, by a chunked attention processor.

:func:`capture` runs one UNet forward per timestep for all requested layers, stops the forward right
after the deepest requested module (a private exception raised by a forward hook and caught around the
call), and always removes its hooks and restores the attention processors.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .backbones import Backbone
from .errors import FeatureError, ParameterError, UnknownLayerError
from .options import KINDS

__all__ = [
    "KINDS",
    "FeatureCache",
    "HookPoint",
    "capture",
    "diffcut_layer_name",
    "hook_points_frame",
    "list_hook_points",
    "memory_estimate",
    "resolve_layers",
]

#: Kinds of hook points, in the order they are listed.
_STAGES = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}
_STAGE_RANK = {"down": 0, "mid": 1, "up": 2}
_SUB_RANK = {"attn1": 0, "attn2": 1}
_PROBS_CHUNK_BYTES = 1 << 28  # bound on the float32 attention scores materialised at once


@dataclass(frozen=True)
class HookPoint:
    """One capturable activation of a UNet.

    Attributes
    ----------
    name : str
        Diffusers module path, e.g. ``down_blocks.2.attentions.1.transformer_blocks.3.attn1``
        (``....attn1.probs`` for attention probabilities).
    kind : str
        One of :data:`KINDS`.
    stage : str
        ``"down"``, ``"mid"`` or ``"up"``.
    channels : int
        Feature channels ``C`` of the ``(B, C, h, w)`` map; for ``probs`` the row length ``N = h * w``.
    resolution : tuple of int
        ``(h, w)`` of the feature map for the input size it was listed for.
    """

    name: str
    kind: str
    stage: str
    channels: int
    resolution: tuple[int, int]

    @property
    def module_name(self) -> str:
        """Path of the module the hook sits on (the ``attn1`` for ``probs``)."""
        return self.name[: -len(".probs")] if self.kind == "probs" else self.name

    @property
    def tokens(self) -> int:
        """``h * w``: the number of spatial positions."""
        return self.resolution[0] * self.resolution[1]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for JSON and data frames)."""
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d


# ----------------------------------------------------------------------------------------------------
# enumerating hook points


def _order_key(name: str) -> tuple:
    """Completion order of a hook point in a diffusers UNet forward, from its name alone.

    Inside every down/mid/up block, ``resnets.j`` runs before ``attentions.j`` (the mid block runs
    ``resnets.0, attentions.0, resnets.1``); inside a transformer block ``attn1`` finishes before
    ``attn2``, which finishes before the block itself; a ``Transformer2DModel`` finishes after all its
    blocks. A forward hook fires when its module *finishes*, so this orders hooks by firing time.
    """
    parts = name.split(".")
    stage = _STAGE_RANK[_STAGES[parts[0]]]
    if parts[0] == "mid_block":
        block, rest = 0, parts[1:]
    else:
        block, rest = int(parts[1]), parts[2:]
    group, j = rest[0], int(rest[1])
    if group == "resnets":
        return (stage, block, j, 0, 0, 0)
    tail = rest[2:]
    if not tail:
        return (stage, block, j, 1, math.inf, 0)
    k = int(tail[1])
    sub = _SUB_RANK.get(tail[2], 9) if len(tail) > 2 else 9
    return (stage, block, j, 1, k, sub)


def _resolutions(unet: Any, latent: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """``(h, w)`` at each down/mid/up block for a UNet input of ``latent`` size."""
    h, w = latent
    out: dict[str, tuple[int, int]] = {}
    levels: list[tuple[int, int]] = []
    for i, blk in enumerate(unet.down_blocks):
        out[f"down_blocks.{i}"] = (h, w)
        if not levels or levels[-1] != (h, w):
            levels.append((h, w))
        if getattr(blk, "downsamplers", None) is not None:
            h, w = (h + 1) // 2, (w + 1) // 2  # stride-2 convolution with padding 1
    out["mid_block"] = (h, w)
    if not levels or levels[-1] != (h, w):
        levels.append((h, w))
    level = len(levels) - 1
    for i, blk in enumerate(unet.up_blocks):
        out[f"up_blocks.{i}"] = levels[level]
        if getattr(blk, "upsamplers", None) is not None:
            level = max(0, level - 1)  # the upsampler restores the size of the matching skip connection
    return out


def _classes() -> dict[str, type]:
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


# structural listing (no resolution) cached per UNet: name, kind, stage, block key, channels
_STRUCTURE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(unet: Any) -> list[tuple[str, str, str, str, int]]:
    cached = _STRUCTURE.get(unet)
    if cached is not None:
        return cached
    cls = _classes()
    rows: list[tuple[str, str, str, str, int]] = []
    for name, module in unet.named_modules():
        head = name.split(".", 1)[0]
        if head not in _STAGES:
            continue
        parts = name.split(".")
        block_key = head if head == "mid_block" else ".".join(parts[:2])
        stage = _STAGES[head]
        if isinstance(module, cls["attentions"]) and parts[-2] == "attentions":
            rows.append((name, "attentions", stage, block_key, int(module.out_channels)))
        elif isinstance(module, cls["block"]):
            rows.append((name, "block", stage, block_key, int(module.attn1.to_out[0].out_features)))
        elif isinstance(module, cls["attention"]) and parts[-1] in ("attn1", "attn2") and "transformer_blocks" in parts:
            ch = int(module.to_out[0].out_features)
            rows.append((name, parts[-1], stage, block_key, ch))
            if parts[-1] == "attn1":
                rows.append((f"{name}.probs", "probs", stage, block_key, -1))
        elif isinstance(module, cls["resnet"]) and parts[-2] == "resnets":
            rows.append((name, "resnet", stage, block_key, int(module.out_channels)))
    rows.sort(key=lambda r: _order_key(r[0]))
    _STRUCTURE[unet] = rows
    return rows


def _check_kinds(kind: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if kind is None:
        return None
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ParameterError(f"unknown hook kind(s) {bad}; expected some of {KINDS}.")
    return kinds


def list_hook_points(
    backbone: Backbone,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> list[HookPoint]:
    """Every capturable activation of the backbone's UNet, in the order a forward pass produces them.

    Parameters
    ----------
    backbone : Backbone
    kind : str or sequence of str, optional
        Keep only these kinds (see :data:`KINDS`). ``None`` lists all, ``probs`` included.
    image_size : int or (H, W), optional
        Input size the resolutions are computed for (default: the backbone's native size).

    Returns
    -------
    list of HookPoint

    Examples
    --------
    >>> from diffcut_lab.testing import tiny_backbone
    >>> [p.name for p in list_hook_points(tiny_backbone("sd1"), kind="attn1")][:1]
    ['down_blocks.0.attentions.0.transformer_blocks.0.attn1']
    """
    kinds = _check_kinds(kind)
    size = backbone.image_size if image_size is None else image_size
    res = _resolutions(backbone.unet, backbone.latent_size(size))
    points = []
    for name, k, stage, block_key, ch in _structure(backbone.unet):
        if kinds is not None and k not in kinds:
            continue
        hw = res[block_key]
        points.append(HookPoint(name, k, stage, hw[0] * hw[1] if k == "probs" else ch, hw))
    return points


def hook_points_frame(
    backbone: Backbone,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> Any:
    """:func:`list_hook_points` as a pandas DataFrame (one row per hook point, in execution order).

    Columns: ``name, kind, stage, block, channels, height, width, tokens, order, diffcut``
    (``diffcut`` marks the layer the ``"diffcut"`` alias resolves to).
    """
    import pandas as pd

    points = list_hook_points(backbone, kind=kind, image_size=image_size)
    try:
        alias = diffcut_layer_name(backbone)
    except UnknownLayerError:
        alias = None
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "stage": p.stage,
            "block": p.name.split(".attentions")[0].split(".resnets")[0],
            "channels": p.channels,
            "height": p.resolution[0],
            "width": p.resolution[1],
            "tokens": p.tokens,
            "order": i,
            "diffcut": p.name == alias,
        }
        for i, p in enumerate(points)
    ]
    cols = ["name", "kind", "stage", "block", "channels", "height", "width", "tokens", "order", "diffcut"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------------------
# resolving names


def diffcut_layer_name(backbone: Backbone) -> str:
    """The hook name of the paper's layer for this backbone (what ``"diffcut"`` resolves to).

    An explicit ``diffcut_layer`` (from ``diffcut_lab.json``) wins. Otherwise: the last ``attn1`` of the
    last transformer block of the last attention of the lowest-resolution encoder stage that has
    attention (SSD-1B: ``down_blocks.2.attentions.1.transformer_blocks.3.attn1``; SD 1.x:
    ``down_blocks.2.attentions.1.transformer_blocks.0.attn1``).

    Raises
    ------
    UnknownLayerError
        The override names no ``attn1``-like hook point, or the encoder has no attention at all.
    """
    names = [r[0] for r in _structure(backbone.unet)]
    override = getattr(backbone, "diffcut_layer", None)
    if override:
        if override not in names:
            raise UnknownLayerError(
                f"diffcut_lab.json of {backbone.name!r} sets diffcut_layer={override!r}, which is not a hook "
                f"point of this UNet; closest: {_close(override, names)}."
            )
        return override
    down_attn1 = [r for r in _structure(backbone.unet) if r[1] == "attn1" and r[2] == "down"]
    if not down_attn1:
        raise UnknownLayerError(
            f"{backbone.name or 'this UNet'} has no self-attention in its encoder, so there is no 'diffcut' "
            "layer; name a layer explicitly (see list_hook_points)."
        )
    res = _resolutions(backbone.unet, backbone.latent_size())
    lowest = min(res[r[3]][0] * res[r[3]][1] for r in down_attn1)
    candidates = [r for r in down_attn1 if res[r[3]][0] * res[r[3]][1] == lowest]
    return candidates[-1][0]  # already in execution order: the last one finishes last


def _close(name: str, names: Sequence[str], n: int = 5) -> str:
    matches = difflib.get_close_matches(name, list(names), n=n, cutoff=0.5)
    if not matches:
        # fall back to names sharing the longest prefix
        matches = sorted(names, key=lambda x: -len(_common_prefix(x, name)))[:n]
    return ", ".join(repr(m) for m in matches)


def _common_prefix(a: str, b: str) -> str:
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return a[:i]


LayerSpec = str | Sequence[str] | Callable[[str], bool]


def resolve_layers(backbone: Backbone, spec: LayerSpec) -> list[str]:
    """Turn a layer specification into hook-point names.

    Parameters
    ----------
    backbone : Backbone
    spec : str, sequence of str, or callable
        - an exact hook name (``"down_blocks.2.attentions.1.transformer_blocks.3.attn1"``);
        - ``"diffcut"``: the paper's layer for this family (see :func:`diffcut_layer_name`);
        - a kind (``"attn1"``, ``"attn2"``, ``"block"``, ``"attentions"``, ``"resnet"``, ``"probs"``);
        - a glob (``"down_blocks.*.attn1"``, ``"*.probs"``);
        - ``"all"``: every hook point except ``probs`` (ask for those explicitly: they cost O(N^2));
        - a list of any of these (duplicates removed, order kept);
        - a callable ``name -> bool`` (a filter over all names, ``probs`` included).

    Returns
    -------
    list of str
        Names in the order requested (kinds, globs and ``"all"`` expand in execution order).

    Raises
    ------
    UnknownLayerError
        A name or pattern matches nothing; the message lists the closest valid names.
    """
    rows = _structure(backbone.unet)
    names = [r[0] for r in rows]
    out: list[str] = []

    def add(items: Iterable[str]) -> None:
        for it in items:
            if it not in out:
                out.append(it)

    def one(s: str) -> None:
        if not isinstance(s, str):
            raise ParameterError(f"a layer spec must be a string; got {type(s).__name__} {s!r}.")
        if s == "diffcut":
            add([diffcut_layer_name(backbone)])
        elif s == "all":
            add(r[0] for r in rows if r[1] != "probs")
        elif s in KINDS:
            add(r[0] for r in rows if r[1] == s)
        elif s in names:
            add([s])
        elif any(c in s for c in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, s)]
            if not hits:
                raise UnknownLayerError(
                    f"layer pattern {s!r} matches no hook point of {backbone.name or 'this UNet'}; "
                    f"closest names: {_close(s.replace('*', ''), names)}. See list_hook_points(backbone) "
                    "or `diffcut-lab layers --model ...`."
                )
            add(hits)
        else:
            raise UnknownLayerError(
                f"unknown layer {s!r} for {backbone.name or 'this UNet'}; closest names: {_close(s, names)}. "
                f"Also accepted: 'diffcut', 'all', a kind {KINDS}, or a glob like 'down_blocks.*.attn1'."
            )

    if callable(spec) and not isinstance(spec, str):
        add(n for n in names if spec(n))
        if not out:
            raise UnknownLayerError("the layer filter selected no hook point.")
    elif isinstance(spec, str):
        one(spec)
    else:
        items = list(spec)
        if not items:
            raise ParameterError("empty layer list; name at least one layer (or 'diffcut').")
        for s in items:
            one(s)
    return out


# ----------------------------------------------------------------------------------------------------
# the feature cache


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
                f"layer {layer!r} was not captured; captured: {_close(layer, self.layers + list(self.aliases))}."
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


# ----------------------------------------------------------------------------------------------------
# capture


class _StopForward(Exception):
    """Raised by the hook of the deepest requested module to end the UNet forward early."""


class _ProbsProcessor:
    """Self-attention processor that also keeps head-averaged attention probabilities.

    Computes softmax(q k^T * scale) v in float32, a chunk of query rows at a time (bounding memory to
    about ``_PROBS_CHUNK_BYTES`` of scores), and hands ``(B, N, N)`` probabilities to ``sink``. The
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
        rows = max(1, _PROBS_CHUNK_BYTES // (4 * batch * heads * n_k))
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


_ACTIVE: weakref.WeakSet = weakref.WeakSet()  # UNets with a capture in progress (hooks are global state)
_ACTIVE_LOCK = threading.Lock()  # makes "check, then mark as active" one step across threads


def _grab(output: Any, store_dtype: torch.dtype) -> torch.Tensor:
    """What a forward hook keeps: a detached copy in the store dtype, on the UNet's device.

    Reshaping, the NaN check and the transfer to the store device wait until the forward has ended
    (:func:`_as_map`), so a hook never synchronises a GPU.
    """
    x = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
    return x.detach().to(dtype=store_dtype, copy=True)


def _as_map(x: torch.Tensor, point: HookPoint, t: int, store_device: Any) -> torch.Tensor:
    """A grabbed activation as ``(B, C, h, w)``, checked for NaN/Inf, on the store device."""
    if x.ndim == 3 and point.kind != "probs":  # (B, N, C) tokens -> (B, C, h, w)
        b, n, c = x.shape
        h, w = point.resolution
        if n != h * w:
            raise FeatureError(
                f"layer {point.name!r} at t={t} returned {n} tokens, expected {h}x{w}={h * w} for this input "
                "size; the input size may not fit the UNet (use a multiple of backbone.size_multiple)."
            )
        x = x.transpose(1, 2).reshape(b, c, h, w)
    if not torch.isfinite(x).all():
        what = "probabilities" if point.kind == "probs" else "values"
        raise FeatureError(
            f"layer {point.name!r} at t={t} produced NaN or Inf {what}; with float16 this is usually an "
            "overflow: load the backbone with dtype=torch.float32 (or torch.bfloat16) and try again."
        )
    return x.to(device=store_device).contiguous()


def _forward_once(
    backbone: Backbone,
    x_t: torch.Tensor,
    t: int,
    *,
    embeds: torch.Tensor | None,
    added: dict[str, torch.Tensor] | None,
    store: dict[str, torch.Tensor],
    current_t: list[int],
) -> None:
    """One UNet forward inside :func:`_hooks`; the early-exit exception ends it quietly."""
    current_t[0] = t
    store.clear()
    try:
        backbone.forward(x_t, t, prompt_embeds=embeds, added_cond_kwargs=added)
    except _StopForward:
        pass


def _collect(
    store: dict[str, torch.Tensor], points: Sequence[HookPoint], t: int, store_device: Any
) -> dict[str, torch.Tensor]:
    """Turn what the hooks grabbed during one forward into checked feature maps."""
    out = {}
    for p in points:
        if p.name not in store:
            raise FeatureError(f"layer {p.name!r} did not run in the UNet forward at t={t}.")
        out[p.name] = _as_map(store.pop(p.name), p, t, store_device)
    return out


@contextmanager
def _hooks(
    backbone: Backbone,
    points: Sequence[HookPoint],
    *,
    store: dict[str, torch.Tensor],
    current_t: list[int],
    store_dtype: torch.dtype,
    early_exit: bool,
) -> Iterator[None]:
    """Install capture hooks (and probability processors); always remove/restore them."""
    unet = backbone.unet
    with _ACTIVE_LOCK:
        if unet in _ACTIVE:
            raise ParameterError(
                "a capture is already running on this backbone (hooks are global state); finish it first."
            )
        _ACTIVE.add(unet)
    handles: list[Any] = []
    swapped: list[tuple[Any, Any]] = []
    try:
        for p in points:
            module = unet.get_submodule(p.module_name)
            if p.kind == "probs":

                def sink(probs: torch.Tensor, p: HookPoint = p) -> None:
                    store[p.name] = probs

                swapped.append((module, module.processor))
                module.set_processor(_ProbsProcessor(sink, store_dtype))
            else:

                def hook(_mod: Any, _inp: Any, out: Any, p: HookPoint = p) -> None:
                    store[p.name] = _grab(out, store_dtype)

                handles.append(module.register_forward_hook(hook))
        if early_exit and points:
            deepest = max(points, key=lambda p: _order_key(p.name))

            def stop(_mod: Any, _inp: Any, _out: Any) -> None:
                raise _StopForward

            handles.append(unet.get_submodule(deepest.module_name).register_forward_hook(stop))
        yield
    finally:
        for h in handles:
            h.remove()
        for module, processor in swapped:
            module.set_processor(processor)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(unet)


def _timesteps(timesteps: int | Sequence[int]) -> list[int]:
    items = [timesteps] if isinstance(timesteps, (int, torch.Tensor)) else list(timesteps)
    out: list[int] = []
    for t in items:
        t = int(t.item()) if isinstance(t, torch.Tensor) else t
        if isinstance(t, bool) or not isinstance(t, int):
            raise ParameterError(f"timesteps must be ints; got {t!r}.")
        if t not in out:
            out.append(t)
    if not out:
        raise ParameterError("no timesteps given; the paper uses timesteps=50.")
    return out


def _store_dtype(dtype: torch.dtype | str) -> torch.dtype:
    from .backbones import parse_dtype

    if dtype is None:
        raise ParameterError("store_dtype must be a floating torch dtype or its name; got None.")
    return parse_dtype(dtype, "store dtype")


def capture(
    backbone: Backbone,
    images: Any,
    layers: LayerSpec = "diffcut",
    timesteps: int | Sequence[int] = 50,
    *,
    seed: int = 42,
    prompt: str = "",
    image_size: int | tuple[int, int] | None = None,
    store_dtype: torch.dtype | str = torch.float32,
    batch_size: int | None = None,
    progress: bool = False,
    policy: str = "resize",
    store_device: torch.device | str = "cpu",
    early_exit: bool = True,
    antialias: bool = True,
    noise_device: str = "cpu",
) -> FeatureCache:
    """Capture UNet activations: one forward per timestep serves every requested layer.

    Images are resized to ``image_size`` (default: the backbone's native size), encoded (VAE mean x
    scaling factor, or ``2 x - 1`` in pixel space), noised to each timestep with one seeded noise map
    shared by the batch, and passed through the UNet with the ``prompt`` conditioning. The forward
    stops right after the deepest requested module (no decoder work for encoder layers).

    Parameters
    ----------
    backbone : Backbone
    images : image, list of images, or (B, 3, H, W) tensor in [0, 1]
        Anything :func:`diffcut_lab.images.to_batch` accepts.
    layers : str, list of str or callable
        See :func:`resolve_layers` (default ``"diffcut"``, the paper's layer).
    timesteps : int or sequence of int
        Noise levels in ``[0, num_train_timesteps)``; the paper uses 50.
    seed : int
        Seed of the noise (the same noise map for every image and timestep).
    prompt : str
        Conditioning prompt; ``""`` (the paper's) uses the embeddings stored in the backbone.
    image_size : int or (H, W), optional
        Input size in pixels, a multiple of ``backbone.size_multiple``.
    store_dtype : torch.dtype or str
        dtype the features are stored in (``torch.float16`` halves memory).
    batch_size : int, optional
        Images per UNet forward (default: all at once).
    progress : bool
        Show a progress bar.
    policy : {"resize", "center_crop"}
        How images are brought to ``image_size``.
    store_device : torch.device or str
        Where captured features are kept (the CPU by default; pass the backbone's device to keep them on
        the GPU, which avoids a device-to-host copy per layer).
    early_exit : bool
        Stop the forward after the deepest requested module (default). ``False`` runs the whole UNet.
    antialias : bool
        Antialias the resize to ``image_size`` (the published code does not).
    noise_device : {"cpu", "model"}
        Where the seeded noise is drawn: the CPU (the same features on every device) or the model's
        device (as published).

    Returns
    -------
    FeatureCache
        ``cache[layer, t]`` -> ``(B, C, h, w)`` (``probs``: ``(B, N, N)``).

    Raises
    ------
    UnknownLayerError, ParameterError, ImageInputError, FeatureError
    """
    from tqdm.auto import tqdm

    from .images import to_batch

    size = backbone.check_image_size(backbone.image_size if image_size is None else image_size)
    sdt = _store_dtype(store_dtype)
    ts = _timesteps(timesteps)
    for t in ts:
        backbone.check_timestep(t)
    names = resolve_layers(backbone, layers)
    by_name = {p.name: p for p in list_hook_points(backbone, image_size=size)}
    points = [by_name[n] for n in names]
    batch = to_batch(images, size, policy=policy, antialias=antialias)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ParameterError(f"batch_size must be a positive int or None; got {batch_size!r}.")
    step = batch.shape[0] if batch_size is None else batch_size
    embeds, added = backbone.conditioning(prompt)
    chunks: dict[tuple[str, int], list[torch.Tensor]] = {(n, t): [] for n in names for t in ts}
    store: dict[str, torch.Tensor] = {}
    current_t = [ts[0]]
    n_chunks = math.ceil(batch.shape[0] / step)
    bar = tqdm(total=n_chunks * len(ts), disable=not progress, desc="capture", unit="pass")
    try:
        with _hooks(backbone, points, store=store, current_t=current_t, store_dtype=sdt, early_exit=early_exit):
            for start in range(0, batch.shape[0], step):
                latents = backbone.encode(batch[start : start + step])
                for t in ts:
                    x_t = backbone.add_noise(latents, t, seed=seed, noise_device=noise_device)
                    _forward_once(backbone, x_t, t, embeds=embeds, added=added, store=store, current_t=current_t)
                    for n, feat in _collect(store, points, t, store_device).items():
                        chunks[(n, t)].append(feat)
                    bar.update(1)
    finally:
        bar.close()
    feats = {k: torch.cat(v) if len(v) > 1 else v[0] for k, v in chunks.items()}
    aliases = {}
    try:
        aliases["diffcut"] = diffcut_layer_name(backbone)
    except UnknownLayerError:
        pass
    meta = {
        "model": backbone.name,
        "family": backbone.family,
        "layers": names,
        "timesteps": ts,
        "seed": seed,
        "image_size": list(size),
        "prompt": prompt,
        "store_dtype": str(sdt).replace("torch.", ""),
        "unet_dtype": str(backbone.dtype).replace("torch.", ""),
        "latent_scale": backbone.latent_scale,
        "policy": policy,
        "antialias": antialias,
        "noise_device": noise_device,
        "kinds": {p.name: p.kind for p in points},
        "resolutions": {p.name: list(p.resolution) for p in points},
    }
    return FeatureCache(feats, layers=names, timesteps=ts, meta=meta, images=batch, aliases=aliases)


def memory_estimate(
    backbone: Backbone,
    layers: LayerSpec,
    timesteps: int | Sequence[int],
    batch: int,
    image_size: int | tuple[int, int] | None = None,
    *,
    store_dtype: torch.dtype | str = torch.float32,
) -> int:
    """Bytes the features of a :func:`capture` call will hold (the images not counted).

    Parameters
    ----------
    backbone : Backbone
    layers : layer spec
        As for :func:`resolve_layers`.
    timesteps : int or sequence of int
    batch : int
        Number of images.
    image_size : int or (H, W), optional
        Default: the backbone's native size.
    store_dtype : torch.dtype or str

    Returns
    -------
    int
        ``sum over layers of B x C x h x w`` (``B x N x N`` for ``probs``) x timesteps x bytes per value.
    """
    size = backbone.image_size if image_size is None else image_size
    names = resolve_layers(backbone, layers)
    by_name = {p.name: p for p in list_hook_points(backbone, image_size=size)}
    itemsize = torch.empty((), dtype=_store_dtype(store_dtype)).element_size()
    per_image = 0
    for n in names:
        p = by_name[n]
        per_image += p.tokens * p.tokens if p.kind == "probs" else p.channels * p.tokens
    return int(per_image * len(_timesteps(timesteps)) * int(batch) * itemsize)
