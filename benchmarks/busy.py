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

And what bounds that ratio from below: ``idle/one_thread``, the same work on one torch and one BLAS
thread on the idle machine, and the CPU seconds of every run. Beside a neighbour whose two threads are as
busy as ours, a fair scheduler gives each of the four threads half a core, so our two threads get one
core: the work cannot finish faster than on one thread alone, and ``floor = idle/one_thread /
idle/policy`` (the speed-up that two threads give on the idle machine) is the smallest busy / idle any
thread setting can reach without taking more than a fair share. ``busy_cpu_share`` is the CPU seconds
the busy runs got per wall second (1.0: one whole core).

Each OpenMP spin count (``GOMP_SPINCOUNT``: 3000, the toolkit's default since ``import diffcut_lab`` sets
it; 300000, libgomp's own; 0, threads that sleep at once) is measured in a process of its own, one after the
other and again in reverse order (OpenMP reads the variable when torch loads); the neighbour keeps libgomp's
default.

Run: ``python benchmarks/busy.py [--repeats 5] [--model pocket] [--threads 2] [--spin-counts 3000 300000 0]``
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


def _segment_times(dc, images, repeats: int) -> tuple[dict[bool, list[float]], dict[bool, list[float]]]:
    """Wall and CPU seconds of ``repeats`` segmentations per policy (on, off), alternating which runs
    first."""
    from diffcut_lab import threads

    wall: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for r in range(repeats):
        for policy in (True, False) if r % 2 == 0 else (False, True):  # alternate which runs first
            threads.set_policy("auto" if policy else "off")
            t0, c0 = time.perf_counter(), time.process_time()
            dc.segment(images)
            wall[policy].append(time.perf_counter() - t0)
            cpu[policy].append(time.process_time() - c0)
    threads.set_policy("auto")
    return wall, cpu


def _one_thread_times(dc, images, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` segmentations on one torch and one BLAS thread."""
    from diffcut_lab.threads import one_thread

    out = []
    with one_thread():
        for _ in range(repeats):
            t0 = time.perf_counter()
            dc.segment(images)
            out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="the process's torch threads")
    ap.add_argument("--size", type=int, default=None, help="UNet input side (default: the model's)")
    ap.add_argument("--spin-counts", nargs="+", default=["3000", "300000", "0"], help="GOMP_SPINCOUNT values")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one policy, in this process
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.one:
        return _measure(args)
    runs: dict[str, list[dict]] = {spin: [] for spin in args.spin_counts}
    for spin in [*args.spin_counts, *reversed(args.spin_counts)]:  # each twice, the second pass reversed
        part = args.out.with_name(f"{args.out.stem}_spin{spin}.json")
        cmd = [sys.executable, __file__, "--one", "--repeats", str(args.repeats), "--model", args.model,
               "--threads", str(args.threads), "--out", str(part)] + (["--size", str(args.size)] if args.size else [])  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        subprocess.run(cmd, env={**env, "GOMP_SPINCOUNT": spin}, check=True)
        runs[spin].append(json.loads(part.read_text()))
        part.unlink()
    med = {
        spin: {k: statistics.median(r["seconds"][k] for r in rs) for k in rs[0]["seconds"]}
        for spin, rs in runs.items()
    }
    result = {
        "what": "DiffCut.segment of two sample photos, median seconds, per GOMP_SPINCOUNT (two passes each)",
        "seconds": med,
        "busy_over_idle": {spin: m["busy/policy"] / m["idle/policy"] for spin, m in med.items()},
        "floor": {spin: m["idle/one_thread"] / m["idle/policy"] for spin, m in med.items()},
        "busy_cpu_share": {
            spin: statistics.median(r["busy_cpu_share"] for r in rs) for spin, rs in runs.items()
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: result[k] for k in ("seconds", "busy_over_idle", "floor", "busy_cpu_share")}, indent=2)
    )
    return result


def _measure(args: argparse.Namespace) -> dict:
    import diffcut_lab as dl  # noqa: I001  (before torch: the spin count holds from here on)
    import torch
    from diffcut_lab.datasets.samples import sample_images

    torch.set_num_threads(args.threads)
    bb = dl.load_backbone(args.model)
    images = list(sample_images().values())[:2]
    dc = dl.DiffCut(bb, image_size=args.size)
    dc.segment(images)  # warm-up: imports, allocator, first-call costs

    idle, idle_cpu = _segment_times(dc, images, args.repeats)
    one = _one_thread_times(dc, images, args.repeats)
    plain = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }  # libgomp's default
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=plain)
    try:
        time.sleep(2.0)  # let it reach its loop
        busy, busy_cpu = _segment_times(dc, images, args.repeats)
    finally:
        neighbour.kill()
        neighbour.wait()

    med = {f"{cond}/{'policy' if p else 'no_policy'}": statistics.median(t[p])
           for cond, t in (("idle", idle), ("busy", busy)) for p in (True, False)}  # fmt: skip
    med["idle/one_thread"] = statistics.median(one)
    cpu = {f"{cond}/{'policy' if p else 'no_policy'}": statistics.median(c[p])
           for cond, c in (("idle", idle_cpu), ("busy", busy_cpu)) for p in (True, False)}  # fmt: skip
    result = {
        "what": "DiffCut.segment of two sample photos, median seconds",
        "model": args.model,
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_before": os.getloadavg(),
        },
        "seconds": med,
        "cpu_seconds": cpu,
        "busy_over_idle": {
            "policy": med["busy/policy"] / med["idle/policy"],
            "no_policy": med["busy/no_policy"] / med["idle/no_policy"],
        },
        "floor": med["idle/one_thread"] / med["idle/policy"],
        "busy_cpu_share": cpu["busy/policy"] / med["busy/policy"],
        "idle_policy_over_no_policy": med["idle/policy"] / med["idle/no_policy"],
        "busy_policy_over_no_policy": med["busy/policy"] / med["busy/no_policy"],
        "all": {"idle": {str(k): v for k, v in idle.items()}, "busy": {str(k): v for k, v in busy.items()}},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(os.environ.get("GOMP_SPINCOUNT"), json.dumps(
        {k: result[k] for k in ("seconds", "busy_over_idle", "floor", "busy_cpu_share", "idle_policy_over_no_policy")}, indent=2
    ))  # fmt: skip
    return result


if __name__ == "__main__":
    main()
