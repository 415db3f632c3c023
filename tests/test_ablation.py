"""Ablation runner: grid expansion, feature cache keys, prune reuse, resume, interruption, summaries, plots."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from rows import stable

from diffcut_lab import errors as dl_errors
from diffcut_lab.ablation import AblationGrid, run_ablation, summarize
from diffcut_lab.ablation.grid import config_id
from diffcut_lab.ablation.store import ResultStore, sort_rows
from diffcut_lab.errors import ParameterError
from diffcut_lab.feature_cache import FeatureStore, feature_key, image_hash, model_fingerprint

REPO = Path(__file__).resolve().parents[1]


def small_grid(model: Path, **kw) -> AblationGrid:
    base = dict(
        dataset="synthetic", dataset_kwargs={"n": 3, "size": 64}, models=[str(model)], layers=["diffcut"],
        timesteps=[50], alphas=[5.0, 10.0], taus=[0.3, 0.5], refines=["none"], label_size=64,
    )  # fmt: skip
    base.update(kw)
    return AblationGrid(**base)


# ----------------------------------------------------------------------------------------------------
# grid


def test_grid_expansion_counts_and_ids():
    g = AblationGrid(
        dataset="synthetic", models=["a", "b"], layers=["diffcut", "x.attn1"], timesteps=[10, 50, 200],
        alphas=[1, 10], taus=[0.3, 0.5, 0.7], refines=["none", "pamr"], methods=["diffcut", "kmeans"],
        modes=["fixed", "paper"], method_kwargs={"kmeans": {"n_clusters": 5}},
    )  # fmt: skip
    per_feature = (2 * 3 * 2 + 1) * 2  # diffcut: alpha x tau x mode; kmeans: once; each x refine
    configs = g.configs()
    assert len(configs) == len(g) == 2 * 2 * 3 * per_feature
    ids = [c.id for c in configs]
    assert len(set(ids)) == len(ids)  # every configuration has its own id
    assert ids == [c.id for c in g.configs()]  # stable
    km = [c for c in configs if c.method == "kmeans"]
    assert all(np.isnan(c.alpha) and np.isnan(c.tau) and c.mode == "" for c in km)
    assert km[0].params == '{"n_clusters": 5}'
    assert config_id(km[0].to_dict()) == km[0].id
    assert len(g.configs("a")) == len(configs) // 2
    # the id depends on every configuration field
    c = configs[0].to_dict()
    for field, value in (("seed", 1), ("tau", 0.31), ("label_size", 64), ("prompt", "x"), ("model", "c")):
        assert config_id({**c, field: value}) != configs[0].id


def test_grid_yaml_roundtrip_and_validation(tmp_path):
    g = AblationGrid(
        dataset="voc", root="/data/voc", taus=[0.3, 0.5], method_kwargs={"kmeans": {"n_clusters": 3}}
    )
    path = g.to_yaml(tmp_path / "g.yaml")
    assert AblationGrid.from_yaml(path) == g
    assert yaml.safe_load(path.read_text())["taus"] == [0.3, 0.5]
    with pytest.raises(ParameterError, match="unknown grid keys"):
        AblationGrid.from_dict({"dataset": "voc", "tauz": [1]})
    with pytest.raises(ParameterError, match="allowed values"):
        AblationGrid(dataset="voc", methods=["watershed"])
    with pytest.raises(ParameterError, match="alphas"):
        AblationGrid(dataset="voc", alphas=[0])
    with pytest.raises(ParameterError, match="needs 'dataset'"):
        AblationGrid.from_dict({})


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("ablation_*.yaml")))
def test_example_configs_parse(path):
    g = AblationGrid.from_yaml(path)
    assert len(g) >= 1


# ----------------------------------------------------------------------------------------------------
# feature cache


def test_feature_keys_and_fingerprints():
    from diffcut_lab.testing import tiny_backbone

    a, a2, b = tiny_backbone("pixel", seed=0), tiny_backbone("pixel", seed=0), tiny_backbone("pixel", seed=1)
    assert model_fingerprint(a) == model_fingerprint(a2) != model_fingerprint(b)
    base = dict(
        model="m", image="i", size=64, timestep=50, seed=42, prompt="", layer="l", dtype="torch.float32"
    )
    k = feature_key(**base)
    for field, value in (("model", "m2"), ("image", "j"), ("size", 32), ("timestep", 10), ("seed", 0),
                         ("prompt", "a"), ("layer", "l2"), ("dtype", "torch.float16")):  # fmt: skip
        assert feature_key(**{**base, field: value}) != k, field
    x = torch.rand(3, 8, 8)
    y = x.clone()
    assert image_hash(x) == image_hash(y)
    y[0, 0, 0] += 1e-3
    assert image_hash(x) != image_hash(y)


def test_cache_hit_miss_and_values(tiny_dir, tmp_path):
    grid = small_grid(
        tiny_dir, dataset_kwargs={"n": 2, "size": 64}, timesteps=[10, 50], alphas=[10.0], taus=[0.4]
    )
    first = run_ablation(grid, out=None, cache_dir=tmp_path / "c", progress=False)
    store = FeatureStore(tmp_path / "c")
    assert len(store) == 2 * 2  # images x timesteps, one layer
    assert not first["features_cached"].any()
    again = run_ablation(grid, out=None, cache_dir=tmp_path / "c", progress=False)
    assert again["features_cached"].all()
    pd.testing.assert_frame_equal(stable(first), stable(again))
    # another seed is another key: misses, and new entries
    other = run_ablation(
        small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64}, timesteps=[10, 50], alphas=[10.0], taus=[0.4], seed=7),
        out=None, cache_dir=tmp_path / "c", progress=False,
    )  # fmt: skip
    assert not other["features_cached"].any() and len(store) == 8
    # cached tensors are the captured ones
    from diffcut_lab import segmentation as core
    from diffcut_lab.ablation.worker import load_model
    from diffcut_lab.datasets import load_dataset
    from diffcut_lab.hooks import capture

    bb = load_model(str(tiny_dir))
    image = torch.from_numpy(load_dataset("synthetic", n=1, size=64)[0].image).permute(2, 0, 1) / 255.0
    point = grid.configs()[0].diffcut_config()
    _, x = core.network_input(image, point, (64, 64))
    feats = capture(bb, x[None], layers="diffcut", timesteps=50, seed=42, image_size=64)["diffcut", 50][0]
    from diffcut_lab.ablation.engine import resolve_layer

    key = feature_key(model=model_fingerprint(bb), image=image_hash(x), size=64, timestep=50, seed=42, prompt="",
                      layer=resolve_layer(bb, "diffcut"), dtype=str(bb.dtype))  # fmt: skip
    assert torch.equal(store.get(key), feats.float())


def test_tau_sweep_by_pruning_equals_separate_runs(tiny_dir):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64}, alphas=[10.0], taus=[0.2, 0.4, 0.6])
    swept = run_ablation(grid, out=None, progress=False)
    singles = pd.concat(
        [
            run_ablation(
                small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64}, alphas=[10.0], taus=[t]),
                out=None,
                progress=False,
            )
            for t in (0.2, 0.4, 0.6)
        ]
    )
    from diffcut_lab.ablation.store import sort_rows

    pd.testing.assert_frame_equal(stable(swept), stable(sort_rows(singles)))
    assert swept.groupby("tau")["n_segments"].mean().is_monotonic_increasing


# ----------------------------------------------------------------------------------------------------
# results, resume, interruption


def test_rows_schema_and_summary(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, refines=["none", "median"], methods=["diffcut", "kmeans"],
                      method_kwargs={"kmeans": {"n_clusters": 3}})  # fmt: skip
    df = run_ablation(grid, out=tmp_path / "r.parquet", progress=False)
    assert len(df) == 3 * len(grid)
    assert set(df["image"]) == {f"scene-{2_000_000 + i}" for i in range(3)}
    back = pd.read_parquet(tmp_path / "r.parquet")  # readable as one table by plain pandas
    assert len(back) == len(df)
    s = summarize(df)
    assert len(s) == len(grid) and (s["n_images"] == 3).all()
    # the dataset-level mIoU accumulates counts over images (not a mean of per-image scores)
    row = s.iloc[0]
    g = df[df["config_id"] == config_id(row.to_dict())]
    tp, fp, fn = (np.sum(np.stack(g[c].to_list()), 0) for c in ("tp", "fp", "fn"))
    with np.errstate(invalid="ignore", divide="ignore"):
        expect = np.nanmean(np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan))
    assert row["miou"] == pytest.approx(expect)
    assert (df["n_pixels"] == 64 * 64).all()
    assert ((df["miou_image"] >= 0) & (df["miou_image"] <= 1)).all()
    # pooled summaries
    by_method = summarize(df, by=["method"])
    assert set(by_method["method"]) == {"diffcut", "kmeans"}


def test_resume_skips_done_configs_and_extends(tiny_dir, tmp_path):
    out = tmp_path / "r.parquet"
    part = small_grid(tiny_dir, dataset_kwargs={"n": 3, "size": 64}, limit=2, taus=[0.4])
    run_ablation(part, out=out, progress=False)
    n_parts = len(ResultStore(out).parts())
    assert n_parts == 2
    # same command again: nothing to do
    run_ablation(part, out=out, progress=False)
    assert len(ResultStore(out).parts()) == n_parts
    # a bigger grid (more images, more taus): only the missing rows are computed
    full = small_grid(tiny_dir, dataset_kwargs={"n": 3, "size": 64})
    resumed = run_ablation(full, out=out, progress=False)
    assert len(resumed) == 3 * len(full)
    assert not resumed.duplicated(["image", "config_id"]).any()
    fresh = run_ablation(full, out=None, progress=False)
    pd.testing.assert_frame_equal(stable(resumed), stable(fresh))


def test_failing_unit_keeps_finished_rows(tiny_dir, tmp_path, monkeypatch):
    from diffcut_lab.ablation import engine

    out = tmp_path / "r.parquet"
    grid = small_grid(tiny_dir)
    real = engine.compute_unit
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure")
        return real(*args, **kw)

    monkeypatch.setattr(engine, "compute_unit", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        run_ablation(grid, out=out, progress=False)
    assert len(ResultStore(out).read()) == len(grid)  # the first image's rows survived
    monkeypatch.setattr(engine, "compute_unit", real)
    done = run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(done), stable(run_ablation(grid, out=None, progress=False)))


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 8, "size": 64}, taus=[0.3, 0.5, 0.7])
    cfg = grid.to_yaml(tmp_path / "grid.yaml")
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "diffcut_lab", "ablate", str(cfg), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(ResultStore(out).parts()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        f"run ended before it could be killed: {proc.communicate()[1].decode()[-2000:]}"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    n_before = len(ResultStore(out).read())
    assert 0 < n_before < 8 * len(grid)  # killed mid-way, whole units only
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = ResultStore(out).read()
    assert len(resumed) == 8 * len(grid) and not resumed.duplicated(["image", "config_id"]).any()
    assert not list(out.glob(".*.tmp"))  # a killed writer never leaves a visible half part
    reference = run_ablation(grid, out=None, progress=False)
    pd.testing.assert_frame_equal(stable(resumed), stable(reference))


def test_ablate_command_prints_best(tiny_dir, tmp_path, capsys):
    from diffcut_lab.cli import main

    cfg = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}).to_yaml(tmp_path / "g.yaml")
    assert (
        main(["ablate", str(cfg), "--out", str(tmp_path / "o.parquet"), "--no-progress", "--top", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "4 rows (4 configurations x 1 images)" in out
    lines = out.splitlines()
    assert lines[1] == "best 3 by mIoU (pooled over images, 0-1):" and "mIoU" in lines[2].split()
    assert all(0 <= float(line.split()[-2]) <= 1 for line in lines[3:6])  # mIoU as a fraction


def test_ablate_command_says_its_plan_progress_and_what_a_resume_skips(tiny_dir, tmp_path, capsys):
    from diffcut_lab.ablation.worker import load_grid_dataset
    from diffcut_lab.cli import main

    grid = small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64})
    cfg, out = grid.to_yaml(tmp_path / "g.yaml"), tmp_path / "o.parquet"
    first, second = load_grid_dataset(grid).names
    assert main(["ablate", str(cfg), "--out", str(out), "--limit", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{grid.name}: 4 configurations x 1 images = 4 rows in {out}; 0 done before, 4 to compute "
                      "(1 image units, executor local)")  # fmt: skip
    assert err[1] == f"{grid.name}: 1/1 {first} (4/4 rows)"
    assert main(["ablate", str(cfg), "--out", str(out)]) == 0  # the second image is new, the first is stored
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(
        "= 8 rows in " + str(out) + "; 4 done before, 4 to compute (1 image units, executor local)"
    )
    assert err[1] == f"{grid.name}: 2/2 {second} (4/4 rows)"


# ----------------------------------------------------------------------------------------------------
# plots


def test_plots(tiny_dir):
    from diffcut_lab.viz.ablation_plots import method_bars, miou_heatmap, sensitivity

    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}, timesteps=[10, 50], methods=["diffcut", "kmeans"],
                      method_kwargs={"kmeans": {"n_clusters": 3}})  # fmt: skip
    df = run_ablation(grid, out=None, progress=False)
    s = summarize(df)
    heat = miou_heatmap(df)
    z = np.asarray(heat.data[0].z)
    assert z.shape == (1, 2)
    best = s[s["timestep"] == 10]["miou"].max()
    assert z[0, 0] == pytest.approx(best)  # a fraction, like every mIoU
    sens = sensitivity(s, select={"timestep": 50})
    assert len(sens.data) == 2 and list(sens.data[0].x) == [0.3, 0.5]
    fig7 = sensitivity(df, x="timestep", color="method")
    assert {t.name for t in fig7.data} == {"method=diffcut", "method=kmeans"}
    bars = method_bars(df)
    assert {tuple(t.x) for t in bars.data} == {("diffcut", "kmeans")}
    with pytest.raises(ValueError, match="no rows"):
        miou_heatmap(df, select={"method": "spectral"})


# --------------------------------------------------------------------------------------------- trust


def test_one_writer_per_results_directory(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}, alphas=[10.0], taus=[0.5])
    out = tmp_path / "r.parquet"
    with ResultStore(out).lock():  # another run holds it
        with pytest.raises(ParameterError, match="another ablation run is writing"):
            run_ablation(grid, out=out, progress=False)
    assert not ResultStore(out).parts()
    assert len(run_ablation(grid, out=out, progress=False)) == len(grid)  # free again


def test_duplicate_rows_on_disk_are_read_and_summarised_once(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64}, alphas=[10.0], taus=[0.5])
    out = tmp_path / "r.parquet"
    rows = run_ablation(grid, out=out, progress=False)
    for part in ResultStore(out).parts():  # as two unlocked runs used to leave it
        shutil.copy(part, part.with_name(part.name.replace("part-", "part-copy")))
    assert len(pd.read_parquet(out)) == 2 * len(rows)
    again = ResultStore(out).read()
    assert len(again) == len(rows)
    summary = summarize(pd.read_parquet(out))
    assert summary["n_images"].tolist() == [2] * len(grid)
    pd.testing.assert_series_equal(summary["miou"], summarize(rows)["miou"])


def test_results_of_other_data_are_never_mixed(tiny_dir, tmp_path):
    out = tmp_path / "r.parquet"
    a = small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64}, alphas=[10.0], taus=[0.5])
    b = small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 48}, alphas=[10.0], taus=[0.5])
    run_ablation(a, out=out, progress=False)
    with pytest.raises(ParameterError, match="other data"):
        run_ablation(b, out=out, progress=False)
    # rows carry the data they were computed on: the same settings on other data is another configuration
    assert not {c.id for c in a.configs()} & {c.id for c in b.configs()}
    fresh = run_ablation(b, out=tmp_path / "b.parquet", progress=False)
    assert set(fresh["data"]) == {b.data_key()} != {a.data_key()}


def test_a_corrupt_part_is_quarantined_and_recomputed(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 2, "size": 64}, alphas=[10.0], taus=[0.5])
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    bad = ResultStore(out).parts()[0]
    bad.write_bytes(bad.read_bytes()[:100])  # a copy cut short
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        again = run_ablation(grid, out=out, progress=False)
    assert (out / "_quarantine" / f"{bad.name}.bad").exists() and not bad.exists()
    pd.testing.assert_frame_equal(stable(again), stable(first))
    pd.testing.assert_frame_equal(
        stable(sort_rows(pd.read_parquet(out))), stable(first)
    )  # readers skip the quarantine


def test_a_feature_cache_entry_under_the_wrong_key_is_not_believed(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}, timesteps=[10, 50], alphas=[10.0],
                      taus=[0.5])  # fmt: skip
    cache = tmp_path / "c"
    first = run_ablation(grid, out=None, cache_dir=cache, progress=False)
    a, b = sorted(cache.rglob("*.safetensors"))  # swap the two timesteps' files
    tmp = a.with_suffix(".x")
    a.rename(tmp), b.rename(a), tmp.rename(b)
    with pytest.warns(RuntimeWarning, match="holds another feature map"):
        again = run_ablation(grid, out=None, cache_dir=cache, progress=False)
    assert not again["features_cached"].any()
    pd.testing.assert_frame_equal(stable(again), stable(first))


def test_a_feature_cache_sidecar_that_does_not_match_is_refused(tmp_path):
    from diffcut_lab.hooks import FeatureCache

    f10, f50 = torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3)
    cache = FeatureCache({("l", 10): f10, ("l", 50): f50}, layers=["l"], timesteps=[10, 50], meta={})
    path = cache.save(tmp_path / "c")
    torch.testing.assert_close(FeatureCache.load(path)["l", 50], f50)
    sidecar = path.with_suffix(".json")
    data = yaml.safe_load(sidecar.read_text())
    data["keys"] = {k: [v[0], 60 - v[1]] for k, v in data["keys"].items()}  # the timesteps swapped
    sidecar.write_text(__import__("json").dumps(data))
    with pytest.raises(dl_errors.FeatureError, match="does not describe the tensors"):
        FeatureCache.load(path)
    sidecar.write_text('{"format": "diffcut_lab.FeatureCache", "keys": 3}')
    with pytest.raises(dl_errors.FeatureError, match="malformed"):
        FeatureCache.load(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("seed", 1.5, "'seed' must be an integer"), ("seed", "abc", "'seed' must be an integer"),
     ("limit", "2", "'limit' must be an integer"), ("limit", 2.5, "'limit' must be an integer"),
     ("label_size", -8, "'label_size' must be an integer >= 1"), ("image_size", 0, "'image_size'"),
     ("taus", [5.0], "tau must satisfy"), ("dataset_kwargs", 3, "must be a mapping")],
)  # fmt: skip
def test_grid_values_are_checked_with_clear_messages(field, value, message):
    with pytest.raises(ParameterError, match=message):
        AblationGrid(dataset="synthetic", **{field: value})


def test_grid_repeats_are_one_configuration_and_huge_studies_warn(monkeypatch):
    g = AblationGrid(
        dataset="synthetic", taus=[0.5, 0.3, 0.5], alphas=[10, 10.0], methods=["diffcut", "kmeans"]
    )
    assert g.taus == (0.5, 0.3) and g.alphas == (10.0,)
    assert len(g) == len(g.configs()) == len({c.id for c in g.configs()}) == 3
    with pytest.raises(ParameterError, match="takes no argument"):
        run_ablation(AblationGrid(dataset="synthetic", dataset_kwargs={"sizes": 3}), out=None, progress=False)
    huge = AblationGrid(dataset="synthetic", dataset_kwargs={"n": 20}, taus=[0.1 + i / 1000 for i in range(1000)],
                        alphas=[float(a) for a in range(1, 61)], limit=20)  # fmt: skip
    assert len(huge) == 60_000
    import diffcut_lab.ablation.runner as runner

    monkeypatch.setattr(runner, "_run", lambda *a: "not run")  # the warning comes before any work
    with pytest.warns(RuntimeWarning, match="1,200,000 results"):
        assert run_ablation(huge, out=None, progress=False) == "not run"


def _dies_once(task: dict) -> pd.DataFrame:
    """A unit that kills its worker process the first time it runs (a crash, the OOM killer)."""
    marker = Path(task["marker"])
    if task["die"] and not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return pd.DataFrame({"unit": [task["i"]]})


def test_a_dead_worker_process_is_replaced_and_its_units_run_again(tmp_path):
    from diffcut_lab.ablation.executors import _processes

    tasks = [{"i": i, "die": i == 2, "marker": str(tmp_path / "marker")} for i in range(5)]
    got: list[int] = []
    with pytest.warns(RuntimeWarning, match="worker process died"):
        _processes(tasks, lambda rows: got.extend(rows["unit"]), workers=2, fn=_dies_once)
    assert sorted(got) == list(range(5))  # every unit once: none lost, none twice


def test_an_unreachable_dask_scheduler_is_a_clear_error():
    from diffcut_lab.ablation.executors import execute

    with pytest.raises(ParameterError, match="cannot reach the Dask scheduler"):
        execute([{"x": 1}], lambda rows: None, scheduler="tcp://127.0.0.1:9")


def test_a_full_cache_disk_does_not_stop_the_study(tiny_dir, tmp_path, monkeypatch):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}, alphas=[10.0], taus=[0.5])

    def full(self, key, tensor, meta=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FeatureStore, "put", full)
    with pytest.warns(RuntimeWarning, match="continuing without"):
        rows = run_ablation(grid, out=tmp_path / "r.parquet", cache_dir=tmp_path / "c", progress=False)
    assert len(rows) == len(grid)


def test_a_half_written_part_of_a_killed_writer_is_removed_on_the_next_run(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}, alphas=[10.0], taus=[0.5])
    out = tmp_path / "r.parquet"
    out.mkdir()
    (out / ".part-0123.parquet.tmp").write_bytes(b"PAR1 cut short")  # killed while writing
    rows = run_ablation(grid, out=out, progress=False)
    assert len(rows) == len(grid) and not list(out.glob(".*.tmp"))
