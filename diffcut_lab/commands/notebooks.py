"""``diffcut-lab notebooks``: copy the notebooks out of the package into a folder of your own.

JupyterLab saves outputs into the notebooks it opens; working on copies keeps the package's (and the
repository's) notebooks clean. The notebooks ship as package data, so an installed package has them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import DiffCutLabError, ParameterError
from ._options import add_model_option

__all__ = ["copy_notebooks", "notebook_paths", "register", "run"]

_MODEL_LINE = re.compile(r"^model = .*$", re.MULTILINE)


def notebook_paths() -> list[Path]:
    """The notebooks shipped in the package, in order."""
    folder = Path(str(files("diffcut_lab").joinpath("notebooks")))
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise DiffCutLabError(f"no notebooks in {folder}; reinstall diffcut-lab (they ship as package data).")
    return found


def _set_model(nb: dict[str, Any], model: str) -> bool:
    """Point the ``model = ...`` line of the parameters cell at ``model``; False if there is none."""
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            new, n = _MODEL_LINE.subn(f"model = {json.dumps(model)}", src, count=1)
            if n:
                cell["source"] = new.splitlines(keepends=True)
                return True
    return False


def copy_notebooks(directory: str | Path, *, model: str = "pocket", force: bool = False) -> list[Path]:
    """Copy every notebook into ``directory`` with its ``model`` parameter set; return the new paths.

    Raises
    ------
    ParameterError
        ``directory`` is a file, or a notebook is there already and ``force`` is false (nothing is
        written then).
    """
    out = Path(directory).expanduser()
    if out.exists() and not out.is_dir():
        raise ParameterError(f"{out} is a file; pass a folder (it is created if missing).")
    sources = notebook_paths()
    targets = [out / src.name for src in sources]
    there = [t.name for t in targets if t.exists()]
    if there and not force:
        raise ParameterError(f"{out} already holds {', '.join(there)}; pass --force to overwrite them.")
    out.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(sources, targets):
        nb = json.loads(src.read_text(encoding="utf-8"))
        _set_model(nb, model)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, dst)
    return targets


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``notebooks`` command to the CLI."""
    parser = subparsers.add_parser(
        "notebooks",
        help="copy the notebooks into a folder of your own (with the model set) to work on them",
        description=(
            "Copy the six notebooks (quickstart, compare layers, affinity eigenvectors, step through the "
            "recursive cut, report, ablation) into DIR, with their 'model' parameter set to --model. "
            "JupyterLab saves outputs into the notebooks it opens: work on copies, not on the package's."
        ),
        epilog=(
            "examples:\n"
            "  diffcut-lab notebooks my-notebooks && jupyter lab my-notebooks\n"
            "  diffcut-lab notebooks ssd --model segmind/SSD-1B"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", help="folder to copy the notebooks into (created if missing)")
    add_model_option(parser)
    parser.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry point of ``diffcut-lab notebooks``."""
    paths = copy_notebooks(args.directory, model=args.model, force=args.force)
    root = " --allow-root" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    print(f"copied {len(paths)} notebooks to {Path(args.directory)}/ (model {args.model!r}); open them with: "
          f"jupyter lab {args.directory}{root}", file=sys.stderr)  # fmt: skip
    return 0
