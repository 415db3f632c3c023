"""Hook points, capture and the feature cache, under one name (the modules that hold them):

- :mod:`diffcut_lab.hook_points`: :class:`HookPoint`, :func:`list_hook_points`, :func:`hook_points_frame`,
  :func:`resolve_layers`, :func:`diffcut_layer_name`;
- :mod:`diffcut_lab.capturing`: :func:`capture`, :func:`memory_estimate`;
- :mod:`diffcut_lab.feature_cache`: :class:`FeatureCache`.
"""

from __future__ import annotations

from .capturing import capture, memory_estimate
from .feature_cache import FeatureCache
from .hook_points import (
    KINDS,
    HookPoint,
    LayerSpec,
    diffcut_layer_name,
    hook_points_frame,
    list_hook_points,
    resolve_layers,
)

__all__ = [
    "KINDS",
    "FeatureCache",
    "HookPoint",
    "LayerSpec",
    "capture",
    "diffcut_layer_name",
    "hook_points_frame",
    "list_hook_points",
    "memory_estimate",
    "resolve_layers",
]
