"""The contract every ablation row keeps: it equals ``DiffCut(...).segment`` scored by ``hungarian_miou``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import diffcut_lab as dl
from diffcut_lab.ablation import AblationGrid
from diffcut_lab.ablation.engine import eval_label
from diffcut_lab.datasets import load_dataset
from diffcut_lab.metrics import hungarian_miou

LAYERS = ["diffcut", "down_blocks.1.attentions.0.transformer_blocks.0.attn1"]


def ablation_grid(model: Path, **kw) -> AblationGrid:
    base = dict(
        dataset="synthetic", dataset_kwargs={"n": 2, "size": 64}, models=[str(model)], layers=LAYERS,
        timesteps=[10, 50], alphas=[5.0, 10.0], taus=[0.3, 0.8], refines=["none", "pamr"], label_size=48,
    )  # fmt: skip
    base.update(kw)
    return AblationGrid(**base)


def assert_rows_are_the_pipeline(grid: AblationGrid, rows: pd.DataFrame) -> None:
    """Every row == DiffCut(bb, row config).segment(image) scored by hungarian_miou (TP, FP, FN)."""
    ds = load_dataset(grid.dataset, **grid.dataset_kwargs)
    bb = dl.load_backbone(grid.models[0])
    configs = {c.id: c for c in grid.configs()}
    assert len(rows) == len(configs) * len(ds)
    for _, row in rows.iterrows():
        c = configs[row["config_id"]]
        sample = ds[int(row["image_index"])]
        seg = dl.DiffCut(bb, c.diffcut_config()).segment(sample.image)
        gt = eval_label(sample.label, bb.image_size, grid.label_size)
        res = hungarian_miou(seg.labels, gt, num_classes=ds.info.num_classes)
        assert list(row["tp"]) == res.tp.tolist(), (c, row["image"])
        assert list(row["fp"]) == res.fp.tolist(), (c, row["image"])
        assert list(row["fn"]) == res.fn.tolist(), (c, row["image"])
        assert row["n_segments"] == seg.tree.n_segments


def small_study():
    """Four 64 px synthetic scenes, captured by a tiny SD-1.x-like model: every attn1 output and the DiffCut
    layer's attention probabilities, at t = 10 and 50. Returns ``(cache, scenes, diffcut layer name)``."""
    from diffcut_lab.datasets.synthetic import make_scene
    from diffcut_lab.testing import tiny_backbone

    bb = tiny_backbone("sd1", image_size=64)
    scenes = [make_scene(s, size=64) for s in range(4)]
    layer = dl.resolve_layers(bb, "diffcut")[0]
    cache = dl.capture(bb, [s.image for s in scenes], layers=["attn1", f"{layer}.probs"], timesteps=[10, 50])
    return cache, scenes, layer
