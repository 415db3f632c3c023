"""Executors: a Dask LocalCluster and a process pool give the same rows as the in-process run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from rows import stable

from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.ablation.store import ResultStore
from diffcut_lab.errors import ParameterError


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> AblationGrid:
    from diffcut_lab.testing import save_tiny_model

    model = save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", family="pixel", image_size=64)
    return AblationGrid(
        dataset="synthetic", dataset_kwargs={"n": 4, "size": 64}, models=[str(model)], layers=["diffcut"],
        timesteps=[10, 50], alphas=[10.0], taus=[0.3, 0.5], refines=["none", "median"], label_size=64,
        methods=["diffcut", "kmeans"], method_kwargs={"kmeans": {"n_clusters": 3}},
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(grid) -> pd.DataFrame:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_ablation(grid, out=None, progress=False)
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_dask_local_cluster_matches_in_process(grid, reference, tmp_path):
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        df = run_ablation(grid, out=tmp_path / "dask.parquet", client=client, progress=False)
        assert len(client.scheduler_info()["workers"]) == 2
    assert len(df) == 4 * len(grid)
    pd.testing.assert_frame_equal(stable(df), stable(reference))
    assert (
        len(ResultStore(tmp_path / "dask.parquet").parts()) == 4
    )  # one part per image, written as they finish


@pytest.mark.slow
def test_process_pool_matches_in_process(grid, reference, tmp_path):
    df = run_ablation(grid, out=tmp_path / "pool.parquet", executor="processes", workers=2, progress=False)
    pd.testing.assert_frame_equal(stable(df), stable(reference))


def test_executor_arguments():
    from diffcut_lab.ablation.executors import execute

    with pytest.raises(ParameterError, match="executor must be one of"):
        execute([{}], print, executor="threads")
    with pytest.raises(ParameterError, match="scheduler"):
        execute([{}], print, executor="dask")
    execute([], print, executor="processes")  # nothing to do is not an error


def test_dask_worker_sees_other_dataset_is_an_error(grid, tmp_path):
    from diffcut_lab.ablation.worker import run_unit

    task = {"grid": grid.to_dict(), "model": grid.models[0], "index": 0, "image": "scene-0", "config_ids": None,
            "cache_dir": None}  # fmt: skip
    with pytest.raises(ParameterError, match="same dataset"):
        run_unit(task)


def test_model_is_loaded_once_per_worker(grid):
    from diffcut_lab.ablation.worker import load_model

    assert load_model(grid.models[0]) is load_model(grid.models[0])
