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

from ..errors import DiffCutLabError, ParameterError
from ..options import EXECUTORS
from .worker import init_worker, run_unit

__all__ = ["EXECUTORS", "execute"]

SCHEDULER_TIMEOUT = "10s"  # how long to try to reach a Dask scheduler

OnResult = Callable[[pd.DataFrame], None]


def _local(tasks: Sequence[dict], on_result: OnResult, **_: Any) -> None:
    for task in tasks:
        on_result(run_unit(task))


#: how often a unit is tried again after its worker process died (a crash, the OOM killer)
MAX_WORKER_RETRIES = 2


def _processes(
    tasks: Sequence[dict],
    on_result: OnResult,
    *,
    workers: int | None = None,
    fn: Callable = run_unit,
    **_: Any,
) -> None:
    """A process pool; when a worker dies, the units in flight run again in a new pool (a unit that kills
    its worker more than :data:`MAX_WORKER_RETRIES` times stops the study with a clear error)."""
    import warnings

    n = workers or max(1, min(len(tasks), os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // n)
    queue = [(task, 0) for task in tasks]
    while queue:
        queue = _pool_round(queue, on_result, n, threads, fn)
        if queue:
            worst = max(tries for _, tries in queue)
            if worst > MAX_WORKER_RETRIES:
                raise DiffCutLabError(
                    f"a worker process died {worst} times while running the same units (out of memory, or a "
                    "crash in native code); the results so far are kept: run with fewer --workers or "
                    "--executor local to see the error"
                )
            warnings.warn(
                f"a worker process died; {len(queue)} unit(s) in flight run again in a new pool",
                RuntimeWarning,
                stacklevel=2,
            )


def _pool_round(
    queue: list[tuple[dict, int]], on_result: OnResult, n: int, threads: int, fn: Callable
) -> list[tuple[dict, int]]:
    """Run ``queue`` in one pool; returns what is left (tries + 1 for the units in flight) if it broke."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a forked child would inherit torch's thread pools and any CUDA state of the parent
    ctx = multiprocessing.get_context("spawn")
    queue = list(queue)
    with ProcessPoolExecutor(
        max_workers=n, mp_context=ctx, initializer=init_worker, initargs=(threads,)
    ) as pool:
        pending: dict[Any, tuple[dict, int]] = {}
        try:
            while queue or pending:
                while queue and len(pending) < 2 * n:  # bounded in flight: results stream back in order
                    task, tries = queue.pop(0)
                    pending[pool.submit(fn, task)] = (task, tries)
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    entry = pending.pop(fut)
                    try:
                        rows = fut.result()
                    except BrokenProcessPool:
                        pending[fut] = entry
                        raise
                    on_result(rows)
        except BrokenProcessPool:
            left = []
            for fut, (task, tries) in pending.items():  # keep what finished before the pool broke
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    on_result(fut.result())
                else:
                    left.append((task, tries + 1))
            return left + queue
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return []


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
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise ParameterError(
                f"cannot reach the Dask scheduler at {scheduler} within {SCHEDULER_TIMEOUT} ({type(err).__name__}); "
                "check the address and that the scheduler runs (dask scheduler), or use --executor local"
            ) from None
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
