"""Benchmark: hook overhead and early exit of :func:`diffcut_lab.hooks.capture`, same run, ratios only.

Two UNets with random weights, built directly in the chosen dtype from the public configs (the same
dicts the tests use): SD 1.5-sized at 512 px (latent 64) and SSD-1B-sized at 1024 px (latent 128),
batch 1, empty-prompt-shaped random conditioning. For each model, three variants run interleaved in
every repeat, on the same ``x_t``:

- ``full``: a plain UNet forward, no hooks;
- ``all_attn1``: the same forward with capture hooks on every ``attn1`` (features copied to the CPU
  store as ``capture`` does), no early exit -- the hook overhead;
- ``diffcut``: capture of the ``"diffcut"`` layer only, with early exit -- the work actually done.

The hooks are installed by the same context manager ``capture`` uses; VAE encoding and noising are
left out of all three (they are identical and not what is measured). Times are medians over repeats;
the machine may be shared, so the ratios (same run, interleaved) are the result, not the seconds.

Run: ``python benchmarks/hooks.py [--repeats 3] [--threads 2] [--dtype bfloat16] [--device cpu]``
-> ``benchmarks/results/hooks.json`` (``--device cuda --dtype float16`` runs were saved as
``benchmarks/results/hooks_cuda.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_foundation_fullsize import SD15, SSD_1B

from diffcut_lab import capturing, hooks
from diffcut_lab.backbones import Backbone, sdxl_added_cond

OUT = Path(__file__).parent / "results" / "hooks.json"
MODELS = {"sd15-512": (SD15, 512), "ssd1b-1024": (SSD_1B, 1024)}


def build(cfg: dict, image_size: int, dtype: torch.dtype, device: str, seed: int = 0) -> Backbone:
    """A random-weight backbone of the given config, built directly in ``dtype``."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    finally:
        torch.set_default_dtype(previous)
    unet.eval().requires_grad_(False).to(device)
    cross = cfg["cross_attention_dim"]
    added = None
    if cfg.get("addition_embed_type") == "text_time":
        added = sdxl_added_cond(torch.randn(1, 1280), image_size)
    return Backbone(
        unet, prompt_embeds=torch.randn(1, 77, cross), added_cond_kwargs=added, name="random",
        image_size=image_size, latent_scale=8,
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_variant(
    bb: Backbone, x_t: torch.Tensor, points: list | None, early_exit: bool, device: str, store_device: str
) -> float:
    """Seconds for one forward: plain (``points=None``) or as ``capture`` runs it, features collected."""
    store: dict = {}
    sync(device)
    t0 = time.perf_counter()
    if points is None:
        bb.forward(x_t, 50)
    else:
        embeds, added = bb.conditioning("")
        with capturing._hooks(bb, points, store=store, store_dtype=torch.float32, early_exit=early_exit):
            capturing._forward_once(bb, x_t, 50, embeds=embeds, added=added, store=store)
        feats = capturing._collect(store, points, 50, store_device)
        assert len(feats) == len(points)
    sync(device)
    return time.perf_counter() - t0


def bench_model(key: str, repeats: int, dtype: torch.dtype, device: str, store_device: str) -> dict:
    cfg, size = MODELS[key]
    t0 = time.perf_counter()
    bb = build(cfg, size, dtype, device)
    build_s = time.perf_counter() - t0
    latent = size // 8
    x_t = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    by_name = {p.name: p for p in hooks.list_hook_points(bb)}
    attn1 = [by_name[n] for n in hooks.resolve_layers(bb, "attn1")]
    diffcut = [by_name[n] for n in hooks.resolve_layers(bb, "diffcut")]
    variants = {"full": (None, False), "all_attn1": (attn1, False), "diffcut": (diffcut, True)}
    run_variant(bb, x_t, None, False, device, store_device)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))  # interleave, alternate order
        for name in order:
            pts, early = variants[name]
            times[name].append(run_variant(bb, x_t, pts, early, device, store_device))
    med = {k: statistics.median(v) for k, v in times.items()}
    # per-repeat ratios against the plain forward of the same repeat, then their median
    hook_ratio = statistics.median(a / f for a, f in zip(times["all_attn1"], times["full"]))
    exit_ratio = statistics.median(d / f for d, f in zip(times["diffcut"], times["full"]))
    result = {
        "model": key,
        "image_size": size,
        "latent": latent,
        "diffcut_layer": diffcut[0].name,
        "attn1_hooked": len(attn1),
        "build_s": round(build_s, 2),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "hook_overhead_ratio": round(hook_ratio, 4),
        "early_exit_ratio": round(exit_ratio, 4),
    }
    print(
        f"{key}: full {med['full']:.2f} s | all attn1 hooked {med['all_attn1']:.2f} s "
        f"(x{hook_ratio:.3f}) | diffcut early exit {med['diffcut']:.2f} s (x{exit_ratio:.3f})",
        flush=True,
    )
    del bb
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--store-device", default="cpu", help="where captured features go (capture's default: cpu)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    results = [bench_model(k, args.repeats, dtype, args.device, args.store_device) for k in args.models]
    device_name = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    )
    doc = {
        "benchmark": "hooks",
        "device": args.device,
        "device_name": device_name if args.device.startswith("cuda") else "cpu",
        "dtype": args.dtype,
        "threads": args.threads,
        "store_device": args.store_device,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "goals": {"hook_overhead_ratio": "<= 1.05", "early_exit_ratio_ssd1b": "<= 0.55"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
