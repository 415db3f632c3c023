"""What runs on a worker: rebuild the study from a plain-dict task, load (once) what it needs, compute.

A task is a small picklable dict, so the same function serves the in-process loop, a process pool and
Dask workers. Each worker process keeps the datasets and backbones it loaded in memory for the next
tasks (a model is loaded once per worker, not once per image).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from ..errors import ParameterError
from ..feature_cache import FeatureStore
from .grid import AblationGrid, stable_hash

__all__ = ["dtype_from_name", "fixed_threads", "init_worker", "load_model", "run_unit"]

_MEMO: dict[str, Any] = {}
_MEMO_LOCK = threading.Lock()


def dtype_from_name(name: str | None) -> Any:
    """ "float16" / "fp16" / "bfloat16" / "float32" (or None) -> torch dtype (or None)
    (:func:`~diffcut_lab.backbones.parse_dtype`)."""
    from ..backbones import parse_dtype

    return parse_dtype(name)


def _memo(key: str, make: Any) -> Any:
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    value = make()
    with _MEMO_LOCK:
        return _MEMO.setdefault(key, value)


def load_model(source: str, dtype: str | None = None, device: str | None = None) -> Any:
    """A backbone, loaded once per worker process and reused by later tasks."""
    from ..backbones import load_backbone

    return _memo(
        f"model|{source}|{dtype}|{device}",
        lambda: load_backbone(source, dtype=dtype_from_name(dtype), device=device),
    )


def load_grid_dataset(grid: AblationGrid) -> Any:
    """The grid's dataset (memoised per worker)."""
    from ..datasets import load_dataset

    key = "dataset|" + stable_hash([grid.dataset, grid.root, grid.limit, grid.dataset_kwargs])
    return _memo(key, lambda: load_dataset(grid.dataset, grid.root, limit=grid.limit, **grid.dataset_kwargs))


def init_worker(threads: int | None = None) -> None:
    """Process-pool initializer: bound torch's intra-op threads so workers do not oversubscribe cores."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def run_unit(task: dict[str, Any]) -> pd.DataFrame:
    """Compute one work unit described by a plain dict.

    Keys: ``grid`` (``AblationGrid.to_dict()``), ``model``, ``index``, ``image`` (name, checked against
    the dataset), ``config_ids`` (list, or None for all of the model's), ``cache_dir`` (or None). The
    unit runs with the grid's ``threads`` (:func:`fixed_threads`).
    """
    from .engine import compute_unit

    grid = AblationGrid.from_dict(task["grid"])
    ds = load_grid_dataset(grid)
    index = int(task["index"])
    if index >= len(ds) or ds.names[index] != task["image"]:
        raise ParameterError(
            f"image {task['image']!r} is not item {index} of dataset {grid.dataset!r} on this worker; every "
            "worker must see the same dataset files (same root, same split)"
        )
    configs = grid.configs(task["model"])
    wanted = task.get("config_ids")
    if wanted is not None:
        keep = set(wanted)
        configs = [c for c in configs if c.id in keep]
    backbone = load_model(task["model"], grid.dtype, grid.device)
    store = FeatureStore(task["cache_dir"]) if task.get("cache_dir") else None
    with fixed_threads(grid.threads):
        return compute_unit(backbone, grid, ds[index], index, ds.info, configs, store=store)


@contextmanager
def fixed_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads in torch and in the BLAS/OpenMP pools (None: unchanged)."""
    if n is None:
        yield
        return
    import torch

    from ..threads import pool_threads

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        with pool_threads(int(n)):
            yield
    finally:
        torch.set_num_threads(before)
