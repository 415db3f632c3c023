"""Benchmark: ``DiffCut.segment`` end to end on one device, per stage, with an SSD-1B-sized UNet.

A UNet of SSD-1B's configuration and an SDXL-sized VAE, both with random weights (nothing is
downloaded), segment photographs at 1024 px with the default settings (fixed-mode cut, concept
assignment, PAMR at the image size): at batch 1 and batch 8, after a warm-up, each batch ``--repeats``
times. Reported per image: the seconds of every stage (``features`` = the image's share of the batch's
VAE encoding and UNet forward, ``affinity``, ``cut``, ``upsample``, ``refine``), the UNet's share of the
per-image time, images per second end to end, and the peak GPU memory. The chain runs on the backbone's
device (:class:`~diffcut_lab.pipeline.DiffCut` keeps the features there; only labels come back).

Goals on an H100-class GPU (fp16): the UNet >= 50 % of the per-image time, and >= 20 images/s at batch
8 with PAMR. ``--model tiny --size 64`` runs the same code on a tiny model (the test suite does, on the
CPU).

Run: ``python benchmarks/device.py --device cuda --dtype float16`` -> ``benchmarks/results/device_cuda.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import diffcut_lab as dl
from diffcut_lab.backbones import Backbone, parse_dtype, sdxl_added_cond

STAGES = ("features", "affinity", "cut", "upsample", "refine")
GOALS = {"unet_share": ">= 0.5", "images_per_s_batch8": ">= 20 (H100-class GPU, with PAMR)"}
#: the SDXL VAE's configuration (SSD-1B uses it); random weights
SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 1024,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
    "scaling_factor": 0.13025,
}  # fmt: skip


def ssd1b_backbone(device: str, dtype: torch.dtype, size: int) -> Backbone:
    """A random-weight backbone with SSD-1B's UNet and the SDXL VAE (float32), on ``device``."""
    from test_foundation_fullsize import SSD_1B

    from diffcut_lab import _diffusers

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = _diffusers.new_unet({k: v for k, v in SSD_1B.items() if not k.startswith("_")}, seed=0)
    finally:
        torch.set_default_dtype(previous)
    vae = _diffusers.new_vae(SDXL_VAE, seed=0)
    unet.eval().requires_grad_(False).to(device)
    vae.eval().requires_grad_(False).to(device)
    gen = torch.Generator().manual_seed(0)
    return Backbone(
        unet, vae=vae, prompt_embeds=torch.randn(1, 77, SSD_1B["cross_attention_dim"], generator=gen),
        added_cond_kwargs=sdxl_added_cond(torch.randn(1, 1280, generator=gen), size), family="sdxl",
        name="random-ssd1b", image_size=size, latent_scale=8,
    )  # fmt: skip


def tiny_backbone(device: str, dtype: torch.dtype, size: int) -> Backbone:
    """The test suite's tiny SDXL-family model (same code path, seconds on a CPU)."""
    from diffcut_lab.testing import tiny_backbone as tiny

    return tiny("sdxl", image_size=size, dtype=dtype, device=device)


def photos(n: int, size: int) -> list[np.ndarray]:
    """``n`` sample photographs resized to ``size`` x ``size`` (cycled)."""
    from PIL import Image

    from diffcut_lab.datasets.samples import sample_images

    imgs = list(sample_images().values())
    return [np.asarray(imgs[i % len(imgs)].resize((size, size), Image.BILINEAR)) for i in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_batch(dc: dl.DiffCut, images: list[np.ndarray], device: str) -> tuple[float, list[dict[str, float]]]:
    """Wall seconds of one ``segment`` call on a batch, and each image's stage timings."""
    sync(device)
    t0 = time.perf_counter()
    segs = dc.segment(images, batch_size=len(images))
    sync(device)
    return time.perf_counter() - t0, [s.timings for s in segs]


def bench(bb: Backbone, batch: int, repeats: int, size: int, device: str) -> dict[str, Any]:
    """Per-image stage seconds (medians over images and repeats), throughput and peak memory."""
    dc = dl.DiffCut(bb)
    images = photos(batch, size)
    run_batch(dc, images, device)  # warm-up: kernels, allocator, first-call costs
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    walls, stages = [], {k: [] for k in STAGES}
    for _ in range(repeats):
        wall, timings = run_batch(dc, images, device)
        walls.append(wall)
        for t in timings:
            for k in STAGES:
                stages[k].append(t[k])
    per_image = {k: statistics.median(v) for k, v in stages.items()}
    total = sum(per_image.values())
    wall = statistics.median(walls)
    out = {
        "batch": batch,
        "per_image_s": {k: round(v, 5) for k, v in per_image.items()},
        "per_image_total_s": round(total, 5),
        "unet_share": round(per_image["features"] / total, 3),
        "images_per_s": round(batch / wall, 2),
        "wall_s": [round(w, 4) for w in walls],
    }
    if device.startswith("cuda"):
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="UNet dtype (default: float16 on CUDA, float32 on the CPU)")
    p.add_argument("--model", choices=("ssd1b", "tiny"), default="ssd1b")
    p.add_argument("--size", type=int, default=1024, help="input side in pixels")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default benchmarks/results/device_<device>.json)"
    )
    a = p.parse_args(argv)
    dtype = parse_dtype(a.dtype or ("float16" if a.device.startswith("cuda") else "float32"))
    build = ssd1b_backbone if a.model == "ssd1b" else tiny_backbone
    t0 = time.perf_counter()
    bb = build(a.device, dtype, a.size)
    result = {
        "benchmark": "device",
        "device": a.device,
        "device_name": torch.cuda.get_device_name()
        if a.device.startswith("cuda")
        else platform.processor() or "cpu",
        "model": a.model,
        "dtype": str(dtype).replace("torch.", ""),
        "image_size": a.size,
        "torch": torch.__version__,
        "build_s": round(time.perf_counter() - t0, 2),
        "goals": GOALS,
        "results": [bench(bb, b, a.repeats, a.size, a.device) for b in a.batches],
    }
    out = a.out or ROOT / "benchmarks" / "results" / f"device_{a.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in result["results"]:
        stages = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in r["per_image_s"].items())
        print(
            f"batch {r['batch']}: {r['images_per_s']} images/s, UNet share {r['unet_share']:.0%} ({stages})"
        )
    return result


if __name__ == "__main__":
    main()
