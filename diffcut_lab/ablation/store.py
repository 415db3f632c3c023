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
* **every part read whole before it is trusted**: parts are written with page checksums, and each one
  is read completely (every page, checksums verified) and checked against :data:`SCHEMA` before its rows
  count; a part that fails (a disk error, a copy cut short, a corrupt page behind an intact footer, a
  foreign file) is moved to ``out/_quarantine/`` as ``<name>.bad`` with a warning that names it, and its
  rows are computed again. Quarantined files are outside what Parquet readers glob (a ``_`` folder, no
  ``.parquet`` suffix), so ``pandas.read_parquet(out)`` keeps working.
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
from ..selection import ROW_KEY  # what identifies a row: one result per (model, image, configuration)

__all__ = [
    "QUARANTINE",
    "ROW_KEY",
    "SCHEMA",
    "SORT_COLUMNS",
    "VOLATILE_COLUMNS",
    "ResultStore",
    "sort_rows",
    "to_schema",
]

#: where unreadable parts go, inside ``out``: Parquet readers (pyarrow, pandas, Dask, Spark) skip folders
#: whose name starts with ``_``, and the files there lose their ``.parquet`` suffix
QUARANTINE = "_quarantine"

#: the folder older versions quarantined into (inside what readers glob); moved on the next locked run
_OLD_QUARANTINE = "quarantine"

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
        self._checked: dict[Path, tuple[tuple[int, int], pa.Table]] = {}
        if self.out.exists() and not self.out.is_dir():
            raise ParameterError(
                f"{self.out} is a file; results are a directory of Parquet parts. Pass a new path "
                "(e.g. results.parquet) or remove the file."
            )

    def parts(self) -> list[Path]:
        """The finished part files, each read whole and checked (failing ones are quarantined, with a warning).

        Returns
        -------
        list of Path
            Parts whose every page reads (checksums verified) and whose columns are :data:`SCHEMA`'s.
        """
        return [p for p, _ in self._tables()]

    def _tables(self) -> list[tuple[Path, pa.Table]]:
        """``(part, rows as SCHEMA)`` of every trusted part; a part is read once per change on disk."""
        if not self.out.is_dir():
            return []
        good = []
        seen: dict[Path, tuple[tuple[int, int], pa.Table]] = {}
        for p in sorted(self.out.glob("part-*.parquet")):
            try:
                st = p.stat()
            except FileNotFoundError:  # removed since the listing
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            cached = self._checked.get(p)
            if cached is not None and cached[0] == stamp:
                table = cached[1]
            else:
                try:
                    table = _read_part(p)
                except _BadPart as err:
                    self._quarantine(p, err.why)
                    continue
            seen[p] = (stamp, table)
            good.append((p, table))
        self._checked = seen
        return good

    def _quarantine(self, part: Path, why: str) -> None:
        target = self.out / QUARANTINE
        dest = _free(target / f"{part.name}.bad")
        try:
            target.mkdir(exist_ok=True)
            os.replace(part, dest)
        except OSError as err:
            raise ParameterError(
                f"{part} {why}, and it cannot be moved to {target}/ ({err.strerror or err}); move or delete "
                "it, and run again to compute its rows"
            ) from None
        warnings.warn(
            f"{part} {why}; moved to {dest}. Its rows are missing until an ablation run on {self.out} "
            "computes them again (the run that is starting, if one is).",
            RuntimeWarning,
            stacklevel=4,
        )

    def _move_old_quarantine(self) -> None:
        """Move what older versions quarantined into ``out/quarantine/`` out of the readers' way."""
        old = self.out / _OLD_QUARANTINE
        if not old.is_dir():
            return
        target = self.out / QUARANTINE
        target.mkdir(exist_ok=True)
        for f in sorted(old.iterdir()):
            if f.is_file():
                name = f.name if f.suffix == ".bad" else f"{f.name}.bad"
                os.replace(f, _free(target / name))
        with contextlib.suppress(OSError):
            old.rmdir()

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
            self._move_old_quarantine()
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def done(self) -> set[tuple[str, str, str]]:
        """``(model, image, config_id)`` of every row already stored (in parts read whole and checked)."""
        done: set[tuple[str, str, str]] = set()
        for _, table in self._tables():
            cols = table.select(ROW_KEY).to_pydict()
            done.update(zip(*(cols[k] for k in ROW_KEY)))
        return done

    def data_keys(self) -> set[str]:
        """The ``data`` column's distinct values: the data every stored row was computed on."""
        keys: set[str] = set()
        for _, table in self._tables():
            keys.update(v for v in table.column("data").unique().to_pylist() if v is not None)
        return keys

    def write(self, rows: pd.DataFrame) -> Path | None:
        """Append ``rows`` as one new part (atomic and durable, with page checksums); returns its path
        (None for no rows)."""
        if rows is None or len(rows) == 0:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False)
        final = self.out / f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.out / f".{final.name}.tmp"
        try:
            pq.write_table(table, tmp, write_page_checksum=True)
            _fsync(tmp)
            os.replace(tmp, final)
        except BaseException as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(err, OSError) and not err.filename:  # pyarrow's errors name no file: say which
                raise OSError(
                    err.errno or 0, f"cannot write a result part ({_one_line(err)})", str(final)
                ) from err
            raise
        _fsync(self.out)
        return final

    def read(self) -> pd.DataFrame:
        """Every stored row once, in a stable order (empty frame with the schema's columns if none)."""
        tables = [t for _, t in self._tables()]
        if not tables:
            return SCHEMA.empty_table().to_pandas()
        df = pa.concat_tables(tables).to_pandas()
        return sort_rows(df.drop_duplicates(ROW_KEY, keep="first"))


