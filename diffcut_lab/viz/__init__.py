"""Views of diffcut_lab: plotly figures (static, for HTML reports) and ipywidgets apps (live, in Jupyter).

Every app has a static twin so exported reports show the same view without a kernel:

================================  ==============================  ========================================
what                              static figure                   app
================================  ==============================  ========================================
segments over an image            :func:`overlay`                 -
several segmentations side by side :func:`compare_overlays`       -
layers x timesteps                :func:`layer_grid`              (table: :func:`diffcut_lab.layer_scores`)
each layer at its best tau        :func:`layer_ranking_figure`    (table: ``layer_comparison.layer_ranking``)
layer similarity (linear CKA)     :func:`layer_similarity_figure` (table: :func:`diffcut_lab.layer_similarity`)
partitioners and affinities       :func:`method_comparison_figure` (table: :func:`diffcut_lab.method_comparison`)
Laplacian eigenvectors, spectrum  :func:`eigenvectors`            :func:`eigenvector_explorer`
every recursive cut               :func:`cut_steps_figure`        :func:`cut_stepper`
the tree of cuts                  :func:`cut_tree_figure`         (inside :func:`cut_stepper`)
================================  ==============================  ========================================

Views only colour and lay out; every number comes from the library. Ablation plots live in
:mod:`diffcut_lab.viz.ablation_plots`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "overlay": "overlays",
    "overlay_traces": "overlays",
    "compare_overlays": "overlays",
    "layer_grid": "layers",
    "layer_ranking_figure": "layers",
    "layer_similarity_figure": "layers",
    "method_comparison_figure": "layers",
    "eigenvectors": "eigen",
    "eigenvector_explorer": "eigen",
    "EigenvectorExplorer": "eigen",
    "cut_stepper": "stepper",
    "CutStepper": "stepper",
    "cut_steps_figure": "stepper",
    "cut_tree_figure": "stepper",
    "icicle_layout": "stepper",
    "label_palette": "_common",
    "pca_rgb": "_common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffcut_lab.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"diffcut_lab.viz.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
