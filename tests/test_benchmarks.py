"""The benchmark scripts still run: each one on a tiny configuration (no timing is checked here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _benchmarks import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


class _Scene:
    def __init__(self, mask: np.ndarray, palettes: tuple[int, ...]) -> None:
        self.mask = mask
        self.palettes = palettes
        self.n_segments = int(mask.max()) + 1


def test_pair_merges_counts_pairs_by_what_tells_them_apart() -> None:
    pq = load_benchmark("pocket_quality")
    mask = np.repeat(np.arange(4), 4).reshape(4, 4)  # four segments, one row each
    scene = _Scene(mask, palettes=(0, 0, 1, 2))  # segments 0 and 1 share a palette
    pred = np.array([0, 0, 1, 1])[mask]  # 0+1 merged (same colour), 2+3 merged (other colour)
    out = pq.pair_merges([pred], [scene])
    assert out["pairs_same_colour"] == 1 and out["pairs_other_colour"] == 5
    assert out["merged_same_colour"] == 1.0
    assert out["merged_other_colour"] == pytest.approx(1 / 5)
    perfect = pq.pair_merges([mask], [scene])
    assert perfect["merged_same_colour"] == 0.0 and perfect["merged_other_colour"] == 0.0


@pytest.mark.slow
def test_pocket_quality_runs_end_to_end(tmp_path: Path) -> None:
    pq = load_benchmark("pocket_quality")
    layer = "down_blocks.2.attentions.0.transformer_blocks.0.attn1"
    out = tmp_path / "pq"
    argv = [
        "--n-test",
        "3",
        "--n-val",
        "2",
        "--timesteps",
        "300",
        "--taus",
        "0.7",
        "--alphas",
        "10",
        "--layers",
        layer,
        "--out",
        str(out),
    ]
    assert pq.main(argv) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["methods"]) == {"pocket", "colour-ncut", "colour-kmeans", "random-unet"}
    for m in res["methods"].values():
        assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["merged_same_colour"] <= 1.0
    assert res["methods"]["pocket"]["settings"]["layer"] == layer
    assert res["methods"]["colour-ncut"]["grid"] == res["methods"]["pocket"]["grid"]  # the only candidate
    assert 0.0 < res["references"]["perfect-colour-only"]["miou"] <= 1.0
    assert "pairs merged: same colour / other colour" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_ncut_modes_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "modes.json"
    assert load_benchmark("ncut_modes").main(["--n", "2", "--taus", "0.5", "--out", str(out)]) == 0
    modes = json.loads(out.read_text())["modes"]
    assert set(modes) == {"paper", "fixed"}
    for mode in modes.values():
        (row,) = mode["by_tau"].values()
        assert 0.0 < row["miou"] <= 1.0 and row["mean_segments"] >= 1
    assert modes["fixed"]["pixels_left_out_of_a_cut"] == 0.0  # only the published rule drops nodes


@pytest.mark.slow
def test_ablation_cost_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    assert load_benchmark("ablation_cost").main(["--images", "1", "--size", "64", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    # the sweep's row for the single configuration is that configuration's own result
    assert res["sweep_contains_single_result"] is True
    assert res["configurations"] == len(res["layers"]) * len(res["alphas"]) * len(res["taus"])
    assert res["ratios"]["sweep_over_single"] == res["seconds"]["sweep"] / res["seconds"]["single"]


def test_postprocess_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "postprocess.json"
    argv = ["--sizes", "48", "--grid", "6", "--channels", "8", "--segments", "4", "--repeats", "1",
            "--threads", "1", "--out", str(out)]  # fmt: skip
    assert load_benchmark("postprocess").main(argv) == 0
    res = json.loads(out.read_text())["results"]
    assert len(res) == 1 and res[0]["size"] == [48, 48]
    assert all(res[0]["identical"].values())  # the fast refine gives the reference's labels


def test_device_benchmark_runs_the_whole_chain_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "device.json"
    res = load_benchmark("device").main(
        [
            "--model",
            "tiny",
            "--size",
            "64",
            "--device",
            "cpu",
            "--batches",
            "1",
            "2",
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == res
    for r in res["results"]:
        assert set(r["per_image_s"]) == {"features", "affinity", "cut", "upsample", "refine"}
        assert 0 < r["unet_share"] < 1 and r["images_per_s"] > 0


def test_segment_stages_measures_every_stage_of_this_tree() -> None:
    bench = load_benchmark("segment_stages")
    runs = bench.measure(1)
    assert {"features", "affinity", "cut", "upsample", "refine", "total"} <= set(runs)
    summary = bench._summary([runs])
    assert summary["post"] == pytest.approx(
        summary["ncut"] + summary["upsample"] + summary["refine"], abs=1e-3
    )


def test_methods_benchmark_tabulates_every_variant(tmp_path: Path) -> None:
    t = load_benchmark("methods").main(
        ["--scenes", "2", "--size", "64", "--no-photo", "--out", str(tmp_path / "m")]
    )
    assert len(t) == 16 and set(t["stopping"]) == {"tau chosen", "auto"}
    assert (tmp_path / "m.md").read_text().count("\n") == 18
