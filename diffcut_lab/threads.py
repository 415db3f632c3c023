"""How many threads each stage uses: the toolkit's thread policy, which needs no expert.

Two kinds of work run in a segmentation. Large dense products -- the UNet forward, a dense affinity of a
big grid -- gain from every core. The many small operations -- concept assignment, PAMR and the median
filter, the recursive cut's sub-graphs, the K-way moves -- do not: torch's and OpenBLAS's intra-op
threads hand each small piece back and forth and spin while they wait, and where another process holds a
core (a second notebook kernel, a browser, a build) every hand-off waits for the scheduler. On a 2-core
machine beside another process's two-thread torch work that made post-processing 3-4x slower
(``benchmarks/busy.py``).

So the chain runs its small work in :func:`small_work`. On an idle machine the extra thread still pays
(post-processing 1.3x slower on one thread), so the scope decides from what the process just got: the
CPU time of the work before it (the UNet, the affinity: every thread busy) against its wall time. A
multi-threaded stage that got less than :data:`BUSY_SHARE` of its threads' time shared the cores with
other work; then the small work runs on one torch thread and one BLAS thread, restored when it ends.
:func:`set_threads` sets the process's threads (the command line's ``--threads N``); :func:`set_policy`
chooses ``"auto"`` (the default), ``"always"`` (small work always on one thread) or ``"off"``, for
comparisons (``benchmarks/busy.py`` measures them in one run).

Waiting threads sleep soon: after each parallel region torch's OpenMP threads (GNU libgomp in the pip
wheels) spin for 300,000 iterations before they sleep, and on a machine with other work that spinning
takes the core the other work, or this process's next step, needs. :func:`sleep_when_waiting` sets
``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user set it or ``OMP_WAIT_POLICY``; ``import
diffcut_lab`` calls it, so it holds wherever the package is imported before torch (the command line, the
report's kernel, the notebooks). ``benchmarks/busy.py``, two photos beside a neighbour's two-thread torch
work on 2 cores: 1.17 s -> 0.73 s, idle 0.38 s -> 0.40-0.44 s; ``segment`` of a photo beside the same
neighbour 4.3 s -> 2.9-3.1 s. Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) was as fast beside the
neighbour but 1.3x slower idle.

Imports no torch at module level: the command line's ``--help`` reads this module.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from .errors import ParameterError

__all__ = [
    "ENV_THREADS",
    "MAX_THREADS",
    "POLICIES",
    "apply_env",
    "blas_threads",
    "machine_busy",
    "one_thread",
    "pool_threads",
    "set_policy",
    "set_threads",
    "sleep_when_waiting",
    "small_work",
    "thread_settings",
]

#: the most threads ``--threads`` accepts (more than any machine's cores is a typo)
MAX_THREADS = 1024
#: environment variable that carries ``--threads N`` into the processes a command starts (a report's
#: notebook kernel, process-pool workers): :func:`apply_env` reads it
ENV_THREADS = "DIFFCUT_LAB_THREADS"

#: how long idle OpenMP threads spin before they sleep (libgomp's ``GOMP_SPINCOUNT``, read when torch loads;
#: libgomp's own default is 300,000), unless the user set it or ``OMP_WAIT_POLICY``
SPIN_COUNT = 3000

#: policies of :func:`small_work`
POLICIES = ("auto", "always", "off")
#: a multi-threaded stage that got less than this share of its threads' CPU time shared the machine
BUSY_SHARE = 0.7
#: the work between two scopes is read as a measurement when it lasted this long (seconds): shorter is
#: noise, longer is likely a pause (a user reading a notebook) rather than work
_MEASURE_WALL = (0.05, 10.0)

_state: dict[str, Any] = {"policy": "auto", "controller": None, "mark": None, "busy": False}


def _controller() -> Any:
    """One threadpoolctl controller for the process: building one scans the loaded libraries (3-15 ms), a
    limit through it costs ~0.02 ms. scipy's own BLAS is loaded first, so that the scan finds it."""
    if _state["controller"] is None:
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _state["controller"] = ThreadpoolController()
    return _state["controller"]


