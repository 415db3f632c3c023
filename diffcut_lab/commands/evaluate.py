"""``diffcut-lab eval``: the paper's benchmark protocol on one dataset, printed like its Table 1."""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from ..config import PAPER_MASK_SIZE
from ..options import MATCHES, METHODS, QUIRKS, SCORED_DATASETS
from ._options import (
    add_config_options,
    add_model_option,
    add_threads_option,
    check_output_path,
    config_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``eval`` parser."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate DiffCut on a benchmark with the paper's protocol",
        description=(
            "Evaluate one configuration on a dataset with the paper's protocol: centre crop to "
            "(min(H,W)-1)^2, resize to the model's input size (1024 for SSD-1B), features at the DiffCut "
            "layer and timestep 50, recursive NCut, concept assignment to 128x128, two-stage background "
            "matching for VOC / Context / COCO-Object, refinement, per-image Hungarian matching "
            "accumulated over the dataset (the published matching by default). --paper runs the "
            "published pipeline end to end. Prints a table in the layout of the paper's Table 1 with "
            "images per second. On a GPU the model runs in float16 (load_backbone's default)."
        ),
        epilog=(
            "examples:\n"
            "  diffcut-lab eval --dataset voc --root ~/data/VOCdevkit/VOC2012 --model segmind/SSD-1B --paper\n"
            "  diffcut-lab eval --dataset synthetic --model pocket --limit 16\n"
            "Dataset layouts: see diffcut_lab.datasets.benchmarks (python -m pydoc diffcut_lab.datasets.benchmarks)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=SCORED_DATASETS, help="benchmark or built-in set")
    p.add_argument("--root", help="dataset directory (required for the six benchmarks)")
    add_model_option(p)
    add_threads_option(p)
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--split", default=None, help="dataset split (default: val; synthetic: test)")
    p.add_argument("--quirks", default="fixed", choices=QUIRKS,
                   help="label mapping: 'paper' reproduces the published loader's quirks (see datasets.benchmarks)")  # fmt: skip
    p.add_argument("--method", default="diffcut", choices=METHODS,
                   help="segmenter on the same features (the DiffCut settings apply to diffcut)")  # fmt: skip
    p.add_argument("--match", default=MATCHES[0], choices=MATCHES,
                   help="Hungarian matching: 'reference', the published protocol (default, comparable with "
                   "the paper's tables), or 'present' (present classes only)")  # fmt: skip
    add_config_options(p, exclude=("policy", "refine_max_side"),
                       notes={"mask_size": f"the evaluation scores at {PAPER_MASK_SIZE} when none"})  # fmt: skip
    p.add_argument(
        "--dtype", help="model dtype: float16, bfloat16, float32 (default: fp16 on GPU, fp32 on CPU)"
    )
    p.add_argument("--device", help="torch device (default: cuda if available)")
    p.add_argument("--cache-dir", help="feature cache directory (safetensors), reused across runs")
    p.add_argument("--json", type=Path, help="also write the report (scores, per-class IoU, timing) as JSON")
    p.add_argument("--rows", type=Path, help="also write the per-image rows as Parquet")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def _write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file in its folder, renamed when complete (never half-written)."""
    tmp = path.with_name(f".diffcut-{uuid.uuid4().hex[:12]}.tmp")  # short: any legal name stays legal
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and print the table."""
    from ..ablation.evaluation import evaluate, format_table
    from ..ablation.worker import dtype_from_name
    from ..backbones import load_backbone
    from ..datasets import ON_DISK, load_dataset

    config = config_from_args(args)  # invalid settings fail here, before any data or model is read
    if args.limit is not None and args.limit < 1:
        from ..errors import ParameterError

        raise ParameterError(f"--limit must be >= 1 (the number of images to evaluate), got {args.limit}")
    check_output_path(args.json, "--json")  # and outputs that could not be written after the work
    check_output_path(args.rows, "--rows")
    check_output_path(None if args.cache_dir is None else Path(args.cache_dir), "--cache-dir", directory=True)
    kwargs = {}
    if args.split:
        kwargs["split"] = args.split
    if args.dataset in ON_DISK:
        kwargs["quirks"] = args.quirks
    ds = load_dataset(args.dataset, args.root, limit=args.limit, **kwargs)
    backbone = load_backbone(args.model, dtype=dtype_from_name(args.dtype), device=args.device)
    report = evaluate(ds, backbone, config, method=args.method, match=args.match, cache_dir=args.cache_dir,
                      progress=not args.no_progress)  # fmt: skip
    print(format_table([report]))
    r = report.result
    print(
        f"\n{report.dataset}: mIoU {r.miou:.3f}  pixel accuracy {r.accuracy:.3f}  "
        f"{report.n_images} images in {report.seconds:.1f} s ({report.images_per_second:.2f} images/s)  "
        f"model {report.model} ({report.dtype} on {report.device}), input {report.config['image_size']}px, "
        f"labels {report.config['label_size']}px"
    )
    if report.notes:
        print(f"note: {report.notes}")
    if args.json:
        text = json.dumps(report.to_dict(), indent=2)
        _write_whole(args.json, lambda p: p.write_text(text))
    if args.rows:
        _write_whole(args.rows, lambda p: report.rows.to_parquet(p))
    return 0
