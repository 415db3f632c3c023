"""``run_ablation``: expand the grid, skip what is stored, run the rest, stream rows to Parquet."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ParameterError
from ..progress import Progress
from .executors import execute
from .grid import DATA_KEYS, AblationGrid
from .store import SCHEMA, ResultStore, sort_rows, to_schema
from .worker import load_grid_dataset

__all__ = ["LARGE_STUDY_ROWS", "as_grid", "plan", "run_ablation"]

#: studies with more results than this start with a warning
LARGE_STUDY_ROWS = 1_000_000


def as_grid(grid: AblationGrid | Mapping[str, Any] | str | Path) -> AblationGrid:
    """An :class:`AblationGrid` from a grid, a mapping or a YAML path."""
    if isinstance(grid, AblationGrid):
        return grid
    if isinstance(grid, Mapping):
        return AblationGrid.from_dict(grid)
    if isinstance(grid, (str, Path)):
        return AblationGrid.from_yaml(grid)
    raise ParameterError(f"grid must be an AblationGrid, a mapping or a YAML path; got {type(grid).__name__}")


def plan(
    grid: AblationGrid, names: list[str], done: set[tuple[str, str, str]], cache_dir: str | None
) -> tuple[list[dict[str, Any]], int]:
    """The tasks still to run (one per model x image with missing configurations) and the rows they make."""
    tasks: list[dict[str, Any]] = []
    n_rows = 0
    grid_dict = grid.to_dict()
    for model in grid.models:
        ids = [c.id for c in grid.configs(model)]
        for index, name in enumerate(names):
            todo = [i for i in ids if (model, name, i) not in done]
            if not todo:
                continue
            n_rows += len(todo)
            tasks.append({
                "grid": grid_dict, "model": model, "index": index, "image": name,
                "config_ids": None if len(todo) == len(ids) else todo, "cache_dir": cache_dir,
            })  # fmt: skip
    return tasks, n_rows


def run_ablation(
    grid: AblationGrid | Mapping[str, Any] | str | Path,
    *,
    out: str | Path | None = "results.parquet",
    cache_dir: str | Path | None = None,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run an ablation study; resumable, cached, on any executor.

    Parameters
    ----------
    grid : AblationGrid, mapping or path
        The study (a YAML file path works too).
    out : path or None
        Parquet dataset directory the rows are appended to as units finish (``pandas.read_parquet(out)``
        reads it). Re-running with the same ``out`` skips every (model, image, configuration) already
        there, so an interrupted run resumes where it stopped. None keeps results in memory only.
    cache_dir : path, optional
        Feature cache directory (safetensors files keyed by model weights, image, size, timestep, seed,
        prompt and layer). Reused across runs and grids; on a cluster it must be a shared path.
    executor : {"local", "processes", "dask"}
        Where units run; ``scheduler`` or ``client`` imply "dask".
    workers : int, optional
        Process-pool size (default: one per CPU core, at most one per unit).
    scheduler : str, optional
        Dask scheduler address (``tcp://host:8786``).
    client : dask.distributed.Client, optional
        An existing Dask client (e.g. on a ``LocalCluster``); left open.
    progress : bool
        Print the plan (rows in all, done before, to compute) and show a progress bar over images
        (:class:`~diffcut_lab.progress.Progress`: tqdm on a terminal or in Jupyter, a line per image in
        a log).

    Returns
    -------
    pandas.DataFrame
        Every row of this grid's configurations on this grid's images (stored earlier or now), one per
        image x configuration, in a stable order; :func:`~diffcut_lab.ablation.summarize` turns it into
        dataset-level mIoU per configuration.
    """
    grid = as_grid(grid)
    ds = load_grid_dataset(grid)
    if ds.info.num_classes < 1:
        raise ParameterError(
            f"dataset {grid.dataset!r} has no labels; an ablation needs ground truth to score"
        )
    total = len(grid) * len(ds)
    if total > LARGE_STUDY_ROWS:
        warnings.warn(
            f"this study has {total:,} results to compute ({len(grid):,} configurations x {len(ds):,} "
            "images); narrow an axis or set limit if that was not meant. It resumes where it stops.",
            RuntimeWarning,
            stacklevel=2,
        )
    store = ResultStore(out) if out is not None else None
    if store is None:
        return _run(grid, ds, None, cache_dir, executor, workers, scheduler, client, progress)
    with store.lock():
        _check_same_data(grid, store)
        tmp = store.out / f"._grid.{os.getpid()}.tmp"  # written whole, then renamed: never half a description
        grid.to_yaml(tmp)
        os.replace(tmp, store.out / "_grid.yaml")
        return _run(grid, ds, store, cache_dir, executor, workers, scheduler, client, progress)


