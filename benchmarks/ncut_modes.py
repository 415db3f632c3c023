"""How do ``mode="fixed"`` and ``mode="paper"`` differ in segmentation quality? Hungarian mIoU, same features.

DiffCut on the pocket model's features of held-out synthetic test scenes (ground truth exact), one feature
capture shared by both modes, each tree built once at the largest tau and pruned for the smaller ones
(``CutTree.prune`` equals a fresh run in both modes). Reported per tau: dataset mIoU, mean segments per
scene, and the share of pixels that paper mode's node-dropping rule left out of at least one cut.

Run::

    python benchmarks/ncut_modes.py [--n 100] [--timestep 300] [--taus 0.3 0.5 0.7 0.85]

Writes ``benchmarks/results/ncut_modes.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffcut_lab import segmentation as core
from diffcut_lab.backbones import load_backbone
from diffcut_lab.config import DiffCutConfig
from diffcut_lab.datasets.synthetic import synthetic_scenes
from diffcut_lab.hooks import capture
from diffcut_lab.metrics import hungarian_miou

OUT = Path(__file__).parent / "results" / "ncut_modes.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100, help="held-out test scenes")
    ap.add_argument("--layer", default="diffcut")
    ap.add_argument("--timestep", type=int, default=300)
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--taus", nargs="+", type=float, default=[0.3, 0.5, 0.7, 0.85])
    ap.add_argument("--seed", type=int, default=42, help="noise seed of the capture")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    bb = load_backbone("pocket")
    scenes = list(synthetic_scenes("test", args.n, bb.image_size))
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 255
    cache = capture(bb, images, layers=args.layer, timesteps=args.timestep, seed=args.seed, batch_size=16)
    feats = cache[cache.layers[0], args.timestep]
    size = tuple(images.shape[-2:])
    num_classes = int(max(s.mask.max() for s in scenes)) + 1
    taus = sorted(args.taus)
    res: dict = {"setup": vars(args) | {"out": str(args.out), "layer": cache.layers[0]}, "modes": {}}
    for mode in ("paper", "fixed"):
        cfg = DiffCutConfig(alpha=args.alpha, mode=mode, refine="none")
        preds: dict[float, list[np.ndarray]] = {t: [] for t in taus}
        dropped = []
        t0 = time.perf_counter()
        for i in range(feats.shape[0]):
            trees = core.cut_trees(feats[i], cfg, taus)
            tree = trees[taus[-1]]
            if mode == "paper":
                left_out = set()
                for s in tree.steps:
                    left_out.update(np.setdiff1d(s.region, s.members).tolist())
                dropped.append(len(left_out) / tree.labels.size)
            for t in taus:
                preds[t].append(core.pixel_labels(core.grid_labels(trees[t]), feats[i], size, cfg))
        seconds = time.perf_counter() - t0
        res["modes"][mode] = {
            "seconds_ncut_and_upsampling": round(seconds, 2),
            "pixels_left_out_of_a_cut": float(np.mean(dropped)) if dropped else 0.0,
            "by_tau": {
                str(t): {
                    "miou": float(
                        hungarian_miou(
                            preds[t], [s.mask for s in scenes], num_classes=num_classes, ignore_index=None
                        ).miou
                    ),
                    "mean_segments": float(np.mean([len(np.unique(p)) for p in preds[t]])),
                }
                for t in taus
            },
        }
        print(mode, json.dumps(res["modes"][mode]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
