"""``diffcut-lab ablate CONFIG.yaml``: run a declarative ablation grid, resumable, on any executor."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import EXECUTORS


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ablate`` parser."""
    p = subparsers.add_parser(
        "ablate",
        help="run an ablation grid (layers x timesteps x alpha x tau x refine x method) on a dataset",
        description=(
            "Run the ablation grid described by a YAML file (keys: dataset, root, models, layers, timesteps, "
            "alphas, taus, refines, methods, modes, limit, seed, image_size, label_size, dataset_kwargs, "
            "method_kwargs; see examples/ablation_pocket.yaml). Features are captured once per image, "
            "model and timestep for all layers, cached on disk, and reused by every alpha / tau / method; "
            "rows are appended to a Parquet dataset as each image finishes, so re-running the same command "
            "after an interruption resumes where it stopped."
        ),
        epilog=(
            "examples:\n"
            "  diffcut-lab ablate examples/ablation_pocket.yaml --out results.parquet --cache-dir .features\n"
            "  diffcut-lab ablate grid.yaml --executor processes --workers 4\n"
            "  diffcut-lab ablate grid.yaml --scheduler tcp://scheduler:8786 --cache-dir /shared/features\n"
            "Read the results with pandas.read_parquet(OUT) and diffcut_lab.ablation.summarize."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, help="grid YAML file")
    p.add_argument("--out", type=Path, default=Path("results.parquet"),
                   help="Parquet dataset directory for the rows (default results.parquet); existing rows are kept and skipped")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, help="feature cache directory (shared path on a cluster)")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="where images run: this process, a process pool, or Dask (default local)")  # fmt: skip
    p.add_argument("--workers", type=int, help="process-pool size (default: one per core)")
    p.add_argument(
        "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor dask)"
    )
    p.add_argument("--limit", type=int, help="override the grid's image limit")
    p.add_argument(
        "--top", type=int, default=10, help="print the best N configurations at the end (default 10)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the grid, then print the best configurations by dataset-level mIoU."""
    import dataclasses

    from ..ablation import AblationGrid, run_ablation, summarize
    from ..ablation.grid import tau_text
    from ._options import check_output_path

    check_output_path(args.out, "--out", directory=True)  # before any work: it is written as images finish
    check_output_path(args.cache_dir, "--cache-dir", directory=True)
    grid = AblationGrid.from_yaml(args.config)
    if args.limit is not None:
        grid = dataclasses.replace(grid, limit=args.limit)
    df = run_ablation(
        grid, out=args.out, cache_dir=args.cache_dir, executor=args.executor, workers=args.workers,
        scheduler=args.scheduler, progress=not args.no_progress,
    )  # fmt: skip
    summary = summarize(df)
    n_images = df["image"].nunique() if len(df) else 0
    print(f"{len(df)} rows ({len(summary)} configurations x {n_images} images) in {args.out}")
    if len(summary):
        cols = [
            "model",
            "layer",
            "timestep",
            "method",
            "alpha",
            "tau",
            "mode",
            "refine",
            "miou",
            "n_segments",
        ]
        if summary["params"].nunique() > 1:  # variants or method settings differ: show them
            cols.insert(cols.index("refine") + 1, "params")
        best = summary.sort_values("miou", ascending=False).head(args.top)[cols].copy()
        diffcut = best["method"] == "diffcut"
        best["tau"] = best["tau"].astype(object)
        best.loc[diffcut, "tau"] = best.loc[diffcut, "tau"].map(tau_text)
        best["miou"] = best["miou"].round(3)
        best = best.rename(columns={"miou": "mIoU", "n_segments": "segments"})
        print(f"best {len(best)} by mIoU (pooled over images, 0-1):")
        print(best.to_string(index=False))
    return 0
