"""Where work units run: in this process, in a process pool, or on a Dask cluster.

Every executor calls the same :func:`~diffcut_lab.ablation.worker.run_unit` on the same plain-dict
tasks and hands each finished unit's rows to ``on_result`` in this process as soon as it completes
(the caller writes them to disk), so what is computed does not depend on where it ran.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from ..errors import ParameterError
from .worker import init_worker, run_unit

__all__ = ["EXECUTORS", "execute"]

EXECUTORS = ("local", "processes", "dask")

OnResult = Callable[[pd.DataFrame], None]


def _local(tasks: Sequence[dict], on_result: OnResult, **_: Any) -> None:
    for task in tasks:
        on_result(run_unit(task))


def _processes(tasks: Sequence[dict], on_result: OnResult, *, workers: int | None = None, **_: Any) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    n = workers or max(1, min(len(tasks), os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // n)
    # spawn: a forked child would inherit torch's thread pools and any CUDA state of the parent
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=n, mp_context=ctx, initializer=init_worker, initargs=(threads,)
    ) as pool:
        pending = set()
        queue = list(tasks)
        try:
            while queue or pending:
                while (
                    queue and len(pending) < 2 * n
                ):  # bounded in flight: results stream back in order of work
                    pending.add(pool.submit(run_unit, queue.pop(0)))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _dask(
    tasks: Sequence[dict], on_result: OnResult, *, scheduler: str | None = None, client: Any = None, **_: Any
) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ParameterError("executor='dask' needs dask.distributed (pip install 'distributed')") from err
    own = client is None
    if own:
        if not scheduler:
            raise ParameterError(
                "executor='dask' needs scheduler='tcp://host:8786' or client=dask.distributed.Client(...)"
            )
        client = Client(scheduler)
    try:
        futures = [client.submit(run_unit, task, pure=False) for task in tasks]
        try:
            for fut in as_completed(futures):
                on_result(fut.result())
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        if own:
            client.close()


def execute(
    tasks: Sequence[dict],
    on_result: OnResult,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
) -> None:
    """Run ``tasks`` with the chosen executor, calling ``on_result(rows)`` for each finished unit.

    Parameters
    ----------
    tasks : sequence of dict
        Work units (see :func:`~diffcut_lab.ablation.worker.run_unit`).
    on_result : callable
        Called in this process with each unit's rows, in order of completion.
    executor : {"local", "processes", "dask"}
        In this process; a ``concurrent.futures`` process pool (``workers`` processes, spawned); or
        Dask distributed (``scheduler`` address or an existing ``client``).
    """
    if client is not None or scheduler:
        executor = "dask" if executor == "local" else executor
    if executor not in EXECUTORS:
        raise ParameterError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if not tasks:
        return
    run = {"local": _local, "processes": _processes, "dask": _dask}[executor]
    run(tasks, on_result, workers=workers, scheduler=scheduler, client=client)
