"""``diffcut-lab notebooks``: copy the notebooks out of the package into a folder of your own.

JupyterLab saves outputs into the notebooks it opens; working on copies keeps the package's (and the
repository's) notebooks clean. The notebooks ship as package data, so an installed package has them.

The model is written into each parameters cell as a Python literal (``repr``), never through a
template: whatever the string holds (quotes, backslashes, newlines, ``#``), the cell assigns exactly that
string and runs nothing else. The copies are made in a scratch folder and moved in all or nothing.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from .._escape import one_line
from .._scratch import install, scratch_dir, terminate_as_interrupt
from ..errors import DiffCutLabError, ParameterError
from ._options import add_model_option

__all__ = ["copy_notebooks", "model_line", "notebook_paths", "register", "run"]

_MODEL_LINE = re.compile(r"^model = .*$", re.MULTILINE)


def notebook_paths() -> list[Path]:
    """The notebooks shipped in the package, in order."""
    folder = Path(str(files("diffcut_lab").joinpath("notebooks")))
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise DiffCutLabError(f"no notebooks in {folder}; reinstall diffcut-lab (they ship as package data).")
    return found


def model_line(model: str) -> str:
    """The parameters cell's line that sets ``model``: a Python literal that evaluates to exactly it.

    Parameters
    ----------
    model : str
        Any string: quotes, backslashes, newlines and ``#`` included.

    Returns
    -------
    str
        ``model = <literal>`` on one line (``repr``, in double quotes when the name has no quote); it is
        parsed back with :mod:`ast` and checked to assign exactly ``model`` and nothing else.

    Raises
    ------
    ParameterError
        ``model`` is not a string.

    Examples
    --------
    >>> print(model_line("segmind/SSD-1B"))
    model = "segmind/SSD-1B"
    >>> print(model_line('my "model" # 1'))
    model = 'my "model" # 1'
    """
    if not isinstance(model, str):
        raise ParameterError(f"model must be a string; got {type(model).__name__}.")
    literal = repr(model)  # repr escapes quotes, backslashes and newlines: one line, one literal
    if literal.startswith("'") and '"' not in model:  # no quote inside: the notebooks' own double quotes
        literal = f'"{literal[1:-1]}"'
    line = f"model = {literal}"
    tree = ast.parse(line)
    value = tree.body[0].value if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign) else None
    if value is None or ast.literal_eval(value) != model or "\n" in line:  # pragma: no cover - repr's promise
        raise DiffCutLabError(f"cannot write the model name {one_line(repr(model))} as a Python literal.")
    return line


def _set_model(nb: dict[str, Any], model: str) -> bool:
    """Point the ``model = ...`` line of the parameters cell at ``model``; False if there is none."""
    line = model_line(model)
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            lines = "".join(cell["source"]).splitlines(keepends=True)
            for i, old in enumerate(lines):
                if _MODEL_LINE.match(old):  # the line is replaced whole; the new text is never a pattern
                    lines[i] = line + ("\n" if old.endswith("\n") else "")
                    cell["source"] = lines
                    return True
    return False


def copy_notebooks(directory: str | Path, *, model: str = "pocket", force: bool = False) -> list[Path]:
    """Copy every notebook into ``directory`` with its ``model`` parameter set; return the new paths.

    All or nothing: the copies are written to a scratch folder first; a folder that did not exist
    appears whole, and in an existing folder the notebooks are replaced together (on a failure, or
    Ctrl-C, or SIGTERM, the previous ones are put back and no scratch file is left).

    Raises
    ------
    ParameterError
        ``directory`` is a file, or a notebook is there already and ``force`` is false, or a folder is
        where a notebook would go (nothing is written then).
    """
    out = Path(directory).expanduser()
    if out.exists() and not out.is_dir():
        raise ParameterError(f"{one_line(out)} is a file; pass a folder (it is created if missing).")
    model_line(model)  # a model that is no string fails before anything is written
    sources = notebook_paths()
    targets = [out / src.name for src in sources]
    folders = [t.name for t in targets if t.is_dir()]
    if folders:
        raise ParameterError(f"{one_line(out)} holds folders named {', '.join(folders)}; move them away "
                             "or pass another DIR.")  # fmt: skip
    there = [t.name for t in targets if t.exists() or t.is_symlink()]
    if there and not force:
        raise ParameterError(f"{one_line(out)} already holds {', '.join(there)}; pass --force to overwrite "
                             "them.")  # fmt: skip
    new_folder = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with terminate_as_interrupt(), scratch_dir(out.parent if new_folder else out, out.name) as tmp:
        staged = tmp / out.name
        staged.mkdir()
        for src in sources:
            nb = json.loads(src.read_text(encoding="utf-8"))
            _set_model(nb, model)
            (staged / src.name).write_text(
                json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        if new_folder:
            os.replace(staged, out)  # one rename: the folder appears with every notebook in it
        else:
            install([(staged / t.name, t) for t in targets], tmp)
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
    parser.add_argument(
        "directory", metavar="DIR", help="folder to copy the notebooks into (created if missing)"
    )
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
