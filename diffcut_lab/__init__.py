"""diffcut_lab: look inside diffusion UNets as vision encoders.

DiffCut (Couairon et al., NeurIPS 2024) segments an image with no training and no labels: it reads the
self-attention output of one encoder block of a diffusion UNet and partitions the patch graph with a
recursive normalized cut whose threshold ``tau`` sets the granularity.

The public names are imported lazily, so ``import diffcut_lab`` stays fast and a notebook only pays for
torch and diffusers when it uses them::

    import diffcut_lab as dl
    bb = dl.load_backbone("pocket")
    seg = dl.DiffCut(bb, tau=0.5).segment("photo.jpg")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .threads import sleep_when_waiting as _sleep_when_waiting

_sleep_when_waiting()  # before torch loads: idle OpenMP threads sleep soon instead of taking a busy core

# public name -> module that defines it (one place to look up where anything lives)
_EXPORTS: dict[str, str] = {
    # errors
    "DiffCutLabError": "errors",
    "FeatureError": "errors",
    "ImageInputError": "errors",
    "ModelLoadError": "errors",
    "ParameterError": "errors",
    "UnknownLayerError": "errors",
    "UnsupportedModelError": "errors",
    # images
    "load_image": "images",
    "to_batch": "images",
    # backbones and hooks
    "Backbone": "backbones",
    "load_backbone": "backbones",
    "model_outline": "backbones",
    "ModelOutline": "backbones",
    "HookPoint": "hook_points",
    "FeatureCache": "feature_cache",
    "capture": "capturing",
    "list_hook_points": "hook_points",
    "hook_points_frame": "hook_points",
    "resolve_layers": "hook_points",
    "memory_estimate": "capturing",
    # segmentation core
    "affinity": "affinities",
    "recursive_ncut": "ncut",
    "CutTree": "ncut",
    "CutStep": "ncut",
    "concept_assignment": "refine",
    "nearest_upsample": "refine",
    "pamr": "refine",
    "median_filter": "refine",
    "cut_tree": "segmentation",
    "kway_ncut": "kway",
    "walk_affinity": "walks",
    "laplacian_spectrum": "spectrum",
    "layer_scores": "layer_comparison",
    "layer_ranking": "layer_comparison",
    "layer_similarity": "layer_comparison",
    "method_comparison": "layer_comparison",
    "DiffCut": "pipeline",
    "DiffCutConfig": "config",
    "Segmentation": "pipeline",
    "hungarian_miou": "metrics",
    "MIoUAccumulator": "metrics",
    "segment_features": "baselines",
    # datasets and ablations
    "load_dataset": "datasets",
    "list_datasets": "datasets",
    "AblationGrid": "ablation",
    "run_ablation": "ablation",
    "summarize": "ablation",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffcut_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"diffcut_lab.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from .ablation import AblationGrid, run_ablation, summarize
    from .affinities import affinity
    from .backbones import Backbone, ModelOutline, load_backbone, model_outline
    from .baselines import segment_features
    from .capturing import capture, memory_estimate
    from .config import DiffCutConfig
    from .datasets import list_datasets, load_dataset
    from .errors import (
        DiffCutLabError,
        FeatureError,
        ImageInputError,
        ModelLoadError,
        ParameterError,
        UnknownLayerError,
        UnsupportedModelError,
    )
    from .feature_cache import FeatureCache
    from .hook_points import HookPoint, hook_points_frame, list_hook_points, resolve_layers
    from .images import load_image, to_batch
    from .kway import kway_ncut
    from .layer_comparison import layer_ranking, layer_scores, layer_similarity, method_comparison
    from .metrics import MIoUAccumulator, hungarian_miou
    from .ncut import CutStep, CutTree, recursive_ncut
    from .pipeline import DiffCut, Segmentation
    from .refine import concept_assignment, median_filter, nearest_upsample, pamr
    from .segmentation import cut_tree
    from .spectrum import laplacian_spectrum
    from .walks import walk_affinity
