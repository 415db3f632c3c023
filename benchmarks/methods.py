"""Benchmark: partitioners x graphs x stopping rules on the pocket model (the README's methods table).

Runs ``examples/methods_pocket.yaml`` (24 synthetic test scenes: the recursive cut and the K-way cut, on
DiffCut's cosine affinity and on 1-, 2- and 4-step random walks over the layer's self-attention, tau swept
and ``"auto"``) and the same variants on the VOC photo. Scores are the published mIoU (Hungarian
matching, TP/FP/FN pooled over images, PAMR, labels at 128 x 128).

"tau chosen": per variant, the tau with the best mIoU on the first half of the scenes, reported on the
second half (and on the photo). "auto": ``tau="auto"`` (the dynamic rule) on the same images. Time:
``cut_tree`` of that configuration (graph, then recursion or K-way cut) on each test scene's captured
features, median over the scenes, one thread.

Run: ``python benchmarks/methods.py [--scenes 24]`` -> ``benchmarks/results/methods.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.selection import pooled, tuned

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "examples" / "methods_pocket.yaml"
OUT = ROOT / "benchmarks" / "results" / "methods"


def variant_name(params: str) -> tuple[str, str]:
    """``(partitioner, graph)`` of a row's ``params`` JSON."""
    p = json.loads(params)
    graph = (
        f"attention walk, k={p.get('walk_steps', 1)}"
        if p.get("affinity") == "attention"
        else "cosine (DiffCut)"
    )
    return ("K-way" if p.get("partition") == "kway" else "recursive"), graph


def _rows_at(rows: pd.DataFrame, params: str, tau: float) -> pd.DataFrame:
    at = rows[rows["params"] == params]
    return at[at["tau"].isna()] if np.isnan(tau) else at[np.isclose(at["tau"], tau)]


def test_features(grid: AblationGrid, images: list[str]) -> tuple[Any, str, int]:
    """The captured features and attention of ``images`` at the grid's one layer and timestep."""
    import diffcut_lab as dl
    from diffcut_lab.ablation.worker import load_grid_dataset, load_model

    bb = load_model(grid.models[0])
    ds = load_grid_dataset(grid)
    dc = dl.DiffCut(bb, grid.configs()[0].diffcut_config())
    layer, t = dc.layer_name(), dc.config.timestep
    names = {ds[i].name: i for i in range(len(ds))}
    x = torch.stack([dc.inputs(ds[names[n]].image)[0][1] for n in images])
    return dl.capture(bb, x, layers=[layer, f"{layer}.probs"], timesteps=t), layer, t


def cut_seconds(grid: AblationGrid, params: str, tau: float, features: tuple[Any, str, int]) -> float:
    """Median seconds of ``cut_tree`` of one configuration over the captured test scenes."""
    from diffcut_lab import segmentation as core

    cache, layer, t = features
    point = next(c for c in grid.configs() if c.params == params and np.isclose(c.tau, tau, equal_nan=True))
    cfg = point.diffcut_config()
    times = []
    for i in range(cache[layer, t].shape[0]):
        t0 = time.perf_counter()
        core.cut_tree(cache[layer, t][i], cfg, attention=cache[f"{layer}.probs", t][i])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def table(grid: AblationGrid, synthetic: pd.DataFrame, photo: pd.DataFrame | None) -> pd.DataFrame:
    """One row per variant and stopping rule: test-scene and photo mIoU, segments, cut seconds."""
    images = sorted(synthetic["image"].unique())
    half = len(images) // 2
    out = tuned(synthetic, ["params"], select=images[:half], test=images[half:])
    order = {grid.method_params("diffcut", v): i for i, v in enumerate(grid.variants)}
    rank = {"params": order, "stopping": {"tau chosen": 0, "auto": 1}}
    out = out.sort_values(["params", "stopping"], key=lambda c: c.map(rank[c.name]))
    features = test_features(grid, images[half:])
    records = []
    for _, r in out.iterrows():
        partition, graph = variant_name(r["params"])
        rec: dict[str, Any] = {
            "partitioner": partition, "graph": graph, "stopping": r["stopping"], "tau": r["tau"],
            "miou_scenes": r["miou"], "segments_scenes": r["n_segments"],
            "cut_seconds": cut_seconds(grid, r["params"], r["tau"], features),
        }  # fmt: skip
        if photo is not None:
            ph = _rows_at(photo, r["params"], r["tau"])
            rec.update(miou_photo=pooled(ph).miou, segments_photo=float(ph["n_segments"].mean()))
        records.append(rec)
    return pd.DataFrame(records)


def markdown(t: pd.DataFrame) -> str:
    head = "| partitioner | graph | stopping | tau | mIoU, test scenes | segments | mIoU, photo | segments | cut (s) |"
    lines = [head, "|" + "---|" * 9]
    for _, r in t.iterrows():
        tau = "auto" if np.isnan(r["tau"]) else f"{r['tau']:g}"
        lines.append(
            f"| {r['partitioner']} | {r['graph']} | {r['stopping']} | {tau} | {r['miou_scenes']:.3f} | "
            f"{r['segments_scenes']:.1f} | {r.get('miou_photo', float('nan')):.3f} | "
            f"{r.get('segments_photo', float('nan')):.1f} | {r['cut_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=None, help="synthetic scenes (default: the grid's)")
    p.add_argument("--size", type=int, default=None, help="scene size (default: the grid's)")
    p.add_argument("--no-photo", action="store_true", help="skip the VOC photo")
    p.add_argument("--out", type=Path, default=OUT, help="output stem (.json and .md are written)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    grid = AblationGrid.from_yaml(GRID)
    kwargs = dict(grid.dataset_kwargs)
    kwargs.update({k: v for k, v in (("n", a.scenes), ("size", a.size)) if v is not None})
    grid = dataclasses.replace(grid, dataset_kwargs=kwargs)
    t0 = time.perf_counter()
    synthetic = run_ablation(grid, out=None, progress=True)
    photo = None
    if not a.no_photo:
        photo = run_ablation(
            dataclasses.replace(grid, dataset="voc-photo", dataset_kwargs={}), out=None, progress=True
        )
    t = table(grid, synthetic, photo)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text(markdown(t))
    meta = {"benchmark": "methods", "grid": grid.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    a.out.with_suffix(".json").write_text(
        json.dumps({**meta, "table": t.to_dict("records")}, indent=1, default=str) + "\n"
    )
    print(markdown(t))
    return t


if __name__ == "__main__":
    main()
