"""Benchmark: the K-way cut against scikit-learn's spectral clustering on the same graph, same process.

Graphs: ``K`` noisy Voronoi blobs (a random centre per region plus Gaussian noise, as in the tests'
``clustered_features``), DiffCut's affinity (``alpha``), the diagonal removed so that both methods see the
graph ``kway_ncut`` cuts (it ignores self-loops). For each graph the two methods run alternately,
``repeats`` times each, on the same number of threads; the ratio of medians is reported
(``kway_over_sklearn < 1``: the K-way cut is faster), the same ratio of CPU time (``kway_over_sklearn_cpu``:
on a shared machine the scheduler adds noise to wall time that CPU time of single-threaded work does not
show), with the K-way NCut of both partitions
(:func:`diffcut_lab.kway.kway_ncut_value`) and, for reference, the eigenvector-free start
(``init="k-means++"``) and the same cut without segment moves (``escapes=0``: the spectral start and the
node-move descent alone), which splits the K-way time into what reaches the first local minimum and what the
segment moves add, with the NCut each part buys.

Run: ``python benchmarks/kway_speed.py [--sides 32 64] [--noises 1 2 3] [--repeats 3] [--threads 1]``
-> ``benchmarks/results/kway_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.cluster import spectral_clustering
from threadpoolctl import threadpool_limits

from diffcut_lab.config import DiffCutConfig
from diffcut_lab.kway import kway_ncut, kway_ncut_value
from diffcut_lab.segmentation import affinity_graph

OUT = Path(__file__).parent / "results" / "kway_speed.json"


def blobs(seed: int, side: int, k: int, channels: int, noise: float) -> torch.Tensor:
    """``(C, side, side)`` features: ``k`` random Voronoi regions, a random centre each, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, channels, generator=gen)
    sites = torch.rand(k, 2, generator=gen) * side
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    dist = (yy[None] - sites[:, 0, None, None]) ** 2 + (xx[None] - sites[:, 1, None, None]) ** 2
    feats = centres[dist.argmin(0)].permute(2, 0, 1)
    return feats + noise * torch.randn(channels, side, side, generator=gen)


def alternate(
    fns: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Run every function ``repeats`` times, interleaved (a, b, a, b, ...); wall seconds, CPU seconds and
    last outputs."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            outs[name] = fn()
            cpu[name].append(time.process_time() - c)
            times[name].append(time.perf_counter() - t)
    return times, cpu, outs


def compare(side: int, k: int, noise: float, seed: int, repeats: int, alpha: float, channels: int,
            kmeanspp: bool, no_moves: bool = True) -> dict:  # fmt: skip
    w = affinity_graph(
        blobs(seed, side, k, channels, noise), DiffCutConfig(alpha=alpha)
    )  # the graph the cut sees
    w_np = w.double().numpy().copy()
    np.fill_diagonal(w_np, 0.0)

    def sklearn() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "graph is not fully connected" cannot happen here, but quiet
            return spectral_clustering(w_np, n_clusters=k, random_state=0, assign_labels="cluster_qr")

    fns: dict[str, Callable[[], Any]] = {"sklearn": sklearn, "kway": lambda: kway_ncut(w, k)}
    if kmeanspp:
        fns["kway_kmeanspp"] = lambda: kway_ncut(w, k, init="k-means++")
    if no_moves:
        fns["kway_no_moves"] = lambda: kway_ncut(w, k, escapes=0)
    times, cpu, outs = alternate(fns, repeats)
    med = {name: statistics.median(t) for name, t in times.items()}
    med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    row = {
        "grid": [side, side], "nodes": side * side, "k": k, "noise": noise, "seed": seed,
        "seconds": med, "times": times, "cpu_seconds": med_cpu,
        "kway_over_sklearn": med["kway"] / med["sklearn"],
        "kway_over_sklearn_cpu": med_cpu["kway"] / med_cpu["sklearn"],
        "ncut": {"sklearn": kway_ncut_value(w, outs["sklearn"]), "kway": float(outs["kway"].ncut)},
    }  # fmt: skip
    if kmeanspp:
        row["kway_kmeanspp_over_sklearn"] = med["kway_kmeanspp"] / med["sklearn"]
        row["ncut"]["kway_kmeanspp"] = float(outs["kway_kmeanspp"].ncut)
    if no_moves:
        row["kway_no_moves_over_sklearn"] = med["kway_no_moves"] / med["sklearn"]
        row["ncut"]["kway_no_moves"] = float(outs["kway_no_moves"].ncut)
    return row


def _no_moves_note(row: dict) -> str:
    """The run without segment moves, for the progress line (empty when it was skipped)."""
    if "kway_no_moves_over_sklearn" not in row:
        return ""
    return (
        f"; no segment moves {row['kway_no_moves_over_sklearn']:.2f}, NCut {row['ncut']['kway_no_moves']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sides", type=int, nargs="+", default=[32, 64])
    p.add_argument("--noises", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-kmeanspp", action="store_true", help="skip the eigenvector-free start")
    p.add_argument("--no-split", action="store_true",
                   help="skip the run without segment moves (escapes=0) that splits the K-way time in two")  # fmt: skip
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with threadpool_limits(limits=args.threads):
        for side in args.sides:
            for noise in args.noises:
                for seed in args.seeds:
                    row = compare(side, args.k, noise, seed, args.repeats, args.alpha, args.channels,
                                  not args.no_kmeanspp, not args.no_split)  # fmt: skip
                    rows.append(row)
                    print(
                        f"N={row['nodes']} noise={noise} seed={seed}: kway/sklearn {row['kway_over_sklearn']:.2f} "
                        f"(CPU {row['kway_over_sklearn_cpu']:.2f}) "
                        f"({row['seconds']['kway']:.2f} s vs {row['seconds']['sklearn']:.2f} s), NCut "
                        f"{row['ncut']['kway']:.4f} vs {row['ncut']['sklearn']:.4f}{_no_moves_note(row)}",
                        flush=True,
                    )
    summary = {
        f"N={n}": {
            "max_kway_over_sklearn": max(r["kway_over_sklearn"] for r in rows if r["nodes"] == n),
            "median_kway_over_sklearn": statistics.median(
                r["kway_over_sklearn"] for r in rows if r["nodes"] == n
            ),
            "max_kway_over_sklearn_cpu": max(r["kway_over_sklearn_cpu"] for r in rows if r["nodes"] == n),
            "kway_ncut_never_higher": all(
                r["ncut"]["kway"] <= r["ncut"]["sklearn"] + 1e-9 for r in rows if r["nodes"] == n
            ),
            **(
                {
                    "max_kway_no_moves_over_sklearn": max(
                        r["kway_no_moves_over_sklearn"] for r in rows if r["nodes"] == n
                    ),
                    "kway_no_moves_ncut_never_higher": all(
                        r["ncut"]["kway_no_moves"] <= r["ncut"]["sklearn"] + 1e-9
                        for r in rows
                        if r["nodes"] == n
                    ),
                }
                if not args.no_split
                else {}
            ),
        }
        for n in sorted({r["nodes"] for r in rows})
    }
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "compare": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
