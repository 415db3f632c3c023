"""Scratch folders beside a command's outputs, and installing outputs all or nothing.

A command that writes several files builds them in a hidden scratch folder beside the target
(``.NAME.diffcut-PID-XXXX.tmp``, same file system, so the final moves are renames) and moves them into
place only when everything worked (:func:`install`). The scratch folder goes away when the block ends,
however it ends: an error, Ctrl-C, or SIGTERM (turned into :class:`KeyboardInterrupt` by
:func:`terminate_as_interrupt` so that ``finally`` blocks run). A run killed outright (SIGKILL, power
loss) cannot clean up: the next run in the same folder removes scratch folders whose process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = ["install", "remove_stale_scratch", "scratch_dir", "terminate_as_interrupt"]

_NAME = re.compile(r"^\..+\.diffcut-(\d+)-[0-9a-f]{8}\.tmp$")
_OWNER = ".owner"  # inside a scratch folder: "pid host", so only this machine's dead runs are removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_scratch(parent: Path) -> list[Path]:
    """Remove the scratch folders in ``parent`` left by runs on this machine whose process is gone.

    Returns the removed folders. Folders of live runs, of other machines (a shared file system) and
    anything not named and marked as a scratch folder are left alone.
    """
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        m = _NAME.match(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            pid_text, _, owner_host = (entry / _OWNER).read_text(encoding="utf-8").strip().partition(" ")
        except OSError:
            continue
        if (
            pid_text != m.group(1)
            or owner_host != host
            or int(pid_text) == os.getpid()
            or _alive(int(pid_text))
        ):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed


@contextmanager
def scratch_dir(parent: str | os.PathLike, name: str) -> Iterator[Path]:
    """A new hidden folder in ``parent`` for the block, removed when the block ends (whatever the cause).

    Scratch folders of dead runs in ``parent`` are removed first (:func:`remove_stale_scratch`).
    """
    parent = Path(parent)
    remove_stale_scratch(parent)
    path = parent / f".{name}.diffcut-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    path.mkdir()
    try:
        (path / _OWNER).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (and SIGHUP) raise :class:`KeyboardInterrupt`, as Ctrl-C does.

    So a ``kill`` runs the ``finally`` blocks (scratch folders removed, the previous results put back)
    instead of ending the process on the spot. Outside the main thread, or where the platform has no
    such signals, the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def install(moves: list[tuple[Path | None, Path]], backup_dir: Path) -> None:
    """Move each ``src`` onto ``dst`` (``src`` ``None``: remove ``dst``), all or nothing.

    What was at each ``dst`` waits in ``backup_dir`` (on the same file system) until every move
    succeeded, and is put back if one fails or the run is interrupted.
    """
    replaced: list[tuple[Path, Path | None]] = []
    try:
        for i, (src, dst) in enumerate(moves):
            backup = None
            if dst.exists() or dst.is_symlink():
                backup = backup_dir / f".previous-{i}"
                os.replace(dst, backup)
            replaced.append((dst, backup))
            if src is not None:
                os.replace(src, dst)
    except BaseException:
        for dst, backup in reversed(replaced):
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            elif dst.exists() or dst.is_symlink():
                dst.unlink()
            if backup is not None:
                os.replace(backup, dst)
        raise
