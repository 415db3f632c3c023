"""Model directories: what one holds, read from its files before any weights, and getting one from the Hub.

:func:`read_layout` reads a diffusers directory (``unet/``, ``scheduler/``, optional ``vae/``,
``text_encoder/`` + ``tokenizer/`` [+ ``_2``], optional ``conditioning.safetensors`` and
``diffcut_lab.json``) and refuses, with a message a user can act on, what the toolkit cannot read;
:func:`fetch_from_hub` downloads (or finds in the cache) only the files feature extraction needs. No torch
and no diffusers here: :mod:`diffcut_lab._assembly` builds the modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ._families import SUPPORTED_UNETS, TRANSFORMER_DIRS
from .errors import ModelLoadError, UnsupportedModelError

__all__ = [
    "Layout",
    "Request",
    "component_variant",
    "fetch_from_hub",
    "read_json",
    "read_layout",
    "weight_ext",
]

#: files every download takes: the configs, the tokenizers and the stored conditioning (no weights)
_SMALL_FILES = [
    "model_index.json",
    "diffcut_lab.json",
    "conditioning.safetensors",
    "*/*.json",
    "*/*.txt",
    "*/*.model",
]
#: the components whose weights a download may take
_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class Request:
    """What to read of a source: the weight files (``variant``, ``use_safetensors``), where from
    (``revision``, ``local_files_only``), and how much (``configs_only``: no weights; ``need_text_encoders``:
    the text encoders' weights when the model stores no conditioning)."""

    variant: str | None = None
    use_safetensors: bool = True
    revision: str | None = None
    local_files_only: bool = False
    configs_only: bool = False
    need_text_encoders: bool = True

    @property
    def ext(self) -> str:
        """The extension of the weight files read: ``"safetensors"`` or ``"bin"``."""
        return weight_ext(self.use_safetensors)


@dataclass(frozen=True)
class Layout:
    """What a model directory holds (read from its files, before any weights are loaded)."""

    root: Path
    unet_config: dict
    has_vae: bool
    text_encoders: tuple[str, ...]  # subfolders with a text encoder and a tokenizer, in order
    meta: dict  # diffcut_lab.json
    conditioning: Path | None


def weight_ext(use_safetensors: bool) -> str:
    """The extension of the weight files read: ``"safetensors"`` or ``"bin"``."""
    return "safetensors" if use_safetensors else "bin"


def read_json(path: Path) -> dict:
    """A JSON file's contents; an unreadable file raises ModelLoadError."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from err


def _check_has_unet(root: Path, name: str, index: dict) -> None:
    """Refuse a directory without ``unet/``, naming a transformer pipeline (``index``: its
    ``model_index.json``) as such."""
    if (root / "unet").is_dir():
        return
    pipeline = index.get("_class_name", "")
    found = [d for d in TRANSFORMER_DIRS if (root / d).is_dir() or d in index]
    if found:
        raise UnsupportedModelError(
            f"{name!r} is a transformer-based diffusion pipeline ({pipeline or found[0]}: no UNet, a "
            f"{found[0]}/ instead). DiffCut reads the self-attention of a UNet encoder; use a Stable "
            "Diffusion 1.x/2.x/XL-family model such as 'segmind/SSD-1B', or 'pocket' offline."
        )
    raise UnsupportedModelError(
        f"{name!r} has no unet/ folder; expected a diffusers UNet pipeline directory (unet/, "
        "scheduler/, optional vae/ and text encoders), e.g. 'segmind/SSD-1B' or 'pocket'."
    )


def _read_unet_config(root: Path, name: str) -> dict:
    """``unet/config.json``, refused when its UNet class is not one the toolkit reads."""
    cfg_path = root / "unet" / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(f"{name!r}: unet/config.json is missing; the model directory is incomplete.")
    unet_config = read_json(cfg_path)
    cls = unet_config.get("_class_name", "UNet2DConditionModel")
    if cls not in SUPPORTED_UNETS:
        why = (
            "it has no cross-attention transformer blocks (no attn1/attn2 to read)"
            if cls == "UNet2DModel"
            else "its blocks are not the Stable Diffusion UNet's"
        )
        raise UnsupportedModelError(
            f"{name!r} has a {cls}, which the toolkit cannot read: {why}. Supported: "
            f"{', '.join(SUPPORTED_UNETS)} (Stable Diffusion 1.x/2.x/XL, SSD-1B, Vega, the pocket model)."
        )
    return unet_config


def read_layout(root: Path, name: str) -> Layout:
    """What the model directory ``root`` (the source ``name``) holds.

    Raises
    ------
    UnsupportedModelError
        No ``unet/`` (a transformer pipeline, or no diffusers pipeline), or a UNet class the toolkit
        cannot read.
    ModelLoadError
        ``unet/config.json`` is missing, or a JSON file cannot be read.
    """
    index = read_json(root / "model_index.json") if (root / "model_index.json").exists() else {}
    _check_has_unet(root, name, index)
    unet_config = _read_unet_config(root, name)
    encoders = tuple(
        sub
        for sub in ("text_encoder", "text_encoder_2")
        if (root / sub).is_dir() and (root / sub.replace("text_encoder", "tokenizer")).is_dir()
    )
    meta = read_json(root / "diffcut_lab.json") if (root / "diffcut_lab.json").exists() else {}
    cond = root / "conditioning.safetensors"
    return Layout(
        root=root,
        unet_config=unet_config,
        has_vae=(root / "vae").is_dir(),
        text_encoders=encoders,
        meta=meta,
        conditioning=cond if cond.exists() else None,
    )


def component_variant(folder: Path, variant: str | None, ext: str = "safetensors") -> str | None:
    """``variant`` if ``folder`` holds weights of that variant, else ``None`` (the full-precision files)."""
    if not variant or not folder.is_dir():
        return None
    names = [f.name for f in folder.iterdir() if f.name.endswith(f".{ext}")]
    return variant if any(f".{variant}." in n or f".{variant}-" in n for n in names) else None


def _has_plain_weights(folder: Path, ext: str) -> bool:
    """Whether ``folder`` holds non-variant weight files (single or sharded)."""
    if not folder.is_dir():
        return False
    return any(f.name.endswith(f".{ext}") and "." not in f.name[: -len(ext) - 1] for f in folder.iterdir())


def _snapshot(repo_id: str, request: Request, patterns: list[str], ignore: list[str] | None = None) -> Path:
    """The files of ``repo_id`` matching ``patterns``, downloaded or from the cache; one clear error."""
    import huggingface_hub

    try:
        path = huggingface_hub.snapshot_download(
            repo_id,
            revision=request.revision,
            allow_patterns=patterns,
            ignore_patterns=ignore,
            local_files_only=request.local_files_only,
        )
    except Exception as err:  # network, auth, missing repo, offline cache miss: one clear message
        raise ModelLoadError(
            f"could not get {repo_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}). Check "
            "the id and your connection (gated models need `huggingface-cli login`), pass a local "
            "diffusers directory, or use load_backbone('pocket') to work offline."
        ) from err
    return Path(path)


def fetch_from_hub(repo_id: str, request: Request) -> Path:
    """Download (or find in the cache) only the files feature extraction needs; returns the directory."""
    small = _SMALL_FILES
    root = _snapshot(repo_id, request, small)
    comps = [c for c in _COMPONENTS if (root / c / "config.json").exists()]
    if "unet" not in comps or request.configs_only:
        return root  # without a UNet, read_layout explains what the repository is instead
    if not request.need_text_encoders or (root / "conditioning.safetensors").exists():
        comps = [c for c in comps if not c.startswith("text_encoder")]
    variant, ext = request.variant, request.ext
    if variant:
        variant_files = [
            *(f"{c}/*.{variant}.{ext}" for c in comps),
            *(f"{c}/*.{variant}-*.{ext}" for c in comps),
        ]
        root = _snapshot(repo_id, request, [*small, *variant_files])
    missing = [c for c in comps if component_variant(root / c, variant, ext) is None]
    if missing:  # components without the variant (or no variant asked): the full-precision files
        plain = [*small, *(f"{c}/*.{ext}" for c in missing)]
        root = _snapshot(repo_id, request, plain, ignore=["*.fp16*", "*.bf16*", "*.fp32*"])
    if component_variant(root / "unet", variant, ext) is None and not _has_plain_weights(root / "unet", ext):
        raise ModelLoadError(
            f"{repo_id!r} has no {ext} UNet weights (looked for unet/*.{ext}"
            + (f" and the {variant!r} variant" if variant else "")
            + "). Try use_safetensors=False for .bin weights, or use 'pocket' offline."
        )
    return root
