"""Benchmark: recursive NCut (paper and fixed modes) against the published algorithm, same run.

The reference is the loop-based transcription in ``tests/_reference_ncut.py`` (dense float32 ``eigh``
per sub-graph, dense masking of the full matrix, a Python loop over 100 thresholds). All methods cut the
same affinity built from the same synthetic clustered features (Voronoi regions, random centres plus
Gaussian noise). Times are medians over repeats; the machine may be shared, so ratios matter, not seconds.

Run: ``python benchmarks/ncut.py [--repeats 3] [--threads 2]`` -> ``benchmarks/results/ncut.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference lives with the tests
from _reference_ncut import clustered_features, reference_affinity, reference_ncut

from diffcut_lab.config import DiffCutConfig
from diffcut_lab.ncut import recursive_ncut
from diffcut_lab.segmentation import affinity_graph

OUT = Path(__file__).parent / "results" / "ncut.json"


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def compare(
    side: int, channels: int, seed: int, repeats: int, ref_repeats: int, tau: float, alpha: float
) -> dict:
    f = clustered_features(seed, side, side, channels=channels, k=6, noise=0.8)
    w = affinity_graph(f, DiffCutConfig(alpha=alpha))  # the graph the toolkit cuts
    assert torch.allclose(w, reference_affinity(f, alpha), rtol=0, atol=1e-5)  # the published one
    t_ref, ref_times, (masks, ref_labels) = timed(lambda: reference_ncut(w, tau), ref_repeats)
    t_paper, paper_times, paper = timed(
        lambda: recursive_ncut(w, tau, grid=(side, side), mode="paper"), repeats
    )
    t_fixed, fixed_times, fixed = timed(
        lambda: recursive_ncut(w, tau, grid=(side, side), mode="fixed"), repeats
    )
    solvers = paper.to_frame()["solver"].value_counts().to_dict()
    row = {
        "grid": [side, side],
        "nodes": side * side,
        "channels": channels,
        "seed": seed,
        "reference_s": t_ref,
        "reference_times": ref_times,
        "reference_segments": int(ref_labels.max() + 1),
        "reference_accepted_cuts": len(masks),
        "paper_s": t_paper,
        "paper_times": paper_times,
        "paper_speedup": t_ref / t_paper,
        "paper_ari": adjusted_rand_score(ref_labels, paper.labels.ravel()),
        "paper_segments": paper.n_segments,
        "paper_steps": len(paper.steps),
        "paper_solvers": solvers,
        "fixed_s": t_fixed,
        "fixed_times": fixed_times,
        "fixed_speedup": t_ref / t_fixed,
        "fixed_ari_vs_reference": adjusted_rand_score(ref_labels, fixed.labels.ravel()),
        "fixed_segments": fixed.n_segments,
        "fixed_steps": len(fixed.steps),
    }
    print(json.dumps({k: v for k, v in row.items() if not k.endswith("times")}, default=str))
    return row


def large(side: int, channels: int, knn: int, repeats: int, tau: float, alpha: float) -> dict:
    f = clustered_features(11, side, side, channels=channels, k=8, noise=0.8)
    t_aff, aff_times, w = timed(lambda: affinity_graph(f, DiffCutConfig(alpha=alpha, knn=knn)), repeats)
    t_cut, cut_times, tree = timed(lambda: recursive_ncut(w, tau, grid=(side, side), mode="fixed"), repeats)
    row = {
        "grid": [side, side],
        "nodes": side * side,
        "channels": channels,
        "knn": knn,
        "edges": int(w._nnz()),
        "affinity_s": t_aff,
        "affinity_times": aff_times,
        "ncut_s": t_cut,
        "ncut_times": cut_times,
        "total_s": t_aff + t_cut,
        "segments": tree.n_segments,
        "steps": len(tree.steps),
        "solvers": tree.to_frame()["solver"].value_counts().to_dict(),
    }
    print(json.dumps({k: v for k, v in row.items() if not k.endswith("times")}, default=str))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "tau": args.tau,
        "alpha": args.alpha,
        "compare": [
            compare(32, 1280, 0, args.repeats, args.repeats, args.tau, args.alpha),
            compare(32, 512, 1, args.repeats, args.repeats, args.tau, args.alpha),
            compare(64, 640, 2, args.repeats, 1, args.tau, args.alpha),
        ],
        "large_fixed": large(128, 256, 32, args.repeats, args.tau, args.alpha),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
