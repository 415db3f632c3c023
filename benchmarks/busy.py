"""Benchmark: ``DiffCut.segment`` of two photos on an idle machine and beside another process's work.

Researchers run the toolkit on laptops and shared workstations where something else holds a core: a
second notebook kernel, a browser, a build. This measures, in one run and alternating, the pipeline with
the thread policy of :mod:`diffcut_lab.threads` ("auto", the default) and off (every stage on the process's
threads, as before the policy):

- ``idle``: nothing else runs;
- ``busy``: a neighbour process runs two-thread torch work (matrix products and element-wise operations
  in a loop, as a second kernel computing would), started before and stopped after the measurements.

Reported: the median seconds of each (condition, policy), the ratio busy / idle per policy (the goal is
at most 1.5 with the policy on) and idle(on) / idle(off) (the goal: no slower, at most ~1.0).

Run: ``python benchmarks/busy.py [--repeats 7] [--model pocket] [--threads 2]``
-> ``benchmarks/results/busy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "busy.json"

NEIGHBOUR = """
import torch, time
torch.set_num_threads(2)
a = torch.rand(256, 256)
v = torch.rand(64, 128, 128)
while True:
    for _ in range(4):
        a = (a @ a).softmax(-1)
    v = torch.nn.functional.avg_pool2d(v, 3, 1, 1) * 1.0001
"""


def _segment_times(dc, images, repeats: int) -> dict[bool, list[float]]:
    from diffcut_lab import threads

    out: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for policy in (True, False) if r % 2 == 0 else (False, True):  # alternate which runs first
            threads.set_policy("auto" if policy else "off")
            t0 = time.perf_counter()
            dc.segment(images)
            out[policy].append(time.perf_counter() - t0)
    threads.set_policy("auto")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="the process's torch threads")
    ap.add_argument("--size", type=int, default=None, help="UNet input side (default: the model's)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    import diffcut_lab as dl
    from diffcut_lab.datasets.samples import sample_images

    torch.set_num_threads(args.threads)
    bb = dl.load_backbone(args.model)
    images = list(sample_images().values())[:2]
    dc = dl.DiffCut(bb, image_size=args.size)
    dc.segment(images)  # warm-up: imports, allocator, first-call costs

    idle = _segment_times(dc, images, args.repeats)
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR])
    try:
        time.sleep(2.0)  # let it reach its loop
        busy = _segment_times(dc, images, args.repeats)
    finally:
        neighbour.kill()
        neighbour.wait()

    med = {f"{cond}/{'policy' if p else 'no_policy'}": statistics.median(t[p])
           for cond, t in (("idle", idle), ("busy", busy)) for p in (True, False)}  # fmt: skip
    result = {
        "what": "DiffCut.segment of two sample photos, median seconds",
        "model": args.model,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_before": os.getloadavg(),
        },
        "seconds": med,
        "busy_over_idle": {
            "policy": med["busy/policy"] / med["idle/policy"],
            "no_policy": med["busy/no_policy"] / med["idle/no_policy"],
        },
        "idle_policy_over_no_policy": med["idle/policy"] / med["idle/no_policy"],
        "busy_policy_over_no_policy": med["busy/policy"] / med["busy/no_policy"],
        "all": {"idle": {str(k): v for k, v in idle.items()}, "busy": {str(k): v for k, v in busy.items()}},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("seconds", "busy_over_idle", "idle_policy_over_no_policy")}, indent=2
        )
    )
    return result


if __name__ == "__main__":
    main()
