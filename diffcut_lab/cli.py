"""Command line: ``diffcut-lab <command> ...``.

Each command lives in its own module under :mod:`diffcut_lab.commands` and exposes
``register(subparsers)`` (adds its parser, with help that explains every option, and calls
``parser.set_defaults(run=run)``) and ``run(args) -> int``.
Commands are imported only when listed here, so ``diffcut-lab --help`` stays fast. A command whose module
fails to import stays listed, marked unavailable with the import error (in ``--help`` and when it is run);
the other commands work as usual.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

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


def _import_commands() -> tuple[dict[str, ModuleType], dict[str, str]]:
    """``(modules, unavailable)``: each command's module, or why it failed to import (the command's name
    -> ``"ErrorType: message"``)."""
    modules: dict[str, ModuleType] = {}
    unavailable: dict[str, str] = {}
    for name, module in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"diffcut_lab.commands.{module}")
        except Exception as err:  # a missing dependency, or a bug in the module: say so, keep the others
            if os.environ.get("DIFFCUT_LAB_TRACEBACK"):
                raise
            unavailable[name] = f"{type(err).__name__}: {err}"
    return modules, unavailable


def _unavailable_message(command: str, reason: str) -> str:
    return (
        f"the command is unavailable: its module diffcut_lab.commands.{COMMANDS[command]} failed to import "
        f"({reason}); set DIFFCUT_LAB_TRACEBACK=1 for the traceback."
    )


def _register_unavailable(sub: Any, command: str, reason: str) -> None:
    """A parser for a command that failed to import: listed in ``--help`` with the reason; running it (with
    any arguments, see :func:`main`) prints the import error and ends with exit status 2."""
    parser = sub.add_parser(
        command,
        help=f"UNAVAILABLE ({reason})",
        description=f"diffcut-lab {command}: {_unavailable_message(command, reason)}",
    )
    parser.set_defaults(_unavailable=reason)


def build_parser() -> argparse.ArgumentParser:
    modules, unavailable = _import_commands()
    epilog = "Run 'diffcut-lab COMMAND --help' for the options of one command."
    if unavailable:
        epilog += (
            " Unavailable (their modules failed to import): "
            + "; ".join(f"{name} ({reason})" for name, reason in unavailable.items())
            + "."
        )
    parser = argparse.ArgumentParser(
        prog="diffcut-lab",
        description=(
            "Zero-shot segmentation and analysis with the self-attention features of diffusion UNets "
            "(DiffCut). Runs offline on the bundled 'pocket' model; pass --model segmind/SSD-1B (or any "
            "Stable Diffusion 1.x/2.x/XL model id or local diffusers directory) to use real weights."
        ),
        epilog=epilog,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"diffcut-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if name in unavailable:
            _register_unavailable(sub, name, unavailable[name])
        else:
            modules[name].register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # an unavailable command takes any arguments
    if extra and getattr(args, "_unavailable", None) is None:
        args = parser.parse_args(argv)  # argparse's own error for the unknown arguments
    if getattr(args, "_unavailable", None) is not None:
        print(f"diffcut-lab {args.command}: error: {_unavailable_message(args.command, args._unavailable)}",
              file=sys.stderr)  # fmt: skip
        return 2
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
