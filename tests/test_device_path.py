"""The chain on the features' device: the torch path of the cut equals the host path on the same inputs.

Everything here runs on the CPU (``solver="torch64"`` forces the device path there); the tests marked
``cuda`` repeat the comparison on a GPU and skip without one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference_ncut import clustered_features
from hypothesis import given, settings
from hypothesis import strategies as st

import diffcut_lab as dl
from diffcut_lab._eigen_torch import uses_device_path
from diffcut_lab.affinities import affinity
from diffcut_lab.ncut import recursive_ncut
from diffcut_lab.segmentation import cut_tree

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _same_tree(a, b) -> None:
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [s.accepted for s in a.steps] == [s.accepted for s in b.steps]
    assert [s.node for s in a.steps] == [s.node for s in b.steps]
    np.testing.assert_allclose([s.ncut for s in a.steps], [s.ncut for s in b.steps], rtol=1e-7, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    side=st.integers(5, 14),
    k=st.integers(2, 6),
    noise=st.floats(0.3, 1.2),
    tau=st.floats(0.2, 1.2),
    min_size=st.integers(1, 4),
)
def test_torch_path_equals_host_path(seed, side, k, noise, tau, min_size) -> None:
    w = affinity(clustered_features(seed, side, side, channels=32, k=k, noise=noise), alpha=10)
    host = recursive_ncut(w, tau=tau, grid=(side, side), solver="dense", min_size=min_size)
    dev = recursive_ncut(w, tau=tau, grid=(side, side), solver="torch64", min_size=min_size)
    _same_tree(host, dev)
    assert {s.solver for s in dev.steps} <= {"torch64", "components", "none"}
    for a, b in zip(host.steps, dev.steps):
        if a.solver != "components":  # the sign-fixed Fiedler vector is the same vector
            np.testing.assert_allclose(a.fiedler, b.fiedler, atol=1e-6 * np.abs(a.fiedler).max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lanczos_on_the_device_path_equals_the_dense_host_path(seed, monkeypatch) -> None:
    # above DEVICE_EIGH_MAX nodes the device path solves one eigenpair by Lanczos (no full eigh)
    from diffcut_lab import _eigen_torch

    monkeypatch.setattr(_eigen_torch, "DEVICE_EIGH_MAX", 40)
    side = 18
    w = affinity(clustered_features(seed, side, side, channels=32, k=5, noise=0.9), alpha=10)
    host = recursive_ncut(w, tau=0.7, grid=(side, side), solver="dense")
    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda m, *a, **k: calls.append(m.shape[0]) or eigh(m, *a, **k))
    dev = recursive_ncut(w, tau=0.7, grid=(side, side), solver="torch64")
    _same_tree(host, dev)
    assert "torch64-lanczos" in {s.solver for s in dev.steps}
    assert all(size <= 160 for size in calls)  # only Lanczos' small tridiagonal matrices, or small sub-graphs
    for a, b in zip(host.steps, dev.steps):
        if b.solver == "torch64-lanczos":
            np.testing.assert_allclose(a.fiedler, b.fiedler, atol=1e-6 * np.abs(a.fiedler).max())


def test_lanczos_finds_the_second_eigenvector() -> None:
    from diffcut_lab._eigen_torch import _lanczos_top

    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 300, generator=g, dtype=torch.float64)
    w = (x + x.T) / 2
    w.fill_diagonal_(0.0)
    d = w.sum(1)
    m = w / d.sqrt()[:, None] / d.sqrt()[None, :]
    _, vecs = torch.linalg.eigh(m)
    v = _lanczos_top(m, d.sqrt() / d.sqrt().norm())
    assert v is not None and abs(float(v @ vecs[:, -2])) > 1 - 1e-9


def test_disconnected_sub_graphs_go_through_the_host_split() -> None:
    w = torch.zeros(12, 12)
    w[:5, :5] = 1.0
    w[5:, 5:] = torch.rand(7, 7).add(1).triu().add(torch.rand(7, 7).add(1).triu(1).T)
    w[5:, 5:] = (w[5:, 5:] + w[5:, 5:].T) / 2
    host = recursive_ncut(w, tau=0.5, solver="dense")
    dev = recursive_ncut(w, tau=0.5, solver="torch64")
    _same_tree(host, dev)
    assert dev.steps[0].solver == "components"


def test_cut_tree_on_the_device_path_equals_the_default() -> None:
    f = clustered_features(3, 12, 12, channels=40, k=4, noise=0.8)
    cfg = dl.DiffCutConfig(tau=0.7)
    _same_tree(cut_tree(f, cfg), cut_tree(f, cfg.replace(solver="torch64")))
    timings: dict[str, float] = {}
    cut_tree(f, cfg, timings=timings)
    assert set(timings) == {"affinity", "cut"} and all(v >= 0 for v in timings.values())


def test_auto_chooses_the_device_path_off_the_cpu_only() -> None:
    assert not uses_device_path(torch.zeros(4, 4), "auto")
    assert uses_device_path(torch.zeros(4, 4), "torch64")
    assert uses_device_path(torch.empty(4, 4, device="meta"), "auto")
    assert not uses_device_path(torch.empty(4, 4, device="meta"), "dense")


def test_solver_names_are_checked_per_mode() -> None:
    with pytest.raises(dl.ParameterError, match="fixed"):
        dl.DiffCutConfig(mode="paper", solver="torch64")
    with pytest.raises(dl.ParameterError, match="solver"):
        recursive_ncut(torch.ones(3, 3), mode="paper", solver="torch64")


@cuda
@pytest.mark.parametrize("mode", ["fixed", "paper"])
def test_cuda_cut_equals_cpu_cut(mode) -> None:
    f = clustered_features(5, 16, 16, channels=64, k=5, noise=0.6)
    cfg = dl.DiffCutConfig(tau=0.6, mode=mode)
    cpu = cut_tree(f, cfg.replace(solver="torch64") if mode == "fixed" else cfg)
    gpu = cut_tree(f.cuda(), cfg)
    np.testing.assert_array_equal(cpu.labels, gpu.labels)
    assert {s.solver for s in gpu.steps} <= {"torch64", "torch32", "torch32+loop", "components", "none"}
