"""One work unit: every configuration of one image on one model, from one feature capture.

Every configuration is a :class:`~diffcut_lab.config.DiffCutConfig` (:meth:`Config.diffcut_config`) and
every step is a function of the segmentation core (:mod:`diffcut_lab.segmentation`), so a row holds
exactly what ``DiffCut(backbone, config).segment(image)`` scored by
:func:`~diffcut_lab.metrics.hungarian_miou` gives. Order of work inside a unit (what makes sweeps cheap):

1. the network input (:func:`~diffcut_lab.segmentation.network_input`: the published centre crop, the
   model's input size) and the labels cropped alike and resized to ``label_size``;
2. features for every (layer, timestep) that some configuration needs: read from the disk cache, and
   whatever is missing captured in one :func:`~diffcut_lab.hooks.capture` call (one UNet pass per
   timestep for all layers);
3. per (layer, timestep, cut settings): one recursion at the largest tau; every smaller tau is a prune
   of that tree (:func:`~diffcut_lab.segmentation.cut_trees`);
4. per labelling (:func:`~diffcut_lab.segmentation.pixel_labels`): upsampling to ``label_size``, then for
   the datasets with a background class the first stage of the background protocol (unmatched clusters
   merged), then the refinement, then Hungarian matching -> TP/FP/FN.

Step 4 follows the published evaluation (reference section 5): PAMR runs between the background merge
and the final matching.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import segmentation as core
from ..config import DiffCutConfig, cut_key
from ..datasets.base import DatasetInfo, Sample, preprocess_label
from ..errors import ParameterError, UnknownLayerError
from ..feature_cache import FeatureStore, feature_key, image_hash, model_fingerprint
from ..metrics import MIoUResult, image_counts, merge_background
from .grid import AblationGrid, Config

__all__ = ["compute_unit", "eval_label", "resolve_layer"]


def resolve_layer(backbone: Any, spec: str) -> str:
    """The one hook-point name a grid layer entry stands for (an alias or an exact name)."""
    from ..hook_points import resolve_layers

    names = resolve_layers(backbone, spec)
    if len(names) != 1:
        raise UnknownLayerError(
            f"grid layer {spec!r} matches {len(names)} hook points ({names[:4]}...); a grid entry must "
            "name one feature map: list the layers one by one"
        )
    return names[0]


def eval_label(label: np.ndarray, size: int, label_size: int) -> np.ndarray:
    """The ground truth scored against predictions: cropped like the image, resized to ``label_size``
    (:func:`~diffcut_lab.datasets.base.preprocess_label`)."""
    return preprocess_label(label, size=size, label_size=label_size).numpy()


def _features(
    backbone: Any,
    grid: AblationGrid,
    x: torch.Tensor,
    base: DiffCutConfig,
    needs: set[tuple[str, int]],
    store: FeatureStore | None,
) -> tuple[dict[tuple[str, int], torch.Tensor], bool]:
    """Feature maps ``(C, h, w)`` float32 for every needed (hook name, timestep); True if all cached."""
    from ..capturing import capture, capture_lock

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
            seed=base.seed,
            prompt=grid.prompt,
            layer=name,
            dtype=dtype,
            noise_device=base.noise_device,
        )
        for name, t in needs
    }
    out: dict[tuple[str, int], torch.Tensor] = {}
    # what an entry must hold: the image's content hash, the layer, timestep and size (a file copied from
    # another image or moved from another key is not believed; the store also checks the key it was put under)
    meta = {(name, t): {"image": img, "layer": name, "timestep": t, "size": size} for name, t in needs}
    if store is not None:
        for nt, key in keys.items():
            hit = store.get(key, expect=meta[nt])
            if hit is not None:
                out[nt] = hit.float()
    missing = sorted(needs - set(out))
    if missing:
        layers = sorted({n for n, _ in missing})
        steps = sorted({t for _, t in missing})
        with capture_lock(backbone):  # units of one process share the model: one capture at a time
            cache = capture(backbone, x[None], layers=layers, timesteps=steps, seed=base.seed,
                            prompt=grid.prompt, image_size=size, noise_device=base.noise_device)  # fmt: skip
        for name, t in missing:
            feats = cache[name, t][0].detach().float().cpu()
            out[name, t] = feats
            if store is not None:
                try:
                    store.put(keys[name, t], feats, {**meta[name, t], "model": getattr(backbone, "name", "")})
                except OSError as err:  # a full or read-only cache disk: the cache is optional
                    warnings.warn(f"feature cache {store.root} cannot be written ({err}); continuing without it "
                                  "for this image", RuntimeWarning, stacklevel=2)  # fmt: skip
                    store = None
    return out, not missing


def _baseline_labels(method: str, feats: torch.Tensor, params: str, seed: int, attn: Any) -> np.ndarray:
    from ..baselines import segment_features

    kwargs = json.loads(params)
    kwargs.setdefault("seed", seed)
    if method == "diffseg":
        kwargs["attn"] = attn
    elif kwargs.get("affinity") == "attention":  # the spectral baseline on the attention walk's graph
        kwargs["attention"] = attn
    return np.asarray(segment_features(feats, method=method, **kwargs), dtype=np.int64)


def _grid_labels(
    feats: torch.Tensor, configs: Sequence[Config], cfgs: dict[str, DiffCutConfig], attention: Any = None
) -> dict[str, tuple[np.ndarray, float]]:
    """DiffCut grid labels (h, w) per configuration id: one recursion per cut setting at the largest tau."""
    out: dict[str, tuple[np.ndarray, float]] = {}
    groups: dict[tuple, list[Config]] = defaultdict(list)
    for c in configs:  # configurations that differ only in tau (and the label settings) share one tree
        groups[cut_key(cfgs[c.id])].append(c)
    for group in groups.values():
        t0 = time.perf_counter()
        taus = [cfgs[c.id].tau for c in group]  # numbers, or "auto"
        trees = core.cut_trees(feats, cfgs[group[0].id], taus, attention=attention)
        base = time.perf_counter() - t0
        for i, (c, tau) in enumerate(zip(group, taus)):
            t1 = time.perf_counter()
            labels = core.grid_labels(trees[tau])
            out[c.id] = (labels, (base if i == 0 else 0.0) + time.perf_counter() - t1)  # the cut's time: once
    return out


class _Scorer:
    """Hungarian TP/FP/FN of one image's labels, with the published background step before refinement."""

    def __init__(self, gt: np.ndarray, info: DatasetInfo, match: str) -> None:
        self.gt, self.info, self.match = gt, info, match
        self.scored_gt = gt

    def merge(self, pred: np.ndarray) -> np.ndarray:
        info = self.info
        pred, self.scored_gt = merge_background(
            pred, self.gt, info.num_classes, ignore_index=info.ignore_index, match=self.match
        )
        return pred

    def counts(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        info = self.info
        return image_counts(pred, self.scored_gt, info.num_classes, ignore_index=info.ignore_index,
                            match=self.match)  # fmt: skip


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
        The study (seed, prompt, sizes, preset).
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
    cfgs = {c.id: c.diffcut_config() for c in configs}
    base = cfgs[configs[0].id]  # every point shares the input settings (AblationGrid owns them)
    size = int(grid.image_size or backbone.image_size)
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float() / 255.0
    region, x = core.network_input(image, base, (size, size))
    gt = eval_label(sample.label, size, grid.label_size)
    names = {layer: resolve_layer(backbone, layer) for layer in {c.layer for c in configs}}
    needs = {(names[c.layer], c.timestep) for c in configs}
    needs |= {
        (f"{names[c.layer]}.probs", c.timestep)
        for c in configs
        if c.method == "diffseg"
        or (c.method == "diffcut" and cfgs[c.id].affinity == "attention")
        or json.loads(c.params or "{}").get("affinity") == "attention"
    }
    feats, cached = _features(backbone, grid, x, base, needs, store)
    fingerprint = model_fingerprint(backbone)
    device = getattr(backbone, "device", None)

    by_features: dict[tuple[str, int], list[Config]] = defaultdict(list)
    for c in configs:
        by_features[c.layer, c.timestep].append(c)
    rows: list[dict[str, Any]] = []
    for (layer, t), group in by_features.items():
        f = feats[names[layer], t]
        attn = feats.get((f"{names[layer]}.probs", t))  # (N, N): one image's probabilities
        labelled = _grid_labels(f, [c for c in group if c.method == "diffcut"], cfgs, attn)
        for c in group:
            if c.method != "diffcut":
                t0 = time.perf_counter()
                labels = _baseline_labels(c.method, f, c.params, grid.seed, attn)
                labelled[c.id] = (labels, time.perf_counter() - t0)
        for c in group:
            coarse, secs = labelled[c.id]
            t0 = time.perf_counter()
            scorer = _Scorer(gt, info, c.match)
            pred = core.pixel_labels(
                coarse, f, gt.shape, cfgs[c.id], region=region, x=x, device=device,
                before_refine=scorer.merge if info.two_stage_background else None,
            )  # fmt: skip
            tp, fp, fn, n = scorer.counts(pred)
            scores = MIoUResult.from_counts(tp, fp, fn, n_pixels=n)
            row = c.to_dict()
            row.update(
                dataset=info.name, image=sample.name, image_index=int(index), config_id=c.id,
                layer_name=names[layer], input_size=size, grid_h=int(f.shape[-2]), grid_w=int(f.shape[-1]),
                n_segments=len(np.unique(coarse)), num_classes=info.num_classes,
                background=info.two_stage_background, tp=tp.tolist(), fp=fp.tolist(), fn=fn.tolist(),
                n_pixels=int(n), miou_image=scores.miou, accuracy=scores.accuracy, model_fingerprint=fingerprint,
                seconds=secs + time.perf_counter() - t0, features_cached=cached,
            )  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)
