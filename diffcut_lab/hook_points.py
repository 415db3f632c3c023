"""Hook points: every capturable activation of a diffusion UNet, named by its diffusers module path.

Every capturable activation is a :class:`HookPoint` named by its diffusers module path
(``down_blocks.2.attentions.1.transformer_blocks.3.attn1``), so names match ``unet.named_modules()``
and diffusers' processor keys. Kinds:

- ``attn1``: self-attention output (after ``to_out``, before the residual), the DiffCut feature;
- ``attn2``: cross-attention output;
- ``block``: a ``BasicTransformerBlock``'s output (residual stream);
- ``attentions``: a ``Transformer2DModel``'s output (after ``proj_out`` and its residual);
- ``resnet``: a ``ResnetBlock2D``'s output;
- ``probs``: head-averaged self-attention probabilities ``(B, N, N)`` of an ``attn1``, named
  ``<attn1 path>.probs``.

This module lists them (:func:`list_hook_points`, :func:`hook_points_frame`), resolves names, patterns
and the ``"diffcut"`` alias (:func:`resolve_layers`, :func:`diffcut_layer_name`). The UNet outline they are
read from (forward order, resolutions, the config-only reader) is :mod:`diffcut_lab._unet_outline`, whose
public names are here too. Capturing them is :mod:`diffcut_lab.capturing`; what a capture returns is
:mod:`diffcut_lab.feature_cache`.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ._unet_outline import (
    UNetOutline,
    block_resolutions,
    forward_order,
    layer_stage,
    order_key,
    outline_from_config,
    unet_outline,
)
from .errors import ParameterError, UnknownLayerError
from .options import KINDS

if TYPE_CHECKING:  # pragma: no cover - annotations only: this module imports neither torch nor diffusers
    from .backbones import Backbone, ModelOutline

__all__ = [
    "KINDS",
    "HookPoint",
    "LayerSpec",
    "UNetOutline",
    "diffcut_layer_name",
    "forward_order",
    "hook_point_rows",
    "hook_points_frame",
    "layer_stage",
    "list_hook_points",
    "order_key",
    "outline_from_config",
    "resolve_layers",
    "short_layer_name",
    "unet_outline",
]


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


_ABBREV = [
    ("down_blocks.", "down"),
    ("up_blocks.", "up"),
    ("mid_block", "mid"),
    (".attentions.", ".att"),
    (".transformer_blocks.", ".tb"),
    (".resnets.", ".res"),
]


def short_layer_name(name: str) -> str:
    """Compact label for a module path, e.g. ``down2.att1.tb3.attn1``."""
    for long, short in _ABBREV:
        name = name.replace(long, short)
    return name


def _outline(backbone: Backbone | ModelOutline) -> UNetOutline:
    """The outline of a backbone's UNet (built, or a :class:`~diffcut_lab.backbones.ModelOutline`'s)."""
    return unet_outline(backbone.unet)


def _check_kinds(kind: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if kind is None:
        return None
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ParameterError(f"unknown hook kind(s) {bad}; expected some of {KINDS}.")
    return kinds


def list_hook_points(
    backbone: Backbone | ModelOutline,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> list[HookPoint]:
    """Every capturable activation of the backbone's UNet, in the order a forward pass produces them.

    Parameters
    ----------
    backbone : Backbone or ModelOutline
        A loaded backbone, or the outline :func:`diffcut_lab.backbones.model_outline` reads from a
        model's config files.
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
    outline = _outline(backbone)
    res = block_resolutions(outline, backbone.latent_size(size))
    points = []
    for name, k, stage, block_key, ch in outline.rows:
        if kinds is not None and k not in kinds:
            continue
        hw = res[block_key]
        points.append(HookPoint(name, k, stage, hw[0] * hw[1] if k == "probs" else ch, hw))
    return points


#: the columns of :func:`hook_point_rows` and :func:`hook_points_frame`, in order
FRAME_COLUMNS = (
    "name",
    "kind",
    "stage",
    "block",
    "channels",
    "height",
    "width",
    "tokens",
    "order",
    "diffcut",
)


def hook_point_rows(
    backbone: Backbone | ModelOutline,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`list_hook_points` as plain rows (dicts with the keys of :data:`FRAME_COLUMNS`), no pandas.

    Parameters
    ----------
    backbone, kind, image_size
        As for :func:`list_hook_points`.

    Returns
    -------
    list of dict
        One dict per hook point in forward order: ``order`` is its position among the rows listed,
        ``diffcut`` marks the layer the ``"diffcut"`` alias resolves to.
    """
    points = list_hook_points(backbone, kind=kind, image_size=image_size)
    try:
        alias = diffcut_layer_name(backbone)
    except UnknownLayerError:
        alias = None
    return [
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


def hook_points_frame(
    backbone: Backbone | ModelOutline,
    kind: str | Sequence[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> Any:
    """:func:`list_hook_points` as a pandas DataFrame (one row per hook point, in execution order).

    Columns: ``name, kind, stage, block, channels, height, width, tokens, order, diffcut``
    (``diffcut`` marks the layer the ``"diffcut"`` alias resolves to).
    """
    import pandas as pd

    return pd.DataFrame(
        hook_point_rows(backbone, kind=kind, image_size=image_size), columns=list(FRAME_COLUMNS)
    )


# ----------------------------------------------------------------------------------------------------
# resolving names


def diffcut_layer_name(backbone: Backbone | ModelOutline) -> str:
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
    outline = _outline(backbone)
    names = [r[0] for r in outline.rows]
    override = getattr(backbone, "diffcut_layer", None)
    if override:
        if override not in names:
            raise UnknownLayerError(
                f"diffcut_lab.json of {backbone.name!r} sets diffcut_layer={override!r}, which is not a hook "
                f"point of this UNet; closest: {close_names(override, names)}."
            )
        return override
    down_attn1 = [r for r in outline.rows if r[1] == "attn1" and r[2] == "down"]
    if not down_attn1:
        raise UnknownLayerError(
            f"{backbone.name or 'this UNet'} has no self-attention in its encoder, so there is no 'diffcut' "
            "layer; name a layer explicitly (see list_hook_points)."
        )
    res = block_resolutions(outline, backbone.latent_size())
    lowest = min(res[r[3]][0] * res[r[3]][1] for r in down_attn1)
    candidates = [r for r in down_attn1 if res[r[3]][0] * res[r[3]][1] == lowest]
    return candidates[-1][0]  # already in execution order: the last one finishes last


def close_names(name: str, names: Sequence[str], n: int = 5) -> str:
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


def resolve_layers(backbone: Backbone | ModelOutline, spec: LayerSpec) -> list[str]:
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
    rows = _outline(backbone).rows
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
                    f"closest names: {close_names(s.replace('*', ''), names)}. See list_hook_points(backbone) "
                    "or `diffcut-lab layers --model ...`."
                )
            add(hits)
        else:
            raise UnknownLayerError(
                f"unknown layer {s!r} for {backbone.name or 'this UNet'}; closest names: {close_names(s, names)}. "
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
