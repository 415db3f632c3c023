"""Cost of a 6 layers x 3 alphas x 5 taus sweep against a single configuration, on the same images.

    python benchmarks/ablation_cost.py [--model pocket] [--images 4] [--out benchmarks/results/ablation_cost.json]
    python benchmarks/ablation_cost.py --model random-ssd1b --size 1024 --label-size 128 \
        --out benchmarks/results/ablation_cost_ssd1b.json

``--model random-ssd1b`` is a UNet of SSD-1B's configuration with the SDXL VAE, random weights, built in
memory (``benchmarks/device.py``) in bfloat16: a model whose UNet costs what the paper's does, so the
sweep's reuse of one capture shows against a realistic forward.

Everything is measured in this run, with one intra-op thread, features not cached on disk (each run
captures its own):

* ``single``: one configuration (the model's DiffCut layer, t = 50, alpha = 10, tau = 0.5, no refinement);
* ``sweep``: 6 layers x 3 alphas x 5 taus = 90 configurations at t = 50 (one capture per image for all
  six layers, one recursive NCut per layer x alpha at the largest tau, pruned for the other taus);
* ``naive``: the same 90 configurations run one at a time (a capture and a recursion each), measured on
  the first layer's 15 configurations and scaled by the number of layers.

Reported ratios: ``sweep / single`` (the issue's target is <= 1.5), ``sweep / naive`` (what reuse
saves), and the capture-only ratio (features for six layers in one pass vs one layer with early exit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.ablation.engine import resolve_layer
from diffcut_lab.ablation.worker import load_grid_dataset, load_model
from diffcut_lab.datasets.base import preprocess
from diffcut_lab.hooks import capture, list_hook_points

ALPHAS = (5.0, 10.0, 15.0)
TAUS = (0.3, 0.4, 0.5, 0.6, 0.7)


def six_layers(backbone) -> list[str]:
    """The DiffCut layer, then the other hook points at its resolution (attn1 first), six in all."""
    first = resolve_layer(backbone, "diffcut")
    points = list_hook_points(backbone)
    res = next(p.resolution for p in points if p.name == first)
    same = [
        p for p in points if p.resolution == res and p.kind in ("attn1", "attn2", "block") and p.name != first
    ]
    same.sort(key=lambda p: (p.kind != "attn1", p.kind))
    layers = [first, *(p.name for p in same)][:6]
    if len(layers) < 6:
        raise SystemExit(f"{backbone.name} has only {len(layers)} hook points at {res}; need 6")
    return layers


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument(
        "--size", type=int, default=128, help="synthetic scene size (random-ssd1b: also its input side)"
    )
    ap.add_argument("--label-size", type=int, default=None, help="label side (default: the scene size)")
    ap.add_argument(
        "--no-naive", action="store_true", help="skip the 90-separate-runs estimate (a capture each)"
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ablation_cost.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    if args.model == "random-ssd1b":  # built here, then served to the ablation workers by name
        from device import ssd1b_backbone

        from diffcut_lab.ablation import worker

        bb = worker._memo(
            f"model|{args.model}|None|None", lambda: ssd1b_backbone("cpu", torch.bfloat16, args.size)
        )
    else:
        bb = load_model(args.model)
    layers = six_layers(bb)
    base = AblationGrid(
        dataset="synthetic", dataset_kwargs={"n": args.images, "size": args.size}, models=[args.model],
        layers=["diffcut"], timesteps=[50], alphas=[10.0], taus=[0.5], refines=["none"],
        label_size=args.label_size or args.size, threads=1, name="single",
    )  # fmt: skip
    sweep = dataclasses.replace(base, layers=layers, alphas=ALPHAS, taus=TAUS, name="sweep")
    run_ablation(
        dataclasses.replace(base, dataset_kwargs={"n": 1, "size": args.size}), out=None, progress=False
    )

    single_df, t_single = timed(run_ablation, base, out=None, progress=False)
    sweep_df, t_sweep = timed(run_ablation, sweep, out=None, progress=False)
    # naive: the first layer's 15 configurations one at a time, scaled by the number of layers
    t_naive_one_layer = float("nan")
    if not args.no_naive:
        t_naive_one_layer = sum(
            timed(run_ablation, dataclasses.replace(base, layers=[layers[0]], alphas=[a], taus=[t]), out=None,
                  progress=False)[1]
            for a in ALPHAS for t in TAUS
        )  # fmt: skip
    t_naive = t_naive_one_layer * len(layers)

    # feature extraction alone: six layers in one pass vs the DiffCut layer with early exit
    ds = load_grid_dataset(base)
    xs = [preprocess(ds[i].image, size=bb.image_size)[0][None] for i in range(len(ds))]
    t_cap1 = sum(timed(capture, bb, x, layers=[layers[0]], timesteps=50)[1] for x in xs)
    t_cap6 = sum(timed(capture, bb, x, layers=layers, timesteps=50)[1] for x in xs)

    # the sweep's copy of the single configuration must be the single run's result
    diffcut_layer = resolve_layer(bb, "diffcut")  # the sweep lists layers by name, the single run by alias
    same = sweep_df[(sweep_df.layer == diffcut_layer) & (sweep_df.alpha == 10.0) & (sweep_df.tau == 0.5)]
    assert len(same) == len(single_df), (len(same), len(single_df), sorted(set(sweep_df.layer)))
    consistent = [list(v) for v in same.sort_values("image_index")["tp"]] == [
        list(v) for v in single_df["tp"]
    ]

    result = {
        "benchmark": "ablation_cost",
        "model": args.model,
        "images": args.images,
        "image_size": bb.image_size,
        "label_size": args.label_size or args.size,
        "layers": layers,
        "alphas": list(ALPHAS),
        "taus": list(TAUS),
        "configurations": len(sweep),
        "seconds": {
            "single": t_single,
            "sweep": t_sweep,
            "naive_estimated": t_naive,
            "naive_one_layer_measured": t_naive_one_layer,
            "capture_one_layer": t_cap1,
            "capture_six_layers": t_cap6,
        },
        "ratios": {
            "sweep_over_single": t_sweep / t_single,
            "sweep_over_naive": t_sweep / t_naive,
            "capture_six_over_one": t_cap6 / t_cap1,
            "sweep_per_configuration_over_single": t_sweep / len(sweep) / t_single,
        },
        "target_sweep_over_single": 1.5,
        "meets_target": t_sweep / t_single <= 1.5,
        "sweep_contains_single_result": bool(consistent),
        "mean_segments_sweep": float(sweep_df["n_segments"].mean()),
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(bb.device),
            "dtype": str(bb.dtype),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"seconds": result["seconds"], "ratios": result["ratios"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
