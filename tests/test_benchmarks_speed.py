"""The speed benchmarks still run: the K-way comparison and the large-grid methods, on tiny sizes (no timing
is checked here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _benchmarks import load_benchmark


def test_kway_speed_writes_both_methods_on_the_same_graph(tmp_path: Path) -> None:
    ks = load_benchmark("kway_speed")
    out = tmp_path / "kway.json"
    argv = [
        "--sides",
        "8",
        "--noises",
        "1.0",
        "--seeds",
        "0",
        "--k",
        "3",
        "--repeats",
        "2",
        "--out",
        str(out),
    ]
    assert ks.main(argv) == 0
    res = json.loads(out.read_text())
    (row,) = res["compare"]
    assert row["nodes"] == 64 and row["k"] == 3
    assert set(row["seconds"]) == {"sklearn", "kway", "kway_kmeanspp", "kway_no_moves"}
    assert row["ncut"]["kway"] <= row["ncut"]["kway_no_moves"] + 1e-12  # segment moves only lower the NCut
    assert all(len(t) == 2 for t in row["times"].values())  # alternated repeats, kept for the medians
    assert row["kway_over_sklearn"] == pytest.approx(row["seconds"]["kway"] / row["seconds"]["sklearn"])
    assert all(v >= 0 for v in row["ncut"].values())
    assert set(res["summary"]) == {"N=64"}


@pytest.mark.parametrize("method", ["recursive", "kway", "kway-spectral", "walk", "device"])
def test_large_grid_methods_cut_in_process(method: str) -> None:
    lg = load_benchmark("large_grid")
    row = lg.child(method, side=6, k=3, channels=8, noise=0.5, tau=0.5, threads=1, seed=0)
    # three well-separated blobs: every method finds them (K-way is told K = 3)
    assert row["n_segments"] == 3
    if method == "device":
        assert set(row["solvers"]) <= {"torch64", "torch64-lanczos", "components", "none"}


@pytest.mark.slow
def test_large_grid_measures_each_method_in_its_own_process(tmp_path: Path) -> None:
    lg = load_benchmark("large_grid")
    out = tmp_path / "lg.json"
    argv = [
        "--side",
        "6",
        "--k",
        "3",
        "--channels",
        "8",
        "--methods",
        "kway",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert lg.main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"recursive", "kway"}  # the reference always runs
    assert res["summary"]["recursive"]["time_over_recursive"] == 1.0
    for m in res["summary"].values():
        assert m["completed"] and m["peak_rss_gib"] > 0
