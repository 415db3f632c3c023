"""The thread policy: small work on one thread in a scope that restores the settings; --threads N."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab import threads


def _blas() -> set[int]:
    return set(threads.thread_settings()["blas"].values())


def _probe() -> dict:
    return {"torch": torch.get_num_threads(), "blas": _blas()}


def test_small_work_runs_on_one_thread_and_restores():
    torch.set_num_threads(2)
    try:
        with threads.blas_threads(2):
            threads.set_policy("always")
            with threads.small_work():
                inside = _probe()
            assert inside == {"torch": 1, "blas": {1}}
            assert _probe() == {"torch": 2, "blas": {2}}
            threads.set_policy("off")
            with threads.small_work():
                assert _probe() == {"torch": 2, "blas": {2}}
    finally:
        threads.set_policy("auto")
        torch.set_num_threads(1)  # the suite's setting (conftest)


def test_auto_policy_reads_whether_the_work_before_shared_the_cores(monkeypatch):
    """ "auto": one thread only after a multi-threaded stage that got less than BUSY_SHARE of its threads'
    CPU time (another process held cores); after one that got its share, threads as they are."""
    torch.set_num_threads(2)
    try:
        with threads.blas_threads(2):
            now = time.perf_counter(), time.process_time()
            monkeypatch.setitem(threads._state, "mark", (now[0] - 1.0, now[1] - 0.6, 2))  # 0.6 of 2 CPU-s
            with threads.small_work():
                assert _probe()["torch"] == 1
            assert threads.machine_busy()  # a short interval since: the verdict stands
            now = time.perf_counter(), time.process_time()
            monkeypatch.setitem(threads._state, "mark", (now[0] - 1.0, now[1] - 1.9, 2))  # 1.9 of 2 CPU-s
            with threads.small_work():
                assert _probe() == {"torch": 2, "blas": {2}}
            monkeypatch.setitem(threads._state, "mark", (now[0] - 600.0, now[1], 2))  # a pause, not work
            assert not threads.machine_busy()
    finally:
        torch.set_num_threads(1)
    with pytest.raises(dl.ParameterError, match="policy"):
        threads.set_policy("sometimes")


def test_the_cut_and_the_post_processing_run_in_the_scope(monkeypatch):
    """pixel_labels and the cut see one thread; the caller's threads are back afterwards."""
    from diffcut_lab import refine

    seen = []
    original = refine.median_filter

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return original(*a, **k)

    monkeypatch.setattr(refine, "median_filter", spy)
    torch.set_num_threads(2)
    threads.set_policy("always")
    try:
        f = torch.randn(8, 6, 6)
        tree = core.cut_tree(f, dl.DiffCutConfig(refine="median"))
        core.pixel_labels(core.grid_labels(tree), f, (12, 12), dl.DiffCutConfig(refine="median"))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        threads.set_policy("auto")
        torch.set_num_threads(1)


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True, 10**6])
def test_thread_counts_are_checked(bad):
    with pytest.raises(dl.ParameterError, match="threads"):
        threads.check_threads(bad)


def test_threads_option_reaches_the_process_and_the_ones_it_starts(tmp_path):
    """--threads N: this process's torch threads, and through the environment a notebook kernel's."""
    code = (
        "import os, torch, diffcut_lab.cli as c, diffcut_lab.commands._options as o, argparse\n"
        "o.apply_threads(argparse.Namespace(threads=1))\n"
        "print(torch.get_num_threads(), os.environ['DIFFCUT_LAB_THREADS'])\n"
        "import subprocess, sys\n"
        "print(subprocess.run([sys.executable, '-c', 'import torch, diffcut_lab as dl; dl.load_backbone(\"pocket\", "
        "weights=False); print(torch.get_num_threads())'], capture_output=True, text=True).stdout.strip())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != threads.ENV_THREADS}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.split() == ["1", "1", "1"]


def test_segment_refuses_a_bad_threads_value(capsys):
    from diffcut_lab import cli

    with pytest.raises(SystemExit):
        cli.main(["segment", "x.png", "--threads", "many"])
    assert "expected an integer" in capsys.readouterr().err
    assert cli.main(["segment", "x.png", "--threads", "0"]) == 2
    assert "threads must be an int from 1" in capsys.readouterr().err


def test_import_lets_idle_openmp_threads_sleep_unless_the_user_chose():
    """``import diffcut_lab`` shortens OpenMP's spin before torch loads (spinning threads took the core a
    neighbour needed); a spin count or wait policy the user set is kept."""
    import os
    import subprocess
    import sys

    from diffcut_lab.threads import SPIN_COUNT

    code = "import os, diffcut_lab, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def spin(**extra: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert spin() == str(SPIN_COUNT)
    assert spin(GOMP_SPINCOUNT="1000") == "1000"
    assert spin(OMP_WAIT_POLICY="ACTIVE") == "None"
