"""Benchmark: every cut method at the largest dense grids, time and peak memory against the plain recursion.

Each method cuts the same synthetic features (``k`` noisy Voronoi blobs) through the one segmentation core
(:func:`diffcut_lab.segmentation.cut_tree`), in a fresh process of its own, so that its peak resident
memory (``ru_maxrss`` of that process, from ``os.wait4``) is its own:

* ``recursive``: the plain dense recursion (``DiffCutConfig(tau=...)``), the reference;
* ``kway``: one K-way cut (``partition="kway"``, ``n_segments``), as the segmentation core runs it;
* ``kway-spectral``: :func:`~diffcut_lab.kway.kway_ncut` with its own default start on the core's graph
  (:func:`~diffcut_lab.segmentation.affinity_graph`);
* ``walk``: the attention random walk (``affinity="attention"``, ``walk_steps``) on a synthetic attention
  matrix (softmax of the features' scaled cosines, built in place in the child);
* ``device``: the device path's arithmetic (``solver="torch64"``) run on the CPU (its timing there says
  nothing about a GPU; it checks that nothing in it is ``O(N^3)`` or needs an ``N x N`` float64 copy per
  level beyond the sub-graph).

Reported per method: seconds of the cut (graph included, imports and feature synthesis not; a child
that did not finish counts with its wall time), the child's wall time, its peak RSS (imports included),
and time and memory as ratios to ``recursive`` measured in the same run (rounds alternate the methods). A child that runs past ``--timeout``
is recorded as such. ``--src DIR`` runs the children on another checkout's ``diffcut_lab`` (e.g. an
older commit extracted with ``git archive``), for before/after numbers in one run.

Run: ``python benchmarks/large_grid.py --side 64 [--rounds 2] [--methods recursive kway walk device]``
-> ``benchmarks/results/large_grid_<side>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT_DIR = Path(__file__).parent / "results"
METHODS = ("recursive", "kway", "kway-spectral", "walk", "device")


def child(
    method: str, side: int, k: int, channels: int, noise: float, tau: float, threads: int, seed: int
) -> dict:
    """Run one method in this process; return its cut's seconds and what it found."""
    import torch

    torch.set_num_threads(threads)
    import torch.nn.functional as F

    from diffcut_lab.config import DiffCutConfig
    from diffcut_lab.segmentation import cut_tree

    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, channels, generator=gen)
    sites = torch.rand(k, 2, generator=gen) * side
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    dist = (yy[None] - sites[:, 0, None, None]) ** 2 + (xx[None] - sites[:, 1, None, None]) ** 2
    f = centres[dist.argmin(0)].permute(2, 0, 1) + noise * torch.randn(channels, side, side, generator=gen)
    cfg = DiffCutConfig(tau=tau)
    attention = None
    if method == "walk":
        z = F.normalize(f.reshape(channels, -1), dim=0)
        attention = z.T @ z  # (N, N) logits, turned into softmax rows in place: one N x N matrix
        attention.mul_(10.0)
        attention.sub_(attention.max(dim=1, keepdim=True).values).exp_()
        attention.div_(attention.sum(dim=1, keepdim=True))
        cfg = cfg.replace(affinity="attention")
    elif method == "kway":
        cfg = cfg.replace(partition="kway", n_segments=k)
    elif method == "device":
        cfg = cfg.replace(solver="torch64")
    t = time.perf_counter()
    if method == "kway-spectral":
        from diffcut_lab.kway import kway_ncut
        from diffcut_lab.segmentation import affinity_graph

        res = kway_ncut(affinity_graph(f, cfg), k)
        return {"seconds": time.perf_counter() - t, "n_segments": int(res.n_segments), "solvers": [],
                "ncut": float(res.ncut)}  # fmt: skip
    tree = cut_tree(f, cfg, attention=attention)
    seconds = time.perf_counter() - t
    solvers = sorted({s.solver for s in tree.steps})
    row = {"seconds": seconds, "n_segments": int(tree.n_segments), "solvers": solvers}
    if "ncut" in tree.params:
        row["ncut"] = float(tree.params["ncut"])
    return row


def spawn(method: str, args: argparse.Namespace) -> dict:
    """One child process for ``method``: its result, wall seconds and peak RSS (GiB), or its timeout."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--side", str(args.side),
           "--k", str(args.k), "--channels", str(args.channels), "--noise", str(args.noise), "--tau", str(args.tau),
           "--threads", str(args.threads), "--seed", str(args.seed)]  # fmt: skip
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = f"{Path(args.src).resolve()}{os.pathsep}{env.get('PYTHONPATH', '')}"
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    deadline = t + args.timeout
    status, usage = 0, None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            return {
                "timed_out": True,
                "wall_s": time.perf_counter() - t,
                "peak_rss_gib": usage.ru_maxrss / 2**20,
            }
        time.sleep(0.2)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    row: dict = {"wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20}  # ru_maxrss is in KiB on Linux
    if proc.returncode != 0:
        row["error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        return row
    row.update(json.loads(out.strip().splitlines()[-1]))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--src", default=None, help="run the children on this checkout's diffcut_lab")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.side, args.k, args.channels, args.noise, args.tau, args.threads,
                               args.seed)))  # fmt: skip
        return 0
    methods = list(dict.fromkeys(["recursive", *args.methods]))  # the reference always runs
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods if r % 2 == 0 else methods[::-1]:
            row = spawn(m, args)
            runs[m].append(row)
            print(f"{m}: " + json.dumps(row), flush=True)
    summary = {}

    def cut_s(row: dict) -> float:  # a child that did not finish counts with its whole wall time
        return row.get("seconds", row["wall_s"])

    ref_s = statistics.median(cut_s(row) for row in runs["recursive"])
    ref_gib = statistics.median(row["peak_rss_gib"] for row in runs["recursive"])
    for m, rows in runs.items():
        ok = [row for row in rows if "error" not in row and not row.get("timed_out")]
        summary[m] = {
            "cut_s": statistics.median(cut_s(row) for row in rows),
            "wall_s": statistics.median(row["wall_s"] for row in rows),
            "peak_rss_gib": statistics.median(row["peak_rss_gib"] for row in rows),
            "time_over_recursive": statistics.median(cut_s(row) for row in rows) / ref_s,
            "memory_over_recursive": statistics.median(row["peak_rss_gib"] for row in rows) / ref_gib,
            "completed": len(ok) == len(rows),
        }
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_before": os.getloadavg(),
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "child")},
        "nodes": args.side**2,
        "summary": summary,
        "runs": runs,
    }
    out = args.out or OUT_DIR / f"large_grid_{args.side}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    raise SystemExit(main())