def _free(path: Path) -> Path:
    """``path``, or a sibling name that no file has yet (quarantined files never replace each other)."""
    while path.exists():
        path = path.with_name(f"{path.name[: -len('.bad')]}.{uuid.uuid4().hex[:8]}.bad")
    return path


class _BadPart(Exception):
    """A part that cannot be trusted; ``why`` says so in words that follow its file name."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _read_part(path: Path) -> pa.Table:
    """Every row of one part, read whole (page checksums verified) and cast to :data:`SCHEMA`."""
    if not path.is_file():  # a folder under a part's name would be read as a whole dataset
        raise _BadPart("is not a file")
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as err:
        raise _BadPart(f"cannot be read ({type(err).__name__}: {_one_line(err)})") from None
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise _BadPart(f"is not a part of these results: it lacks the columns {shown}")
    columns, wrong = [], []
    for f in SCHEMA:
        column = table.column(f.name)
        try:
            columns.append(column.cast(f.type))
        except (pa.ArrowException, ValueError, TypeError):
            wrong.append(f"{f.name} ({column.type}, not {f.type})")
    if wrong:
        raise _BadPart(f"is not a part of these results: the columns {', '.join(wrong[:5])} have other types")
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    _check_rows(table)
    return table


def _check_rows(table: pa.Table) -> None:
    """Rows a writer of this module could have written: every key set, one count per class."""
    import pyarrow.compute as pc

    unkeyed = [k for k in ROW_KEY if table.column(k).null_count]
    if unkeyed:
        raise _BadPart(f"has rows without {', '.join(unkeyed)}; it was not written by an ablation run")
    classes = table.column("num_classes")
    for name in ("tp", "fp", "fn"):
        lengths = pc.list_value_length(table.column(name))
        if lengths.null_count or classes.null_count or not pc.all(pc.equal(lengths, classes)).as_py():
            raise _BadPart(f"has rows whose {name!r} counts do not have one entry per class")


def _one_line(err: Exception) -> str:
    """An error's text on one line."""
    return " ".join(str(err).split())


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


def to_schema(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with exactly the columns and types they have when read back from Parquet."""
    if rows.empty:
        return SCHEMA.empty_table().to_pandas()
    return pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False).to_pandas()


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the stable order of :data:`SORT_COLUMNS` (index reset)."""
    cols = [c for c in SORT_COLUMNS if c in df.columns]
    return df.sort_values(cols, kind="mergesort", na_position="first").reset_index(drop=True)
