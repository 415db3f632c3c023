"""Contract: an ablation row of a baseline method (K-means, spectral clustering, DiffSeg) is what
``segment_features`` gives on the same captured features, upsampled and refined by the core and scored by
``hungarian_miou`` -- the same contract the DiffCut rows keep (tests/test_one_core.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _contracts import ablation_grid

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.ablation import run_ablation
from diffcut_lab.ablation.engine import eval_label
from diffcut_lab.baselines import segment_features
from diffcut_lab.datasets import load_dataset
from diffcut_lab.metrics import hungarian_miou


@pytest.mark.slow
def test_baseline_rows_are_segment_features_scored_by_the_core(tiny_dir):
    grid = ablation_grid(
        tiny_dir, layers=["diffcut"], timesteps=[50], refines=["none", "pamr"],
        methods=["kmeans", "spectral", "diffseg"], method_kwargs={"kmeans": {"n_clusters": 3}},
    )  # fmt: skip
    rows = run_ablation(grid, out=None, progress=False)
    ds = load_dataset(grid.dataset, **grid.dataset_kwargs)
    assert set(rows["method"]) == {"kmeans", "spectral", "diffseg"}
    assert len(rows) == 3 * 2 * len(ds)  # methods x refines x images (the taus axis is DiffCut's)

    bb = dl.load_backbone(str(tiny_dir))
    configs = {c.id: c for c in grid.configs()}
    name = dl.DiffCut(bb).layer_name()
    for _, row in rows.iterrows():
        c = configs[row["config_id"]]
        cfg = c.diffcut_config()
        sample = ds[int(row["image_index"])]
        image = dl.DiffCut(bb, cfg).inputs(sample.image)[0]
        region, x = image[0], image[1]
        cache = dl.capture(bb, x[None], layers=[name, f"{name}.probs"], timesteps=50, seed=grid.seed)
        feats, probs = cache[name, 50][0].float(), cache[f"{name}.probs", 50][0]
        kwargs = {"seed": grid.seed, **json.loads(c.params or "{}")}
        if c.method == "diffseg":
            kwargs["attn"] = probs
        coarse = segment_features(feats, c.method, **kwargs)
        gt = eval_label(sample.label, bb.image_size, grid.label_size)
        pred = core.pixel_labels(coarse, feats, gt.shape, cfg, region=region, x=x)
        res = hungarian_miou(pred, gt, num_classes=ds.info.num_classes)
        assert list(row["tp"]) == res.tp.tolist(), (c.method, c.refine, row["image"])
        assert list(row["fp"]) == res.fp.tolist(), (c.method, c.refine, row["image"])
        assert list(row["fn"]) == res.fn.tolist(), (c.method, c.refine, row["image"])
        assert row["n_segments"] == len(np.unique(coarse))
