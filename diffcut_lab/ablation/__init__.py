"""Ablation studies: a declarative grid, cached features, resumable Parquet results, any executor.

>>> from diffcut_lab.ablation import AblationGrid, run_ablation, summarize  # doctest: +SKIP
>>> grid = AblationGrid.from_yaml("examples/ablation_pocket.yaml")     # doctest: +SKIP
>>> df = run_ablation(grid, out="results.parquet", cache_dir=".features")  # doctest: +SKIP
>>> summarize(df).sort_values("miou").tail()                             # doctest: +SKIP

Modules: :mod:`.grid` (the grid and its configurations), :mod:`.engine` (one image, every
configuration), :mod:`.cache` (features on disk), :mod:`.store` (Parquet parts), :mod:`.worker` and
:mod:`.executors` (local, process pool, Dask), :mod:`.runner` (``run_ablation``), :mod:`.summary`
(``summarize``), :mod:`.evaluation` (the paper's benchmark protocol for one configuration).
"""

from __future__ import annotations

from .grid import AblationGrid, Config
from .runner import run_ablation
from .summary import summarize

__all__ = ["AblationGrid", "Config", "run_ablation", "summarize"]
