"""Untrusted data on disk: feature-cache entries, result parts, grid files and output paths."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from rows import stable

from diffcut_lab.ablation import AblationGrid, run_ablation
from diffcut_lab.ablation.store import sort_rows
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
    assert (meta_a["layer"], meta_a["timestep"], meta_a["size"]) == (
        meta_b["layer"],
        meta_b["timestep"],
        meta_b["size"],
    )
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
    with pytest.warns(
        RuntimeWarning, match=r"k2k2.* holds another feature map \(it was written under another key"
    ):
        assert store.get("k2" * 32, expect=meta) is None


def test_a_full_cache_disk_reported_by_safetensors_is_a_warning_and_the_study_goes_on(
    tiny_dir, tmp_path, monkeypatch
):
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


# ----------------------------------------------------------------------------------------------------
# result parts (item 6)


def _corrupt_a_data_page(part) -> None:
    """Flip bytes inside the first column chunk's pages, leaving the footer intact."""
    import pyarrow.parquet as pq

    col = pq.read_metadata(part).row_group(0).column(0)
    start = col.data_page_offset
    data = bytearray(part.read_bytes())
    for i in range(start + 8, start + col.total_compressed_size):
        data[i] ^= 0x5A
    part.write_bytes(bytes(data))
    assert pq.read_metadata(part).num_rows > 0  # the footer still reads


def test_a_quarantined_part_stays_out_of_pandas_read_parquet(tiny_dir, tmp_path):
    from diffcut_lab.ablation.store import ResultStore

    grid = small_grid(tiny_dir)
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    bad = ResultStore(out).parts()[0]
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=f"{bad.name} cannot be read"):
        run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(sort_rows(pd.read_parquet(out))), stable(first))
    assert not list(out.rglob("*/*.parquet"))  # nothing a recursive glob of parts would pick up


def test_a_part_with_a_corrupt_data_page_and_an_intact_footer_is_quarantined(tiny_dir, tmp_path):
    from diffcut_lab.ablation.store import ResultStore

    grid = small_grid(tiny_dir)
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    bad = ResultStore(out).parts()[0]
    _corrupt_a_data_page(bad)
    with pytest.warns(RuntimeWarning, match=f"{bad.name} cannot be read"):
        again = run_ablation(grid, out=out, progress=False)
    assert (out / "_quarantine" / f"{bad.name}.bad").exists() and not bad.exists()
    pd.testing.assert_frame_equal(stable(again), stable(first))


def test_a_foreign_schema_part_is_quarantined_with_its_name(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir)
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    foreign = out / "part-foreign.parquet"
    pd.DataFrame({"model": [1, 2], "x": ["a", "b"]}).to_parquet(foreign)
    with pytest.warns(RuntimeWarning, match="part-foreign.parquet is not a part of these results"):
        again = run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(again), stable(first))
    retyped = out / "part-retyped.parquet"
    frame = pd.read_parquet(out)
    frame["timestep"] = frame["timestep"].astype(str) + "x"  # the right columns, one of another type
    frame.to_parquet(retyped)
    with pytest.warns(RuntimeWarning, match=r"part-retyped.parquet is not a part .*timestep \(\w*string"):
        again = run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(again), stable(first))
    assert sorted(p.name for p in (out / "_quarantine").iterdir()) == [
        "part-foreign.parquet.bad",
        "part-retyped.parquet.bad",
    ]


def test_a_part_that_cannot_be_quarantined_is_a_clear_error_naming_it(tiny_dir, tmp_path, monkeypatch):
    import os

    from diffcut_lab.ablation.store import ResultStore
    from diffcut_lab.errors import ParameterError

    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    out = tmp_path / "r.parquet"
    run_ablation(grid, out=out, progress=False)
    bad = ResultStore(out).parts()[0]
    _corrupt_a_data_page(bad)
    real = os.replace

    def refuse(src, dst):
        if str(dst).endswith(".bad"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ParameterError, match=f"{bad.name} cannot be read.*, and it cannot be moved"):
        run_ablation(grid, out=out, progress=False)


def test_a_quarantine_folder_of_an_older_version_is_moved_out_of_the_readers_way(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    (out / "quarantine").mkdir()
    (out / "quarantine" / "part-old.parquet").write_bytes(b"PAR1 cut short")
    run_ablation(grid, out=out, progress=False)
    assert (out / "_quarantine" / "part-old.parquet.bad").exists() and not (out / "quarantine").exists()
    pd.testing.assert_frame_equal(stable(sort_rows(pd.read_parquet(out))), stable(first))


def test_every_resume_reads_parts_whole_and_parts_carry_page_checksums(tiny_dir, tmp_path):
    import pyarrow.parquet as pq

    from diffcut_lab.ablation.store import ResultStore

    out = tmp_path / "r.parquet"
    run_ablation(small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64}), out=out, progress=False)
    (part,) = ResultStore(out).parts()
    # a single flipped byte in an uncompressed page is caught only by its checksum
    table = pq.read_table(part)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain, compression="none", write_page_checksum=True)
    data = bytearray(plain.read_bytes())
    col = pq.read_metadata(plain).row_group(0).column(0)
    data[col.data_page_offset + col.total_compressed_size - 3] ^= 0x01
    shutil.copy(plain, part)
    part.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=f"{part.name} cannot be read"):
        assert ResultStore(out).parts() == []


