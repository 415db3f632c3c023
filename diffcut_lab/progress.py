"""Progress on long work, told the same way by every command: a one-line plan at the start, a bar per
image while it runs, a one-line summary at the end.

- :class:`Progress` is the bar: tqdm on a terminal (a widget in Jupyter); one plain line per item where
  the output is a log (CI, a pipe), so a slow run shows where it is without carriage-return noise.
- :func:`track` is for the report notebook: it iterates as usual and, when ``diffcut-lab report`` runs
  the notebook, writes one line per item to the file named by :data:`PROGRESS_ENV`; :func:`watch`
  follows that file from the command and drives its bar. The notebook's outputs stay clean.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from ._escape import one_line

__all__ = ["PROGRESS_ENV", "Progress", "track", "watch"]

#: environment variable naming the file a running report notebook writes its per-image progress to
PROGRESS_ENV = "DIFFCUT_LAB_PROGRESS"

T = TypeVar("T")


class Progress:
    """A progress bar over ``total`` items.

    Parameters
    ----------
    total : int
        Items to do in this run.
    desc : str
        What is being done (the bar's label).
    unit : str
        The item's name (``"image"``).
    initial : int
        Items already done before this run (a resumed study): counted, not redone.
    quiet : bool
        Show nothing.
    stream : file, optional
        Where to write (default: standard error).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "image",
        initial: int = 0,
        quiet: bool = False,
        stream: IO[str] | None = None,
    ) -> None:
        self.total, self.desc, self.unit = int(total) + int(initial), desc, unit
        self.done = int(initial)
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self._bar = None
        if quiet:
            return
        if _in_notebook(self.stream):
            from tqdm.auto import tqdm  # a widget bar in Jupyter

            self._bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit)
        elif _is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, file=self.stream,
                             dynamic_ncols=True)  # fmt: skip

    def advance(self, item: str = "", n: int = 1) -> None:
        """``n`` more items are done; ``item`` says which (or what came of it).

        ``item`` is shown as one line of visible text (a file name's newlines and terminal escape
        sequences are written out, not obeyed: :func:`diffcut_lab._escape.one_line`).
        """
        item = one_line(item)
        self.done += n
        if self._bar is not None:
            self._bar.set_postfix_str(item, refresh=False)
            self._bar.update(n)
        elif not self.quiet:
            width = len(str(self.total))
            print(
                f"{self.desc}: {self.done:>{width}}/{self.total} {item}".rstrip(),
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        """End the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _in_notebook(stream: Any) -> bool:
    return type(stream).__module__.startswith("ipykernel")


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _label(item: Any) -> str:
    return str(item[0] if isinstance(item, tuple) and item else item)


def track(items: Iterable[T], *, total: int | None = None, label: Any = _label) -> Iterator[T]:
    """Iterate over ``items``; under ``diffcut-lab report``, report each finished item to the command.

    Outside a report run this is plain iteration. ``label(item)`` names an item in the progress line
    (default: the item, or its first element for pairs such as ``dict.items()``).
    """
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        yield from items
        return
    items = list(items) if total is None else items
    n = len(items) if total is None else total  # type: ignore[arg-type]
    for i, item in enumerate(items, 1):
        yield item
        name = one_line(label(item))  # one line of visible text, whatever the name holds
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{i}\t{n}\t{name}\n")
        except OSError:  # progress is a courtesy: it never stops the work
            pass


@contextmanager
def watch(path: Path, progress: Progress, *, interval: float = 0.2) -> Iterator[None]:
    """While the block runs, follow the lines :func:`track` appends to ``path`` and advance ``progress``."""
    stop = threading.Event()

    def follow() -> None:
        seen = 0
        while True:
            stopping = stop.wait(interval)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                lines = []
            for line in lines[seen:]:
                parts = line.split("\t", 2)
                if len(parts) == 3:
                    progress.advance(parts[2])
            seen = max(seen, len(lines))
            if stopping:
                return

    thread = threading.Thread(target=follow, name="diffcut-lab-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
