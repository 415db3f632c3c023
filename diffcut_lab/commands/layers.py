"""``diffcut-lab layers``: print the hook points of a model (names, kinds, channels, resolutions)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..options import KINDS

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``layers`` command to the CLI."""
    parser = subparsers.add_parser(
        "layers",
        help="list the hook points (capturable layers) of a model",
        description=(
            "List every capturable activation of a diffusion UNet with its hook name (the diffusers module "
            "path, usable as layers=... in capture and DiffCut), kind, stage, channels and feature-map "
            "resolution at the given input size. Only the model's config files are read: no weights are "
            "loaded or downloaded. The row marked diffcut is the layer the 'diffcut' alias resolves to."
        ),
        epilog=(
            "examples:\n"
            "  diffcut-lab layers --model pocket --kind attn1\n"
            "  diffcut-lab layers --model segmind/SSD-1B --image-size 1024 --format csv > layers.csv"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="pocket",
        help="'pocket' (bundled, default), a Hugging Face Hub id (e.g. segmind/SSD-1B) or a local diffusers "
        "directory",
    )
    parser.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        help="show only this kind of hook point (repeat for several); default: all kinds",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="input side in pixels for the resolutions (default: the model's native size)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv"),
        default="table",
        help="output format: an aligned table (default) or CSV",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the hook-point table of ``args.model``; returns the exit status."""
    from ..backbones import load_backbone
    from ..hook_points import hook_points_frame

    backbone = load_backbone(args.model, weights=False, device="cpu")
    if args.image_size is not None:
        backbone.check_image_size(args.image_size)
    frame = hook_points_frame(backbone, kind=args.kind, image_size=args.image_size)
    frame = frame.drop(columns=["order"])
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
        return 0
    size = args.image_size or backbone.image_size
    print(
        f"# {backbone.name}: family {backbone.family}, input {size}x{size} px, latent scale "
        f"{backbone.latent_scale}, {len(frame)} hook point(s)"
    )
    frame["diffcut"] = frame["diffcut"].map({True: "<- diffcut", False: ""})
    print(frame.to_string(index=False))
    return 0
