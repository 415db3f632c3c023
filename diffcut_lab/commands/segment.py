"""``diffcut-lab segment``: segment image files with DiffCut; write label maps, overlays and the settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._scratch import scratch_dir, terminate_as_interrupt
from ..errors import ImageInputError, ParameterError
from ..progress import Progress
from ._options import (
    add_config_options,
    add_model_option,
    add_threads_option,
    check_output_path,
    config_from_args,
    parse_float,
    parse_int,
)

__all__ = ["IMAGE_SUFFIXES", "collect_images", "register", "run", "save_labels"]

#: file suffixes picked up when a directory is given
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``segment`` command to the CLI."""
    parser = subparsers.add_parser(
        "segment",
        help="segment images with DiffCut and write label maps and overlays",
        description=(
            "Zero-shot segmentation with DiffCut: the self-attention output of one UNet encoder layer, read "
            "after noising the image to a small timestep, is partitioned by a recursive normalized cut "
            "(affinity exponent --alpha, threshold --tau: larger tau, more segments), upsampled to the "
            "image and refined. For every image the command writes NAME_labels.png (segment ids 0..K-1, "
            "8-bit, or 16-bit above 255 segments) and NAME_overlay.png (colours blended over the image), "
            "and once settings.json (every setting, the model, and per image its outputs, segment count "
            "and timings)."
        ),
        epilog=(
            "examples:\n"
            "  diffcut-lab segment photo.jpg --out segments\n"
            "  diffcut-lab segment photos/ --model segmind/SSD-1B --tau 0.5 --alpha 10 --refine pamr\n"
            "  diffcut-lab segment a.png b.png --tau 0.3 --mask-size 128 --policy center_crop --out eval\n"
            "  diffcut-lab segment photo.jpg --paper --out published   # the published pipeline, 128x128"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (any format Pillow reads) or directories of images",
    )
    add_model_option(parser)
    add_threads_option(parser)
    add_config_options(parser)
    parser.add_argument(
        "--overlay-alpha",
        type=parse_float,
        default=0.5,
        metavar="A",
        help="opacity of the colours in the overlay, 0..1 (default 0.5)",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: a CUDA GPU if present, else cpu)"
    )
    parser.add_argument(
        "--batch-size", type=parse_int, default=4, metavar="B", help="images per UNet forward (default 4)"
    )
    parser.add_argument(
        "--out", default="segments", metavar="DIR", help="output directory (default ./segments)"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(run=run)
    return parser


def collect_images(paths: list[str]) -> list[Path]:
    """Expand directories to their image files (sorted); every path must exist.

    Raises
    ------
    ImageInputError
        A path does not exist, or a directory holds no image.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageInputError(
                    f"directory {str(p)!r} holds no image file (looked for {', '.join(IMAGE_SUFFIXES)})."
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ImageInputError(f"image {str(p)!r} does not exist; check the path.")
    return files


def save_labels(labels: np.ndarray, path: Path) -> None:
    """Write ``(H, W)`` label ids as a grey PNG: 8-bit when ids fit, else 16-bit."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.min() < 0 or labels.max() > 65535:
        raise ParameterError(
            f"label ids must lie in 0..65535 to be stored as PNG; got {labels.min()}..{labels.max()}."
        )
    arr = labels.astype(np.uint8) if labels.max() < 256 else labels.astype(np.uint16)
    Image.fromarray(arr).save(path)


def run(args: argparse.Namespace) -> int:
    """Segment ``args.images`` and write the outputs to ``args.out``; returns the exit status."""

    from ..backbones import load_backbone
    from ..images import load_image
    from ..pipeline import DiffCut

    # everything that can be checked without the model is checked first
    config = config_from_args(args)
    if not 0.0 <= args.overlay_alpha <= 1.0:
        raise ParameterError(f"--overlay-alpha must lie in [0, 1]; got {args.overlay_alpha}.")
    if args.batch_size < 1:
        raise ParameterError(f"--batch-size must be >= 1; got {args.batch_size}.")
    files = collect_images(args.images)
    out = Path(args.out)
    check_output_path(out, "--out", directory=True)  # before any work, as eval and ablate do
    for f in files:  # every input is read once before any work: a bad one fails the run before it starts
        load_image(f)

    t0 = time.perf_counter()
    backbone = load_backbone(args.model, device=args.device)
    t_load = time.perf_counter() - t0
    dc = DiffCut(backbone, config)
    layer = (
        dc.check()
    )  # --timestep, --image-size, --layer and what the grid can take, before any image is read

    def say(msg: str) -> None:  # what runs and what came of it (stderr, like the progress lines)
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    say(
        f"segment: {len(files)} image(s) with {args.model!r} (layer {layer}, t={config.timestep}, "
        f"tau {config.tau}, refine {config.refine}) -> {out}/"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # results go to a temporary folder beside --out and move in only when every image is done, so a
    # failed or interrupted run leaves the previous contents of --out as they were
    with terminate_as_interrupt(), scratch_dir(out.parent, out.name) as tmp:  # removed however the run ends
        records = _segment_all(dc, files, tmp, out, args)
        settings = {
            "command": "segment",
            "model": args.model,
            "backbone": {
                "name": backbone.name,
                "family": backbone.family,
                "image_size": backbone.image_size,
                "device": str(backbone.device),
                "dtype": str(backbone.dtype),
            },
            "layer": layer,
            "config": config.to_dict(),
            "overlay_alpha": args.overlay_alpha,
            "model_load_seconds": round(t_load, 3),
            "images": records,
        }
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
        out.mkdir(exist_ok=True)
        for r in records:
            for key in ("labels", "overlay"):
                os.replace(tmp / r[key], out / r[key])
        os.replace(tmp / "settings.json", out / "settings.json")  # last: it describes the files above
    seconds = time.perf_counter() - t0
    mean = sum(r["n_segments"] for r in records) / max(len(records), 1)
    say(
        f"wrote {len(records)} segmentation(s) and settings.json to {out}/ in {seconds:.1f} s "
        f"({mean:.1f} segments per image)"
    )
    return 0


def _segment_all(dc: Any, files: list[Path], tmp: Path, out: Path, args: argparse.Namespace) -> list[dict]:
    """Segment ``files`` in batches, writing label maps and overlays into ``tmp``; one record per image."""
    from PIL import Image

    from ..explain import one_segment_reason
    from ..images import unique_names

    records = []
    stems = unique_names(files, flat=True)
    with Progress(len(files), "segment", quiet=args.quiet) as bar:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start : start + args.batch_size]
            for f, stem, seg in zip(chunk, stems[start : start + len(chunk)], dc.segment(list(chunk))):
                label_path = tmp / f"{stem}_labels.png"
                overlay_path = tmp / f"{stem}_overlay.png"
                save_labels(seg.labels, label_path)
                Image.fromarray(seg.overlay(args.overlay_alpha)).save(overlay_path)
                records.append({
                    "image": str(f),
                    "labels": label_path.name,
                    "overlay": overlay_path.name,
                    "size": list(seg.labels.shape),
                    "grid": list(seg.features.shape[1:]),
                    "n_segments": seg.n_segments,
                    "n_cuts": len(seg.tree.steps),
                    "one_segment_reason": one_segment_reason(seg.tree),
                    "timings": {k: round(v, 4) for k, v in seg.timings.items()},
                })  # fmt: skip
                why = one_segment_reason(seg.tree)
                count = f"1 segment: {why}" if why else f"{seg.n_segments} segments"
                bar.advance(f"{f} -> {out / label_path.name} ({count})")
    return records