def _check_same_data(grid: AblationGrid, store: ResultStore) -> None:
    """Refuse to add rows of other data to a results directory (its rows are keyed by image name).

    The data is read from ``out/_grid.yaml``; when that file cannot be read (damaged, edited by hand), from
    the ``data`` column of the stored rows, with a warning that names the file.
    """
    path = store.out / "_grid.yaml"
    if not path.is_file():
        return
    try:
        old = AblationGrid.from_yaml(path)
    except (ParameterError, TypeError, ValueError) as err:
        warnings.warn(
            f"{path} cannot be read ({err}); the stored rows' data keys are checked instead, and the file is "
            "written again",
            RuntimeWarning,
            stacklevel=3,
        )
        other = store.data_keys() - {grid.data_key(), ""}
        if other:
            raise ParameterError(
                f"{store.out} holds results on other data (rows with data keys {sorted(other)[:3]}, this grid's "
                f"is {grid.data_key()}); pass another --out, or the same data settings to resume"
            ) from None
        return
    differ = [k for k in DATA_KEYS if getattr(old, k) != getattr(grid, k)]
    if differ:
        raise ParameterError(
            f"{path.parent} holds results on other data (the grid's {differ} differ: "
            f"{[getattr(old, k) for k in differ]} there, {[getattr(grid, k) for k in differ]} now); pass "
            "another --out, or the same data settings to resume"
        )


def _run(grid: AblationGrid, ds: Any, store: ResultStore | None, cache_dir: Any, executor: str,
         workers: int | None, scheduler: str | None, client: Any, progress: bool) -> pd.DataFrame:  # fmt: skip
    done = store.done() if store is not None else set()
    tasks, n_rows = plan(grid, ds.names, done, None if cache_dir is None else str(cache_dir))
    frames: list[pd.DataFrame] = []
    n_units = len(grid.models) * len(ds.names)
    total_rows = len(grid) * len(ds.names)
    if progress:
        where = f"in {store.out}" if store is not None else "(kept in memory)"
        print(f"{grid.name}: {len(grid)} configurations x {len(ds.names)} images = {total_rows} rows {where}; "
              f"{total_rows - n_rows} done before, {n_rows} to compute ({len(tasks)} image units, "
              f"executor {executor})", file=sys.stderr, flush=True)  # fmt: skip
    written = 0

    def on_result(rows: pd.DataFrame) -> None:
        nonlocal written
        if store is not None:
            store.write(rows)
        else:
            frames.append(rows)
        written += len(rows)
        name = rows["image"].iloc[0] if len(rows) else ""
        bar.advance(f"{name} ({written}/{n_rows} rows)")

    with Progress(len(tasks), grid.name, initial=n_units - len(tasks), quiet=not (progress and tasks)) as bar:
        execute(tasks, on_result, executor=executor, workers=workers, scheduler=scheduler, client=client)
    if store is not None:
        df = store.read()
    else:
        df = pd.concat(frames, ignore_index=True) if frames else SCHEMA.empty_table().to_pandas()
        df = to_schema(df)
    ids = {c.id for c in grid.configs()}
    keep = df["config_id"].isin(ids) & df["image"].isin(set(ds.names)) & (df["dataset"] == ds.info.name)
    return sort_rows(df[keep])
