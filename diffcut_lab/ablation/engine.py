"""One work unit: every configuration of one image on one model, from one feature capture.

Order of work inside a unit (what makes sweeps cheap):

1. the paper's preprocessing (centre crop, model input size, labels at ``label_size``);
2. features for every (layer, timestep) that some configuration needs: read from the disk cache, and
   whatever is missing captured in one :func:`~diffcut_lab.hooks.capture` call (one UNet pass per
   timestep for all layers);
3. per (layer, timestep, alpha, mode): one affinity and one recursive NCut at the largest tau; every
   smaller tau is :meth:`~diffcut_lab.ncut.CutTree.prune` of that tree;
4. per labelling: concept-assignment upsampling to ``label_size``, then for the datasets with a
   background class the first stage of the background protocol (unmatched clusters merged), then the
   refinement (PAMR + 3x3 median, or the median alone), then Hungarian matching -> TP/FP/FN.

Steps 2-4 follow the published evaluation (reference section 5): PAMR runs between the background
merge and the final matching, on the model input bilinearly resized to ``label_size``.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..datasets.base import DatasetInfo, Sample, preprocess
from ..errors import ParameterError, UnknownLayerError
from .cache import FeatureStore, feature_key, image_hash, model_fingerprint
from .grid import AblationGrid, Config

__all__ = ["compute_unit", "resolve_layer"]

_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _capture_lock(backbone: Any) -> threading.Lock:
    """One lock per backbone: hooks are module state, so two threads must not capture on one UNet."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(backbone), threading.Lock())


def resolve_layer(backbone: Any, spec: str) -> str:
    """The one hook-point name a grid layer entry stands for (an alias or an exact name)."""
    from ..hooks import resolve_layers

    names = resolve_layers(backbone, spec)
    if len(names) != 1:
        raise UnknownLayerError(
            f"grid layer {spec!r} matches {len(names)} hook points ({names[:4]}...); a grid entry must "
            "name one feature map: list the layers one by one"
        )
    return names[0]


def _quirk_match(info: DatasetInfo) -> str:
    return "reference" if info.quirks == "paper" else "present"


def _features(
    backbone: Any,
    grid: AblationGrid,
    x: torch.Tensor,
    needs: set[tuple[str, int]],
    store: FeatureStore | None,
) -> tuple[dict[tuple[str, int], torch.Tensor], bool]:
    """Feature maps ``(C, h, w)`` float32 for every needed (hook name, timestep); True if all cached."""
    from ..hooks import capture

    size = int(x.shape[-1])
    fp = model_fingerprint(backbone) if store is not None else ""
    img = image_hash(x) if store is not None else ""
    dtype = str(getattr(backbone, "dtype", ""))
    keys = {
        (name, t): feature_key(
            model=fp,
            image=img,
            size=size,
            timestep=t,
            seed=grid.seed,
            prompt=grid.prompt,
            layer=name,
            dtype=dtype,
        )
        for name, t in needs
    }
    out: dict[tuple[str, int], torch.Tensor] = {}
    if store is not None:
        for nt, key in keys.items():
            hit = store.get(key)
            if hit is not None:
                out[nt] = hit.float()
    missing = sorted(needs - set(out))
    if missing:
        layers = sorted({n for n, _ in missing})
        steps = sorted({t for _, t in missing})
        with _capture_lock(backbone):
            cache = capture(backbone, x[None], layers=layers, timesteps=steps, seed=grid.seed, prompt=grid.prompt,
                            image_size=size)  # fmt: skip
        for name, t in missing:
            feats = cache[name, t][0].detach().float().cpu()
            out[name, t] = feats
            if store is not None:
                meta = {"model": getattr(backbone, "name", ""), "layer": name, "timestep": t, "size": size}
                store.put(keys[name, t], feats, meta)
    return out, not missing


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _baseline_labels(method: str, feats: torch.Tensor, params: str, seed: int, attn: Any) -> np.ndarray:
    from ..baselines import segment_features

    kwargs = json.loads(params)
    if _accepts(segment_features, "seed") and "seed" not in kwargs:
        kwargs["seed"] = seed
    if method == "diffseg":
        kwargs["attn"] = attn
    return np.asarray(segment_features(feats, method=method, **kwargs), dtype=np.int64)


def _diffcut_trees(feats: torch.Tensor, cfgs: Sequence[Config]) -> dict[str, tuple[np.ndarray, float]]:
    """Labels (h, w) per configuration id: one recursion per (alpha, mode) at the largest tau."""
    from ..affinities import affinity
    from ..ncut import recursive_ncut

    h, w = feats.shape[-2:]
    out: dict[str, tuple[np.ndarray, float]] = {}
    groups: dict[tuple[float, str], list[Config]] = defaultdict(list)
    for c in cfgs:
        groups[c.alpha, c.mode].append(c)
    for (alpha, mode), group in groups.items():
        t0 = time.perf_counter()
        W = affinity(feats, alpha=alpha)
        top = max(c.tau for c in group)
        tree = recursive_ncut(W, tau=top, grid=(h, w), mode=mode)
        base = time.perf_counter() - t0
        pruned: dict[float, tuple[np.ndarray, float]] = {}
        for tau in sorted({c.tau for c in group}, reverse=True):
            t1 = time.perf_counter()
            t = tree if tau == top else tree.prune(tau)
            labels = np.asarray(t.labels, dtype=np.int64).reshape(h, w)
            pruned[tau] = (labels, (base if tau == top else 0.0) + time.perf_counter() - t1)
        for c in group:
            out[c.id] = pruned[c.tau]
    return out