# ----------------------------------------------------------------------------------------------------
# grid files: one clear line each


@pytest.mark.parametrize(
    ("text", "message"),
    [(b"dataset: synthetic\nmodels: [pocket\n", r"g\.yaml is not valid YAML: expected ',' or '\]'.* at line 3"),
     (b"dataset: synth\xe9tic\n", r"g\.yaml is not UTF-8 text \(byte 0xe9 at offset 14\)"),
     (b"dataset: synthetic\nmethod_kwargs: {kmeans: 5}\n", r"method_kwargs\['kmeans'\] must be a mapping"),
     (b"dataset: synthetic\nx: !!python/object:os.system {}\n", r"g\.yaml is not valid YAML")],
)  # fmt: skip
def test_bad_grid_files_are_one_line_errors(tmp_path, text, message):
    from diffcut_lab.errors import ParameterError

    path = tmp_path / "g.yaml"
    path.write_bytes(text)
    with pytest.raises(ParameterError, match=message) as info:
        AblationGrid.from_yaml(path)
    assert "\n" not in str(info.value)


def test_bad_grid_files_end_the_command_with_rc_2_and_one_line(tmp_path, capsys):
    from diffcut_lab.cli import main

    path = tmp_path / "g.yaml"
    path.write_bytes(b"dataset: synthetic\nmethod_kwargs: {kmeans: 5}\n")
    assert main(["ablate", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method_kwargs['kmeans']" in err


def test_an_unparsable_grid_description_in_out_is_a_warning_and_the_rows_are_checked(tiny_dir, tmp_path):
    from diffcut_lab.errors import ParameterError

    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    (out / "_grid.yaml").write_bytes(b"dataset: [unclosed\n")
    with pytest.warns(RuntimeWarning, match=r"_grid\.yaml cannot be read .*not valid YAML"):
        again = run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(again), stable(first))
    assert AblationGrid.from_yaml(out / "_grid.yaml") == grid  # written again
    (out / "_grid.yaml").write_bytes(b"\xff\xfe not text")
    other = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 48})
    with pytest.warns(RuntimeWarning, match="not UTF-8"), pytest.raises(ParameterError, match="other data"):
        run_ablation(other, out=out, progress=False)


# ----------------------------------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize("grid", [(-8, -8), (8, 8.5), (True, 64), "ab", 5, (0, 0)])
def test_recursive_ncut_refuses_a_grid_that_is_not_two_positive_integers(grid):
    import diffcut_lab as dl
    from diffcut_lab.errors import ParameterError

    w = torch.rand(64, 64)
    w = (w + w.T) / 2
    with pytest.raises(ParameterError, match="grid must be \\(h, w\\), two integers >= 1"):
        dl.recursive_ncut(w, tau=0.5, grid=grid)
    assert dl.recursive_ncut(w, tau=0.5, grid=(4, 16)).labels.shape == (4, 16)


# ----------------------------------------------------------------------------------------------------
# feature cache files: the sidecar's aliases


def _saved_cache(tmp_path):
    import json

    from diffcut_lab.feature_cache import FeatureCache

    cache = FeatureCache({("l", 10): torch.zeros(1, 2, 3, 3)}, layers=["l"], timesteps=[10],
                         aliases={"diffcut": "l"})  # fmt: skip
    path = cache.save(tmp_path / "c")
    sidecar = path.with_suffix(".json")
    return FeatureCache, path, sidecar, json.loads(sidecar.read_text())


@pytest.mark.parametrize(
    ("aliases", "message"),
    [({"diffcut": "other"}, r"maps the alias\(es\) \{'diffcut': 'other'\} to layers that are not in the cache"),
     ([1], "'aliases' must map names to layer names"), ({"diffcut": 3}, "'aliases' must map names")],
)  # fmt: skip
def test_a_sidecar_alias_to_a_missing_layer_is_refused_on_load(tmp_path, aliases, message):
    import json

    from diffcut_lab.errors import FeatureError

    FeatureCache, path, sidecar, data = _saved_cache(tmp_path)
    assert FeatureCache.load(path)["diffcut", 10].shape == (1, 2, 3, 3)
    sidecar.write_text(json.dumps({**data, "aliases": aliases}))
    with pytest.raises(FeatureError, match=message):
        FeatureCache.load(path)


