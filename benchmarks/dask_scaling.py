"""The ablation sweep in-process vs on a 2-worker Dask LocalCluster: identical rows, wall-time ratio.

    python benchmarks/dask_scaling.py [--model pocket] [--images 4] [--out benchmarks/results/dask_scaling.json]

The study is the cost benchmark's sweep (6 layers x 3 alphas x 5 taus at t = 50, see ablation_cost.py).
The cluster has two worker processes with one thread each (``threads=1`` in the grid, as in-process),
so every unit runs with the same numerics and the rows must be bit-identical. Reported: in-process
wall time, Dask wall time with warm workers (model already loaded in each) and the cluster start-up, and
``dask_over_local`` (below 1 is a speed-up; with two workers on two cores the ideal is 0.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ablation_cost import ALPHAS, TAUS, six_layers

from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.ablation.store import VOLATILE_COLUMNS
from diffcut_lab.ablation.worker import load_model


def stable(df: pd.DataFrame) -> pd.DataFrame:
    out = df.drop(columns=list(VOLATILE_COLUMNS)).reset_index(drop=True)
    for c in ("tp", "fp", "fn"):
        out[c] = out[c].map(lambda v: tuple(int(x) for x in v))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pocket")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dask_scaling.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from dask.distributed import Client, LocalCluster

    bb = load_model(args.model)
    grid = AblationGrid(
        dataset="synthetic", dataset_kwargs={"n": args.images, "size": args.size}, models=[args.model],
        layers=six_layers(bb), timesteps=[50], alphas=ALPHAS, taus=TAUS, refines=["none"], label_size=args.size,
        threads=1, name="sweep",
    )  # fmt: skip
    warm = dataclasses.replace(
        grid, dataset_kwargs={"n": 1, "size": args.size}, layers=["diffcut"], taus=[0.5]
    )
    run_ablation(warm, out=None, progress=False)
    t0 = time.perf_counter()
    local = run_ablation(grid, out=None, progress=False)
    t_local = time.perf_counter() - t0

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    client = Client(cluster)
    t_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        client.run(load_model, args.model)  # load the model once in every worker
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        distributed = run_ablation(grid, out=None, client=client, progress=False)
        t_dask = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    identical = stable(local).equals(stable(distributed))
    result = {
        "benchmark": "dask_scaling",
        "model": args.model,
        "images": args.images,
        "configurations": len(grid),
        "rows": len(local),
        "workers": args.workers,
        "threads_per_worker": 1,
        "seconds": {
            "in_process": t_local,
            "dask_warm": t_dask,
            "cluster_start": t_start,
            "model_load_on_workers": t_load,
        },
        "ratios": {
            "dask_over_local": t_dask / t_local,
            "dask_with_startup_over_local": (t_dask + t_start + t_load) / t_local,
        },
        "identical_rows": bool(identical),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "device": str(bb.device)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("seconds", "ratios", "identical_rows")}, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
