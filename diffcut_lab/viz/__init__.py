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

#: public name -> (module, attribute): the views' own modules, and the library's colours under their names
_EXPORTS: dict[str, tuple[str, str]] = {
    "overlay": ("diffcut_lab.viz.overlays", "overlay"),
    "overlay_traces": ("diffcut_lab.viz.overlays", "overlay_traces"),
    "compare_overlays": ("diffcut_lab.viz.overlays", "compare_overlays"),
    "layer_grid": ("diffcut_lab.viz.layers", "layer_grid"),
    "layer_ranking_figure": ("diffcut_lab.viz.layers", "layer_ranking_figure"),
    "layer_similarity_figure": ("diffcut_lab.viz.layers", "layer_similarity_figure"),
    "method_comparison_figure": ("diffcut_lab.viz.layers", "method_comparison_figure"),
    "eigenvectors": ("diffcut_lab.viz.eigen", "eigenvectors"),
    "eigenvector_explorer": ("diffcut_lab.viz.eigen", "eigenvector_explorer"),
    "EigenvectorExplorer": ("diffcut_lab.viz.eigen", "EigenvectorExplorer"),
    "cut_stepper": ("diffcut_lab.viz.stepper", "cut_stepper"),
    "CutStepper": ("diffcut_lab.viz.stepper", "CutStepper"),
    "cut_steps_figure": ("diffcut_lab.viz.step_figure", "cut_steps_figure"),
    "cut_tree_figure": ("diffcut_lab.viz.step_figure", "cut_tree_figure"),
    "icicle_layout": ("diffcut_lab.viz.icicle", "icicle_layout"),
    "label_palette": ("diffcut_lab.colors", "label_hex"),  # the toolkit's one palette, under its view name
    "pca_rgb": ("diffcut_lab.colors", "pca_rgb"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'diffcut_lab.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(where[0]), where[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