def test_an_alias_to_a_layer_not_captured_says_so_without_contradiction():
    from diffcut_lab.errors import UnknownLayerError
    from diffcut_lab.feature_cache import FeatureCache

    cache = FeatureCache({("l", 10): torch.zeros(1, 2, 3, 3)}, layers=["l"], timesteps=[10],
                         aliases={"diffcut": "other"})  # fmt: skip
    with pytest.raises(UnknownLayerError) as info:
        cache["diffcut"]
    text = str(info.value)
    assert "'diffcut' stands for the layer 'other'" in text and "captured: 'l'" in text
    assert text.count("'diffcut'") == 1  # not also listed as captured


def test_a_result_part_that_cannot_be_written_is_an_error_naming_it(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from diffcut_lab.ablation.store import SCHEMA, ResultStore

    def full(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1")
        raise OSError("IOError: No space left on device")  # as pyarrow raises it: no errno, no file name

    monkeypatch.setattr(pq, "write_table", full)
    store = ResultStore(tmp_path / "r.parquet")
    rows = pa.Table.from_pylist([{"model": "m", "image": "i", "config_id": "c"}], schema=SCHEMA).to_pandas()
    with pytest.raises(OSError, match=r"cannot write a result part .*No space left") as info:
        store.write(rows)
    assert info.value.filename and "part-" in info.value.filename
    assert not [p for p in (tmp_path / "r.parquet").iterdir()]  # nothing half-written left


def test_a_damaged_feature_cache_entry_is_recomputed_not_used(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    cache = tmp_path / "c"
    first = run_ablation(grid, out=None, cache_dir=cache, progress=False)
    ((entry, _),) = _entries(cache)
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0x40  # one bit of one feature value (a disk error; the file still reads)
    entry.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="is damaged"):
        again = run_ablation(grid, out=None, cache_dir=cache, progress=False)
    assert not again["features_cached"].any()
    pd.testing.assert_frame_equal(stable(again), stable(first))
    assert run_ablation(grid, out=None, cache_dir=cache, progress=False)["features_cached"].all()  # rewritten


def test_quarantined_files_of_one_name_never_replace_each_other(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    out = tmp_path / "r.parquet"
    run_ablation(grid, out=out, progress=False)
    for content in (b"first foreign file", b"second foreign file"):
        (out / "part-x.parquet").write_bytes(content)
        with pytest.warns(RuntimeWarning, match="part-x.parquet cannot be read"):
            run_ablation(grid, out=out, progress=False)
    kept = sorted(p.read_bytes() for p in (out / "_quarantine").iterdir())
    assert kept == [b"first foreign file", b"second foreign file"]


def test_a_folder_under_a_part_name_is_quarantined(tiny_dir, tmp_path):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    nested = out / "part-nested.parquet"
    nested.mkdir()
    for part in out.glob("part-*.parquet"):
        if part != nested:
            shutil.copy(part, nested / part.name)  # its rows twice, if it were read as a dataset
    with pytest.warns(RuntimeWarning, match="part-nested.parquet is not a file"):
        again = run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(again), stable(first))
    assert (out / "_quarantine" / "part-nested.parquet.bad").is_dir()
    assert len(pd.read_parquet(out)) == len(first)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("config_id", "has rows without config_id"),
        ("tp", "has rows whose 'tp' counts do not have one entry per class"),
    ],
)
def test_a_part_with_impossible_rows_is_quarantined(tiny_dir, tmp_path, change, message):
    grid = small_grid(tiny_dir, dataset_kwargs={"n": 1, "size": 64})
    out = tmp_path / "r.parquet"
    first = run_ablation(grid, out=out, progress=False)
    forged = pd.read_parquet(out)
    forged["image"] = "another"  # rows of their own, so only the check can keep them out
    if change == "config_id":
        forged["config_id"] = None
    else:
        forged["tp"] = [[1, 2]] * len(forged)
    forged.to_parquet(out / "part-forged.parquet")
    with pytest.warns(RuntimeWarning, match=f"part-forged.parquet {message}"):
        again = run_ablation(grid, out=out, progress=False)
    pd.testing.assert_frame_equal(stable(again), stable(first))


def test_saving_a_feature_cache_on_a_full_disk_is_an_oserror_naming_it(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    from diffcut_lab.feature_cache import FeatureCache

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 10)
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cache = FeatureCache({("l", 10): torch.zeros(1, 2, 3, 3)}, layers=["l"], timesteps=[10])
    with pytest.raises(OSError, match="StorageFull") as info:
        cache.save(tmp_path / "c")
    assert info.value.filename == str(tmp_path / "c.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written, no sidecar without its tensors