def _score(
    labels: np.ndarray,
    feats: torch.Tensor,
    refine: str,
    image_small: torch.Tensor,
    gt: np.ndarray,
    info: DatasetInfo,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Upsample, merge background, refine, match: TP, FP, FN (num_classes,) and the labelled pixels."""
    from ..metrics import image_counts, merge_background
    from ..refine import concept_assignment, median_filter, pamr

    size = gt.shape
    pred = np.asarray(concept_assignment(labels, feats, size), dtype=np.int64)
    match = _quirk_match(info)
    if info.two_stage_background:
        pred, gt = merge_background(pred, gt, info.num_classes, ignore_index=info.ignore_index, match=match)
    if refine == "pamr":
        pred = np.asarray(median_filter(pamr(image_small, pred, num_iter=10, dilations=(1, 2, 4, 8)), 3))
    elif refine == "median":
        pred = np.asarray(median_filter(pred, 3))
    tp, fp, fn, n = image_counts(pred, gt, info.num_classes, ignore_index=info.ignore_index, match=match)
    return tp, fp, fn, n


def _image_miou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    denom = tp + fp + fn
    if not (denom > 0).any():
        return float("nan")
    return float(np.mean(tp[denom > 0] / denom[denom > 0]))


def compute_unit(
    backbone: Any,
    grid: AblationGrid,
    sample: Sample,
    index: int,
    info: DatasetInfo,
    configs: Sequence[Config],
    *,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Result rows of ``configs`` on one image (see the module docstring for the order of work).

    Parameters
    ----------
    backbone : Backbone
        The model named by every config's ``model``.
    grid : AblationGrid
        The study (seed, prompt, sizes).
    sample : Sample
        The image and its ground truth.
    index : int
        The image's position in the dataset (a column of the rows).
    info : DatasetInfo
        How the dataset is scored.
    configs : sequence of Config
        Configurations to compute (all of one model).
    store : FeatureStore, optional
        Disk cache of features.

    Returns
    -------
    pandas.DataFrame
        One row per configuration, columns of :data:`~diffcut_lab.ablation.store.SCHEMA`.
    """
    if sample.label is None:
        raise ParameterError(f"dataset {info.name!r} has no labels; an ablation needs ground truth to score")
    if not configs:
        return pd.DataFrame()
    size = int(grid.image_size or backbone.image_size)
    x, y = preprocess(sample.image, sample.label, size=size, label_size=grid.label_size)
    gt = y.numpy()
    names = {layer: resolve_layer(backbone, layer) for layer in {c.layer for c in configs}}
    needs = {(names[c.layer], c.timestep) for c in configs}
    if any(c.method == "diffseg" for c in configs):
        needs |= {(f"{names[c.layer]}.probs", c.timestep) for c in configs if c.method == "diffseg"}
    feats, cached = _features(backbone, grid, x, needs, store)
    small = F.interpolate(x[None], size=gt.shape, mode="bilinear", align_corners=False)[0]
    fingerprint = model_fingerprint(backbone)

    by_features: dict[tuple[str, int], list[Config]] = defaultdict(list)
    for c in configs:
        by_features[c.layer, c.timestep].append(c)
    rows: list[dict[str, Any]] = []
    for (layer, t), group in by_features.items():
        f = feats[names[layer], t]
        labelled: dict[str, tuple[np.ndarray, float]] = {}
        dc = [c for c in group if c.method == "diffcut"]
        if dc:
            # one tree per (alpha, mode); refinements share the labels
            labelled.update(_diffcut_trees(f, dc))
        for c in group:
            if c.method != "diffcut":
                t0 = time.perf_counter()
                attn = feats.get((f"{names[layer]}.probs", t))
                labels = _baseline_labels(c.method, f, c.params, grid.seed, None if attn is None else attn[0])
                labelled[c.id] = (labels, time.perf_counter() - t0)
        for c in group:
            labels, secs = labelled[c.id]
            t0 = time.perf_counter()
            tp, fp, fn, n = _score(labels, f, c.refine, small, gt, info)
            row = c.to_dict()
            row.update(
                dataset=info.name, image=sample.name, image_index=int(index), config_id=c.id,
                layer_name=names[layer], input_size=size, grid_h=int(f.shape[-2]), grid_w=int(f.shape[-1]),
                n_segments=len(np.unique(labels)), num_classes=info.num_classes,
                background=info.two_stage_background, tp=tp.tolist(), fp=fp.tolist(), fn=fn.tolist(),
                n_pixels=int(n), miou_image=_image_miou(tp, fp, fn),
                accuracy=float(tp.sum() / n) if n else float("nan"), model_fingerprint=fingerprint,
                seconds=secs + time.perf_counter() - t0, features_cached=cached,
            )  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)
