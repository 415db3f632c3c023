"""Untrusted data on disk: feature-cache entries, result parts, grid files and output paths."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from rows import stable

from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.feature_cache import FeatureStore


def small_grid(model, **kw) -> AblationGrid:
    base = dict(
        dataset="synthetic", dataset_kwargs={"n": 2, "size": 64}, models=[str(model)], layers=["diffcut"],
        timesteps=[50], alphas=[10.0], taus=[0.5], refines=["none"], label_size=64,
    )  # fmt: skip
    base.update(kw)
    return AblationGrid(**base)


def _entries(cache) -> list:
    from safetensors import safe_open

    out = []
    for p in sorted(cache.rglob("*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            out.append((p, f.metadata()))
    return out


# ----------------------------------------------------------------------------------------------------
# feature cache (item 5)


def test_a_feature_cache_entry_copied_from_another_image_is_not_believed(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir)
    cache = tmp_path / "c"
    first = run_ablation(grid, out=None, cache_dir=cache, progress=False)
    (a, meta_a), (b, meta_b) = _entries(cache)  # one entry per image, same layer, timestep and size
    assert (meta_a["layer"], meta_a["timestep"], meta_a["size"]) == (meta_b["layer"], meta_b["timestep"], meta_b["size"])
    assert meta_a["image"] != meta_b["image"]
    shutil.copy(a, b)  # image A's features under image B's key
    with pytest.warns(RuntimeWarning, match="holds another feature map"):
        again = run_ablation(grid, out=None, cache_dir=cache, progress=False)
    assert again["features_cached"].tolist().count(True) == 1  # image A's own entry only
    pd.testing.assert_frame_equal(stable(again), stable(first))


def test_a_feature_store_entry_is_checked_against_its_key_and_image(tmp_path):
    store = FeatureStore(tmp_path)
    x = torch.arange(6.0).reshape(1, 2, 3)
    meta = {"image": "aaa", "layer": "l", "timestep": 50, "size": 64}
    store.put("k1" * 32, x, meta)
    assert torch.equal(store.get("k1" * 32, expect=meta), x)
    with pytest.warns(RuntimeWarning, match="holds another feature map"):
        assert store.get("k1" * 32, expect={**meta, "image": "bbb"}) is None
    store.path("k2" * 32).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(store.path("k1" * 32), store.path("k2" * 32))  # copied under another key, same metadata
    with pytest.warns(RuntimeWarning, match=r"k2k2.* holds another feature map \(it was written under another key"):
        assert store.get("k2" * 32, expect=meta) is None


def test_a_full_cache_disk_reported_by_safetensors_is_a_warning_and_the_study_goes_on(tiny_dir, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # a half-written file, then the error safetensors raises
            f.write(b"\0" * 10)
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    with pytest.warns(RuntimeWarning, match="continuing without"):
        rows = run_ablation(grid, out=tmp_path / "r.parquet", cache_dir=tmp_path / "c", progress=False)
    assert len(rows) == len(grid)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]  # no half-written entry left


def test_a_full_cache_disk_message_names_the_entry(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    store = FeatureStore(tmp_path)
    with pytest.raises(OSError, match="StorageFull") as info:
        store.put("ab" * 32, torch.zeros(1, 2, 2))
    assert info.value.filename == str(store.path("ab" * 32))
