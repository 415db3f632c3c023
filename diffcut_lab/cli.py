"""Command line: ``diffcut-lab <command> ...``.

Each command lives in its own module under :mod:`diffcut_lab.commands` and exposes
``register(subparsers)`` (adds its parser, with help that explains every option, and calls
``parser.set_defaults(run=run)``) and ``run(args) -> int``.
Commands are imported only when listed here, so ``diffcut-lab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import DiffCutLabError

#: command name -> module in diffcut_lab.commands
COMMANDS: dict[str, str] = {
    "segment": "segment",
    "layers": "layers",
    "report": "report",
    "eval": "evaluate",
    "ablate": "ablate",
    "notebooks": "notebooks",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffcut-lab",
        description=(
            "Zero-shot segmentation and analysis with the self-attention features of diffusion UNets "
            "(DiffCut). Runs offline on the bundled 'pocket' model; pass --model segmind/SSD-1B (or any "
            "Stable Diffusion 1.x/2.x/XL model id or local diffusers directory) to use real weights."
        ),
        epilog="Run 'diffcut-lab COMMAND --help' for the options of one command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"diffcut-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        try:
            mod = importlib.import_module(f"diffcut_lab.commands.{module}")
        except ModuleNotFoundError as err:  # a command still under construction
            if err.name != f"diffcut_lab.commands.{module}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .commands._options import apply_threads

        apply_threads(args)
        return int(args.run(args) or 0)
    except DiffCutLabError as err:
        print(f"diffcut-lab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`diffcut-lab layers | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a full disk, a missing permission, a file in the way: one line, not a traceback
        if os.environ.get("DIFFCUT_LAB_TRACEBACK"):
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"diffcut-lab {args.command}: error: {err.strerror or err}{where} (set DIFFCUT_LAB_TRACEBACK=1 "
              "for the traceback)", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print(f"diffcut-lab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
