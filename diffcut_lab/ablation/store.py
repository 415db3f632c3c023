"""Results on disk: a Parquet dataset of part files, one per finished work unit.

``out`` (e.g. ``results.parquet``) is a directory that ``pandas.read_parquet(out)`` reads as one table.
What it guarantees:

* **atomic parts**: each part is written under a hidden temporary name, flushed to disk (fsync) and then
  renamed (readers skip names that start with ``.``), so a killed run, or a crash of the machine, leaves
  only whole parts;
* **resumable**: a re-run skips every (model, image, configuration) already present;
* **one writer**: a run holds a lock on ``out`` (``.lock``); a second run on the same ``out`` stops at once
  with a clear error instead of writing duplicate rows; the run that holds it first removes the hidden
  half-written parts of a writer that was killed;
* **no duplicates read back**: rows are read once per (model, image, configuration), whatever is on disk;
* **corrupt parts quarantined**: a part that cannot be read (a disk error, a copy cut short) is moved to
  ``out/quarantine/`` with a warning, and its rows are computed again by the next run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ParameterError

__all__ = ["ROW_KEY", "SCHEMA", "SORT_COLUMNS", "VOLATILE_COLUMNS", "ResultStore", "sort_rows", "to_schema"]

#: what identifies a row: one result per (model, image, configuration)
ROW_KEY = ["model", "image", "config_id"]

_counts = pa.list_(pa.int64())

#: the columns of a result row, with their types (fixed, so that every part file has one schema)
SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("image", pa.string()),
        ("image_index", pa.int64()),
        ("model", pa.string()),
        ("layer", pa.string()),
        ("timestep", pa.int64()),
        ("method", pa.string()),
        ("alpha", pa.float64()),
        ("tau", pa.float64()),
        ("mode", pa.string()),
        ("refine", pa.string()),
        ("params", pa.string()),
        ("seed", pa.int64()),
        ("image_size", pa.int64()),
        ("label_size", pa.int64()),
        ("prompt", pa.string()),
        ("preset", pa.string()),
        ("settings", pa.string()),
        ("match", pa.string()),
        ("data", pa.string()),
        ("config_id", pa.string()),
        ("layer_name", pa.string()),
        ("input_size", pa.int64()),
        ("grid_h", pa.int64()),
        ("grid_w", pa.int64()),
        ("n_segments", pa.int64()),
        ("num_classes", pa.int64()),
        ("background", pa.bool_()),
        ("tp", _counts),
        ("fp", _counts),
        ("fn", _counts),
        ("n_pixels", pa.int64()),
        ("miou_image", pa.float64()),
        ("accuracy", pa.float64()),
        ("model_fingerprint", pa.string()),
        ("seconds", pa.float64()),
        ("features_cached", pa.bool_()),
    ]
)

#: columns that depend on timing or on what was cached, not on the configuration (never compared)
VOLATILE_COLUMNS = ("seconds", "features_cached")

#: a stable row order for tables read back
SORT_COLUMNS = [
    "model",
    "image_index",
    "layer",
    "timestep",
    "method",
    "alpha",
    "mode",
    "tau",
    "refine",
    "params",
]


class ResultStore:
    """A directory of Parquet part files holding result rows.

    Parameters
    ----------
    out : path
        The dataset directory (created on first write). An existing regular file there is an error.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ParameterError(
                f"{self.out} is a file; results are a directory of Parquet parts. Pass a new path "
                "(e.g. results.parquet) or remove the file."
            )

    def parts(self) -> list[Path]:
        """The finished, readable part files (unreadable ones are quarantined, with a warning)."""
        if not self.out.is_dir():
            return []
        good = []
        for p in sorted(self.out.glob("part-*.parquet")):
            try:
                pq.read_metadata(p)
            except (OSError, pa.ArrowException) as err:
                self._quarantine(p, err)
            else:
                good.append(p)
        return good

    def _quarantine(self, part: Path, err: Exception) -> None:
        target = self.out / "quarantine"
        target.mkdir(exist_ok=True)
        os.replace(part, target / part.name)
        warnings.warn(
            f"{part} cannot be read ({type(err).__name__}: {err}); moved to {target}/. Its rows are "
            "computed again on the next run.",
            RuntimeWarning,
            stacklevel=3,
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the one-writer lock of ``out`` (``out/.lock``) for the body; raise if another run holds it."""
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            yield
            return
        fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ParameterError(
                    f"another ablation run is writing to {self.out}; wait for it to finish, or pass another "
                    "--out (two runs on one directory would write the same rows twice)"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            for stale in self.out.glob(".part-*.parquet.tmp"):  # left by a writer killed mid-write
                stale.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def done(self) -> set[tuple[str, str, str]]:
        """``(model, image, config_id)`` of every row already stored."""
        parts = self.parts()
        if not parts:
            return set()
        cols = _dataset(parts).to_table(columns=ROW_KEY).to_pydict()
        return set(zip(*(cols[k] for k in ROW_KEY)))

    def write(self, rows: pd.DataFrame) -> Path | None:
        """Append ``rows`` as one new part (atomic and durable); returns its path (None for no rows)."""
        if rows is None or len(rows) == 0:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False)
        final = self.out / f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.out / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(self.out)
        return final

    def read(self) -> pd.DataFrame:
        """Every stored row once, in a stable order (empty frame with the schema's columns if none)."""
        parts = self.parts()
        if not parts:
            return SCHEMA.empty_table().to_pandas()
        df = _dataset(parts).to_table().to_pandas()
        return sort_rows(df.drop_duplicates(ROW_KEY, keep="first"))


def _fsync(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - directories cannot be opened on some systems
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dataset(parts: list[Path]):
    import pyarrow.dataset as pads

    return pads.dataset([str(p) for p in parts], schema=SCHEMA, format="parquet")


def to_schema(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with exactly the columns and types they have when read back from Parquet."""
    if rows.empty:
        return SCHEMA.empty_table().to_pandas()
    return pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False).to_pandas()


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the stable order of :data:`SORT_COLUMNS` (index reset)."""
    cols = [c for c in SORT_COLUMNS if c in df.columns]
    return df.sort_values(cols, kind="mergesort", na_position="first").reset_index(drop=True)
