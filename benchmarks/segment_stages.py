"""Benchmark: ``segment`` of a 512 px photo on the pocket model, per stage, this tree against a baseline.

The baseline is an earlier commit of this repository (default :data:`BASELINE`, the last one before the
post-processing work), checked out into a temporary ``git worktree``. Rounds alternate between the two
trees, each round a fresh process per tree that loads the pocket model, segments the photo once to warm
up, then ``--per-round`` times; a stage's figure is its median over all the timed runs of a tree. The
photo is scikit-image's astronaut (512 x 512), default settings (fixed-mode cut, concept assignment, PAMR
and the median filter at 512 x 512).

Stages: ``features`` (UNet input and capture), ``affinity``, ``cut``, ``upsample``, ``refine``;
post-processing is everything after ``features``. A tree that does not time ``affinity`` and ``cut``
apart reports their sum as ``ncut``. Goal: post-processing <= 0.3 s on the 2-core CPU.

Run: ``python benchmarks/segment_stages.py [--baseline REV] [--rounds 3] [--per-round 3]``
-> ``benchmarks/results/segment_stages.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "segment_stages.json"
#: the last commit before the chain moved to the features' device and post-processing got faster
BASELINE = "2ead1bd"
STAGES = ("features", "affinity", "cut", "ncut", "upsample", "refine")


def measure(per_round: int) -> dict[str, list[float]]:
    """Stage seconds of ``per_round`` timed segments (after one warm-up), in this process."""
    import torch

    import diffcut_lab as dl
    from diffcut_lab.datasets.samples import sample_images

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    dc = dl.DiffCut(dl.load_backbone("pocket"))
    photo = sample_images(["astronaut"])["astronaut"]
    dc.segment(photo)
    out: dict[str, Any] = {"module": [dl.__file__]}
    for _ in range(per_round):
        t0 = time.perf_counter()
        seg = dc.segment(photo)
        out.setdefault("total", []).append(time.perf_counter() - t0)
        for k, v in seg.timings.items():
            out.setdefault(k, []).append(v)
    return out


def _round(tree: Path, per_round: int) -> dict[str, list[float]]:
    """One fresh process of ``tree`` (its own ``diffcut_lab`` first on the path) running :func:`measure`."""
    code = (
        f"import json; from benchmarks_segment_stages import measure; print(json.dumps(measure({per_round})))"
    )
    with tempfile.TemporaryDirectory() as tmp:  # this file, importable by name, beside either tree
        (Path(tmp) / "benchmarks_segment_stages.py").write_text(Path(__file__).read_text())
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tmp}"}
        res = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"the run of {tree} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict[str, list[float]]]) -> dict[str, float]:
    merged: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r.items():
            if k != "module":
                merged.setdefault(k, []).extend(v)
    med = {k: statistics.median(v) for k, v in merged.items()}
    if "ncut" not in med:
        med["ncut"] = med.get("affinity", 0.0) + med.get("cut", 0.0)
    med["post"] = med["ncut"] + med["upsample"] + med["refine"]
    return {k: round(v, 4) for k, v in med.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=BASELINE, help="commit to compare against (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (a fresh process per tree)")
    p.add_argument("--per-round", type=int, default=3, help="timed segments per round")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), a.baseline],
                       check=True)  # fmt: skip
        try:
            trees = {"baseline": base, "this": ROOT}
            runs: dict[str, list] = {k: [] for k in trees}
            for r in range(a.rounds):
                for name in trees if r % 2 == 0 else reversed(trees):
                    runs[name].append(_round(trees[name], a.per_round))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    summary = {k: _summary(v) for k, v in runs.items()}
    ratios = {
        k: round(summary["baseline"][k] / summary["this"][k], 2)
        for k in ("ncut", "upsample", "refine", "post", "total")
    }
    result = {
        "benchmark": "segment_stages",
        "baseline": a.baseline,
        "photo": "astronaut, 512 x 512",
        "model": "pocket",
        "rounds": a.rounds,
        "per_round": a.per_round,
        "load_average_at_start": list(os.getloadavg()),
        "goal": "post-processing (affinity + cut + upsample + refine) <= 0.3 s",
        "median_s": summary,
        "speedup": ratios,
        "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name:8s} " + ", ".join(f"{k} {v:.3f} s" for k, v in s.items()))
    print("speed-up " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    return result


if __name__ == "__main__":
    main()
