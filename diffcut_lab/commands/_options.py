"""Command-line options made from :class:`~diffcut_lab.config.DiffCutConfig`'s fields (no torch import).

Each setting has one default, one help text and one validation, all in the config: the commands only
choose which fields they offer. An option that is not given keeps the base config's value, so ``--paper``
(the published pipeline) combines with any other option (``--paper --tau 0.2``). A value means what it
means in Python and YAML: ``none`` is None (``--max-depth none``: no limit) and 0 is the number 0
(``--max-depth 0``: no cut at all; ``--knn 0`` is refused).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import NONE, NONE_MEANS, DiffCutConfig

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_HELP",
    "add_config_options",
    "add_model_option",
    "add_threads_option",
    "apply_threads",
    "check_output_path",
    "config_from_args",
    "option",
    "parse_float",
    "parse_int",
]

DEFAULT_MODEL = "pocket"
MODEL_HELP = (
    "'pocket' (bundled, offline; default), a Hugging Face Hub id such as segmind/SSD-1B (the paper's "
    "model), or a local diffusers directory"
)
_DEFAULTS = DiffCutConfig()


def option(name: str) -> str:
    """The command-line flag of a setting: ``pamr_iter`` -> ``--pamr-iter``."""
    return "--" + name.replace("_", "-")


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model``, with the one default every command shares."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: the threads of the large work (UNet, affinity); :func:`apply_threads` uses it."""
    parser.add_argument(
        "--threads", type=parse_int, default=None, metavar="N",
        help="threads for the UNet and the large products (default: every core); the many small steps "
             "(cut, concept assignment, PAMR) run on one thread either way, which keeps them fast on a busy "
             "machine. --threads 1 leaves the other cores to other work",
    )  # fmt: skip


def apply_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` to this process and, through the environment, to the processes it starts."""
    n = getattr(args, "threads", None)
    if n is not None:
        from ..threads import ENV_THREADS, check_threads, set_threads

        os.environ[ENV_THREADS] = str(check_threads(n))
        set_threads(n)


def _optional_int(text: str) -> int | str:
    """An int, or ``"none"`` (the config reads it as None); 0 stays 0."""
    return NONE if text.strip().lower() == NONE else parse_int(text)


def parse_int(text: str) -> int:
    """An int, for ``type=``: a typo is argparse's one-line message, not ``invalid int value``."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}.") from None


def parse_float(text: str) -> float:
    """A number, for ``type=`` (as :func:`parse_int`)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}.") from None


def _tau(text: str) -> float | str:
    """A number, else the text as given: the config reads 'auto' from it, and its one rule words a refusal
    (``--tau banana``: "tau must satisfy 0 < tau <= 2 (...), or 'auto'; got 'banana'")."""
    try:
        return float(text)
    except ValueError:
        return text.strip()


def add_config_options(
    parser: argparse.ArgumentParser,
    *,
    exclude: Iterable[str] = (),
    notes: dict[str, str] | None = None,
    paper: bool = True,
) -> None:
    """Add one option per :class:`DiffCutConfig` field (all but ``exclude``), in a group of their own.

    ``notes`` adds command-specific words to a field's help. ``paper`` adds ``--paper``.
    """
    group = parser.add_argument_group(
        "DiffCut settings",
        "every option defaults to DiffCutConfig's value (or, with --paper, the published one)",
    )
    if paper:
        group.add_argument(
            "--paper", action="store_true",
            help="start from the published evaluation pipeline (DiffCutConfig.paper(): centre crop "
            "min(H,W)-1, resize without antialias, paper-mode NCut, 128x128 labels, PAMR guided by the "
            "model input, noise on the model's device); other options change it",
        )  # fmt: skip
    skip = set(exclude)
    notes = notes or {}
    shown = _DEFAULTS.describe()
    for f in dataclasses.fields(DiffCutConfig):
        if f.name in skip:
            continue
        default = getattr(_DEFAULTS, f.name)
        text = f.metadata["help"] + (f"; {notes[f.name]}" if f.name in notes else "")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if "choices" in f.metadata:
            kw.update(choices=f.metadata["choices"])
        elif isinstance(default, bool):
            kw.update(action=argparse.BooleanOptionalAction)
        elif isinstance(default, tuple):
            kw.update(type=parse_int, nargs="+")
        elif f.name == "tau":
            kw.update(type=_tau)
        elif f.name in NONE_MEANS:
            kw.update(type=_optional_int)
            text += f" ('{NONE}': {NONE_MEANS[f.name]})"
        elif isinstance(default, float):
            kw.update(type=parse_float)
        elif isinstance(default, int):
            kw.update(type=parse_int)
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        kw["help"] = f"{text} (default: {shown[f.name]})"
        group.add_argument(option(f.name), **kw)


def config_from_args(args: argparse.Namespace, **fixed: Any) -> DiffCutConfig:
    """The :class:`DiffCutConfig` the options describe: the base (``--paper`` or the defaults), the
    options given, then ``fixed`` (what the command itself sets). Invalid values raise ParameterError."""
    base = DiffCutConfig.paper() if getattr(args, "paper", False) else DiffCutConfig()
    given = {name: getattr(args, name) for name in DiffCutConfig.field_names() if hasattr(args, name)}
    for name in ("pamr_dilations",):
        if name in given:
            given[name] = tuple(given[name])
    return base.replace(**given, **fixed)


def check_output_path(path: Path | None, option: str, *, directory: bool = False) -> None:
    """Refuse, before any work, an output path that could not be written when the work is done.

    Parameters
    ----------
    path : Path or None
        The path an option names (None: the option was not given).
    option : str
        The option, for the message (``"--json"``).
    directory : bool
        The output is a directory (created if missing) rather than a file.

    Raises
    ------
    ParameterError
        ``path`` is a directory where a file is written (or a file where a directory is), its name is
        longer than the file system allows, or its folder does not exist or cannot be written.
    """
    from ..errors import ParameterError

    if path is None:
        return
    path = Path(path)
    limit = 255  # the common limit; the file system's own when it says (checked first: a longer name
    # cannot even be looked up)
    anchor = path.parent  # the nearest folder (or file in the way) that exists
    while not _exists(anchor) and anchor != anchor.parent:
        anchor = anchor.parent
    with contextlib.suppress(OSError, ValueError, AttributeError):
        limit = os.pathconf(anchor, "PC_NAME_MAX")
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise ParameterError(
                f"{option}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes long; this file system "
                f"allows {limit}. Give a shorter name."
            )
    if not directory and path.is_dir():
        raise ParameterError(
            f"{option} {path} is a directory; give a file name (e.g. {path / 'report.json'})"
        )
    if directory and path.exists() and not path.is_dir():
        raise ParameterError(
            f"{option} {path} is a file; give a directory (a new path, or an existing folder)"
        )
    if not directory and not path.parent.is_dir():
        raise ParameterError(f"{option} {path}: the folder {path.parent} does not exist; create it first")
    if directory and not anchor.is_dir():
        raise ParameterError(f"{option} {path}: {anchor} is a file, so the folder cannot be made there")
    target = path if path.exists() else anchor
    if not os.access(target, os.W_OK):
        raise ParameterError(f"{option} {path}: {target} cannot be written (permission denied)")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up
        return False
