"""Benchmark: CPU post-processing (concept assignment, PAMR, median filter), before vs after, same run.

"Before" is the frozen plain implementation in ``tests/_reference_refine.py``; "after" is
:mod:`diffcut_lab.refine`. Both run the post-processing chain of ``segment`` on the same inputs:
concept assignment of a coarse ``(grid x grid)`` cut with ``channels``-dimensional features to the image
size (``order="scores"``), PAMR along a guide image (10 iterations, dilations 1, 2, 4, 8), then the 3 x 3
median filter. The inputs are synthetic and photo-like: ``segments`` warped Voronoi regions with their
own colours, a smooth shading gradient, noise and a slight blur for the guide; features are each region's
random concept vector area-pooled to the grid plus noise; the coarse cut is the grid's majority region
with a few cells wrong.

For every torch thread count and size the two implementations alternate (reversed order every other
repeat); each stage's labels are compared bit for bit (``identical`` and ``pixels_differing`` per stage).
Times are medians over repeats, ratios the median of per-repeat ratios (before / after): the machine may
be shared, so the ratios are the result, not the seconds (on a loaded 2-core machine two torch threads
mostly measure how long each waits for the other; one thread is the steadier comparison).

Run: ``python benchmarks/postprocess.py [--repeats 3] [--threads 1 2] [--sizes 512 1024]``
-> ``benchmarks/results/postprocess.json``.
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
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference lives with the tests
import _reference_refine

from diffcut_lab import refine

OUT = Path(__file__).parent / "results" / "postprocess.json"
IMPLEMENTATIONS: dict[str, ModuleType] = {"before": _reference_refine, "after": refine}
STAGES = ("concept_assignment", "pamr", "median", "total")


def scene(size: int, grid: int, channels: int, segments: int, seed: int = 0) -> dict[str, Any]:
    """Photo-like inputs at ``size`` px: guide ``(3, size, size)`` float32 in [0, 1], features
    ``(channels, grid, grid)`` float32 and the coarse ``(grid, grid)`` int64 cut."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    wy = yy + 0.03 * np.sin(rng.uniform(5, 15) * np.pi * xx)
    wx = xx + 0.03 * np.sin(rng.uniform(5, 15) * np.pi * yy)
    centres = rng.random((segments, 2))
    dist = np.stack([(wy - cy) ** 2 + (wx - cx) ** 2 for cy, cx in centres])
    truth = dist.argmin(0)
    colours = rng.random((segments, 3))
    img = colours[truth].transpose(2, 0, 1) + 0.15 * rng.random((3, 1, 1)) * np.sin(
        3 * yy + rng.uniform(0, 6)
    )
    img += rng.normal(scale=0.03, size=img.shape)
    guide = torch.from_numpy(img).float()[None]
    guide = F.avg_pool2d(F.pad(guide, [1, 1, 1, 1], mode="replicate"), 3, stride=1)[0].clamp(0, 1)
    onehot = torch.from_numpy(np.eye(segments, dtype=np.float32)[truth]).permute(2, 0, 1)[None]
    fractions = F.adaptive_avg_pool2d(onehot, grid)[0].numpy()  # (segments, grid, grid)
    concepts = rng.normal(size=(segments, channels))
    features = np.tensordot(concepts, fractions, axes=(0, 0)) + 0.5 * rng.normal(size=(channels, grid, grid))
    coarse = fractions.argmax(0)
    wrong = rng.random(coarse.shape) < 0.02
    coarse[wrong] = rng.integers(0, segments, int(wrong.sum()))
    return {
        "guide": guide.contiguous(),
        "features": torch.from_numpy(features).float(),
        "coarse": coarse.astype(np.int64),
        "size": (size, size),
    }


def run_chain(impl: ModuleType, inputs: dict[str, Any]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seconds per stage and the labels of each stage, called as ``segment``'s refinement calls them."""
    times, labels = {}, {}
    t0 = time.perf_counter()
    up = impl.concept_assignment(inputs["coarse"], inputs["features"], inputs["size"])
    t1 = time.perf_counter()
    lab = torch.as_tensor(np.asarray(up, dtype=np.int64))
    refined = impl.pamr(inputs["guide"], lab, num_iter=10, dilations=(1, 2, 4, 8)).cpu().numpy()
    t2 = time.perf_counter()
    final = impl.median_filter(refined, 3)
    t3 = time.perf_counter()
    times.update(concept_assignment=t1 - t0, pamr=t2 - t1, median=t3 - t2, total=t3 - t0)
    labels.update(concept_assignment=np.asarray(up), pamr=refined, median=np.asarray(final))
    return times, labels


def bench_size(size: int, threads: int, args: argparse.Namespace) -> dict:
    torch.set_num_threads(threads)
    inputs = scene(size, args.grid, args.channels, args.segments, seed=args.seed)
    times: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in IMPLEMENTATIONS}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for r in range(args.repeats):
        order = list(IMPLEMENTATIONS) if r % 2 == 0 else list(reversed(IMPLEMENTATIONS))
        for name in order:
            t, outputs[name] = run_chain(IMPLEMENTATIONS[name], inputs)
            for stage in STAGES:
                times[name][stage].append(t[stage])
    differing = {
        s: int((outputs["before"][s] != outputs["after"][s]).sum())
        if outputs["before"][s].shape == outputs["after"][s].shape
        else -1
        for s in ("concept_assignment", "pamr", "median")
    }
    ratio = {
        s: statistics.median(b / a for b, a in zip(times["before"][s], times["after"][s])) for s in STAGES
    }
    med = {k: {s: statistics.median(v) for s, v in st.items()} for k, st in times.items()}
    result = {
        "threads": threads,
        "size": [size, size],
        "grid": [args.grid, args.grid],
        "channels": args.channels,
        "segments_after_median": int(outputs["after"]["median"].max()) + 1,
        "identical": {s: n == 0 for s, n in differing.items()},
        "pixels_differing": differing,
        "median_s": {k: {s: round(v, 4) for s, v in m.items()} for k, m in med.items()},
        "ratio_before_over_after": {s: round(v, 2) for s, v in ratio.items()},
        "times_s": {k: {s: [round(t, 4) for t in v] for s, v in st.items()} for k, st in times.items()},
    }
    print(
        f"{threads} thread(s), {size} px: total {med['before']['total']:.3f} s -> {med['after']['total']:.3f} s "
        f"(x{ratio['total']:.1f}; concept x{ratio['concept_assignment']:.1f}, pamr x{ratio['pamr']:.1f}, "
        f"median x{ratio['median']:.1f}) | identical: {all(n == 0 for n in differing.values())}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    warm = scene(64, 8, 16, 3, seed=1)
    for impl in IMPLEMENTATIONS.values():  # first-call costs (imports, allocator) out of the timings
        run_chain(impl, {**warm, "size": (64, 64)})
    results = [bench_size(size, t, args) for t in args.threads for size in args.sizes]
    doc = {
        "benchmark": "postprocess",
        "device": "cpu",
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "goals": {"ratio_total_512": ">= 3", "identical": "every stage, every size"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
