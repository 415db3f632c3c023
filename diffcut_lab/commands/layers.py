"""``diffcut-lab layers``: print the hook points of a model (names, kinds, channels, resolutions)."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from ..options import KINDS
from ._options import add_model_option

__all__ = ["format_table", "register", "run"]


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
    add_model_option(parser)
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
    """Print the hook-point table of ``args.model``; returns the exit status.

    The model is read from its config files (:func:`~diffcut_lab.backbones.model_outline`): for the pocket
    model and the Stable Diffusion family neither diffusers nor pandas is imported, so the table comes
    in about the time torch takes to import.
    """
    from ..backbones import model_outline
    from ..hook_points import FRAME_COLUMNS, hook_point_rows

    outline = model_outline(args.model)
    if args.image_size is not None:
        outline.check_image_size(args.image_size)
    rows = hook_point_rows(outline, kind=args.kind, image_size=args.image_size)
    columns = [c for c in FRAME_COLUMNS if c != "order"]
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([r[c] for c in columns] for r in rows)
        return 0
    size = args.image_size or outline.image_size
    print(
        f"# {outline.name}: family {outline.family}, input {size}x{size} px, latent scale "
        f"{outline.latent_scale}, {len(rows)} hook point(s)"
    )
    for r in rows:
        r["diffcut"] = "<- diffcut" if r["diffcut"] else ""
    print(format_table(rows, columns))
    return 0


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as an aligned text table, as pandas' ``DataFrame.to_string(index=False)`` prints them.

    Every column is right-aligned and one space apart; the header of a numeric column gets one more
    leading space. Written here so that the command needs no pandas.

    Parameters
    ----------
    rows : list of dict
        One dict per row, with at least the keys in ``columns``.
    columns : list of str
        Column names, in order.

    Returns
    -------
    str
        The header line and one line per row, without a trailing newline.
    """
    numeric = {c for c in columns if rows and all(isinstance(r[c], (int, float)) for r in rows)}
    headers = [f" {c}" if c in numeric else c for c in columns]
    cells = [[str(r[c]) for c in columns] for r in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = [" ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += [" ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