def blas_threads(n: int | None) -> contextlib.AbstractContextManager:
    """A scope with at most ``n`` BLAS threads (``None``: as they are), restored when it ends.

    The eigen solvers take it around each solve: small dense problems and Lanczos run fastest on one
    thread, where more spin-wait against torch's threads.
    """
    if n is None:
        return contextlib.nullcontext()
    return _controller().limit(limits=n, user_api="blas")


def pool_threads(n: int) -> contextlib.AbstractContextManager:
    """A scope with at most ``n`` threads in every BLAS and OpenMP pool (torch's own intra-op threads are
    set with ``torch.set_num_threads``), restored when it ends."""
    return _controller().limit(limits=n)


def set_policy(policy: str) -> None:
    """``"auto"`` (the default: small work on one thread when the machine is busy), ``"always"`` or
    ``"off"`` (every stage on the process's threads)."""
    if policy not in POLICIES:
        raise ParameterError(f"unknown thread policy {policy!r}; expected one of {POLICIES}.")
    _state["policy"] = policy


def machine_busy() -> bool:
    """Whether the work since the last :func:`small_work` scope shared the cores with other processes:
    its CPU time fell short of :data:`BUSY_SHARE` of its threads' wall time. Without a usable measurement
    (too short, a long pause, one thread) the last verdict stands (at first: not busy)."""
    mark = _state["mark"]
    if mark is not None:
        wall, cpu, n = time.perf_counter() - mark[0], time.process_time() - mark[1], mark[2]
        if n > 1 and _MEASURE_WALL[0] <= wall <= _MEASURE_WALL[1]:
            _state["busy"] = cpu < BUSY_SHARE * n * wall
    return _state["busy"]


def check_threads(value: Any) -> int:
    """The one rule for a thread count: an int in ``[1, MAX_THREADS]`` (ParameterError otherwise)."""
    try:
        n = int(value)
        ok = not isinstance(value, bool) and float(value) == n
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or not 1 <= n <= MAX_THREADS:
        raise ParameterError(
            f"threads must be an int from 1 to {MAX_THREADS} (this machine has {os.cpu_count()} cores); "
            f"got {value!r}."
        )
    return n


def set_threads(n: Any) -> int:
    """Use ``n`` threads for the large work of this process (torch intra-op and BLAS); returns ``n``.

    The small work still runs on one thread while the policy is on (:func:`small_work`).
    """
    import torch

    n = check_threads(n)
    torch.set_num_threads(n)
    _controller().limit(limits=n, user_api="blas")  # kept: the process's setting from now on
    return n


def sleep_when_waiting() -> bool:
    """Let idle OpenMP threads sleep after a short spin (``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT`) unless the
    user chose (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` set).

    OpenMP reads the variable when torch loads, so it takes effect in a process that imports the package
    before torch. Returns whether this call set it (False: the user's choice is kept).
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


def apply_env() -> int | None:
    """Use the threads :data:`ENV_THREADS` names, if set (``--threads N`` of the command that started this
    process); returns them. :func:`~diffcut_lab.backbones.load_backbone` calls it."""
    value = os.environ.get(ENV_THREADS)
    return None if not value else set_threads(value)


def thread_settings() -> dict[str, Any]:
    """The current settings: torch's intra-op threads, each BLAS library's, and whether the policy is on."""
    import torch

    blas = {f"{i['internal_api']} ({i['filepath'].rsplit('/', 1)[-1]})": i["num_threads"]
            for i in _controller().info() if i["user_api"] == "blas"}  # fmt: skip
    return {"torch": torch.get_num_threads(), "blas": blas, "policy": _state["policy"]}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed work on one torch thread and one BLAS thread, restored when it ends; free (nothing
    changed) where torch already runs on one thread, as inside another such scope."""
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        with blas_threads(1):
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def small_work() -> Iterator[None]:
    """Run the enclosed small operations on one torch thread and one BLAS thread where that pays (the
    policy: :func:`machine_busy` under ``"auto"``), then restore; nested scopes are free."""
    import torch

    policy = _state["policy"]
    one = policy == "always" or (policy == "auto" and machine_busy())
    try:
        with one_thread() if one else contextlib.nullcontext():
            yield
    finally:
        _state["mark"] = (time.perf_counter(), time.process_time(), torch.get_num_threads())
