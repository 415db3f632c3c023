"""``diffcut-lab segment`` on a tiny local model directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffcut_lab import cli
from diffcut_lab.commands.segment import collect_images, save_labels
from diffcut_lab.errors import ImageInputError


@pytest.fixture()
def images(tmp_path):
    a = np.full((48, 40, 3), 30, np.uint8)
    a[:, 20:] = (220, 210, 40)
    b = np.zeros((30, 50), np.uint8)
    b[10:20, 10:40] = 255
    (tmp_path / "in").mkdir()
    pa, pb = tmp_path / "in" / "a.png", tmp_path / "in" / "b.jpg"
    Image.fromarray(a).save(pa)
    Image.fromarray(b).save(pb)
    return pa, pb


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_writes_labels_overlays_and_settings(tiny_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["segment", *map(str, images), "--model", str(tiny_dir), "--tau", "0.5", "--refine", "pamr"]
    code, stdout, err = _run([*argv, "--pamr-iter", "3", "--out", str(out)], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("segment: 2 image(s) with ") and lines[0].endswith(f"-> {out}/"), lines[0]
    assert [ln.split(" -> ")[0] for ln in lines[1:3]] == [
        f"segment: 1/2 {images[0]}",
        f"segment: 2/2 {images[1]}",
    ]
    assert lines[3].startswith(f"wrote 2 segmentation(s) and settings.json to {out}/ in "), lines[3]
    assert len(lines) == 4 and not stdout
    la = np.asarray(Image.open(out / "a_labels.png"))
    lb = np.asarray(Image.open(out / "b_labels.png"))
    assert la.shape == (48, 40) and la.dtype == np.uint8
    assert lb.shape == (30, 50)
    ov = np.asarray(Image.open(out / "a_overlay.png"))
    assert ov.shape == (48, 40, 3)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["config"]["tau"] == 0.5 and settings["config"]["refine"] == "pamr"
    assert settings["config"]["pamr_iter"] == 3
    assert settings["layer"].endswith("attn1")
    assert [r["labels"] for r in settings["images"]] == ["a_labels.png", "b_labels.png"]
    assert settings["images"][0]["n_segments"] == len(np.unique(la))
    assert settings["images"][1]["size"] == [30, 50]


def test_segment_directory_mask_size_and_duplicate_names(tiny_dir, images, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(other / "a.png")
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(other / "a_1.png")
    out = tmp_path / "out2"
    argv = ["segment", str(images[0].parent), str(other / "a.png"), str(other / "a_1.png"), "--model",
            str(tiny_dir)]  # fmt: skip
    code, _, err = _run(
        [*argv, "--mask-size", "16", "--refine", "none", "--out", str(out), "--quiet"], capsys
    )
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    expected = ["a_labels.png", "a_overlay.png", "b_labels.png", "b_overlay.png", "settings.json"]
    # a second a.png and an a_1.png: every input keeps its own files (a counter alone would collide)
    assert names == sorted([*expected, "a_png_labels.png", "a_png_overlay.png", "a_1_labels.png",
                            "a_1_overlay.png"])  # fmt: skip
    assert np.asarray(Image.open(out / "b_labels.png")).shape == (16, 16)
    records = json.loads((out / "settings.json").read_text())["images"]
    assert len({r["labels"] for r in records}) == len({r["image"] for r in records}) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tau", "0"], "tau"),
        (["--tau", "5"], "tau"),
        (["--alpha", "-1"], "alpha"),
        (["--layer", "down_blocks.7.bogus"], "bogus"),
        (["--timestep", "5000"], "timestep"),
        (["--image-size", "50"], "multiples"),
    ],
)
def test_segment_errors_exit_2(tiny_dir, images, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    code, _, err = _run(
        ["segment", str(images[0]), "--model", str(tiny_dir), "--out", str(out), *extra], capsys
    )
    assert code == 2
    assert "diffcut-lab segment: error:" in err and message in err
    assert not out.exists()


def test_segment_missing_image_fails_before_loading(tmp_path, capsys):
    code, _, err = _run(["segment", str(tmp_path / "nope.png"), "--model", "/no/such/model"], capsys)
    assert code == 2 and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageInputError, match="no image"):
        collect_images([str(empty)])


def test_save_labels_16_bit(tmp_path):
    lab = np.arange(300 * 2).reshape(20, 30) % 300
    save_labels(lab, tmp_path / "l.png")
    back = np.asarray(Image.open(tmp_path / "l.png"))
    np.testing.assert_array_equal(back.astype(np.int64), lab)
    small = np.array([[0, 1], [2, 3]])
    save_labels(small, tmp_path / "s.png")
    assert np.asarray(Image.open(tmp_path / "s.png")).dtype == np.uint8


def test_a_bad_image_later_in_the_list_fails_before_any_work(tiny_dir, images, tmp_path, capsys):
    """Every input is read first; a failed run leaves the previous results of --out as they were."""
    out = tmp_path / "out3"
    code, _, err = _run(["segment", str(images[0]), "--model", str(tiny_dir), "--refine", "none", "--out",
                         str(out), "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "zz_bad.png"
    bad.write_bytes(b"not an image")
    many = [str(images[0])] * 5 + [str(images[1]), str(bad)]
    code, _, err = _run(["segment", *many, "--model", str(tiny_dir), "--batch-size", "2", "--out", str(out)],
                        capsys)  # fmt: skip
    assert code == 2 and "zz_bad.png" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".out3.*"))
    (tmp_path / "file").write_text("x")
    code, _, err = _run(["segment", str(images[0]), "--model", str(tiny_dir), "--out", str(tmp_path / "file")],
                        capsys)  # fmt: skip
    assert code == 2 and "is a file" in err


def test_an_interrupted_run_leaves_the_previous_results(tiny_dir, images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out4"
    assert _run(["segment", str(images[0]), "--model", str(tiny_dir), "--refine", "none", "--out", str(out),
                 "--quiet"], capsys)[0] == 0  # fmt: skip
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import diffcut_lab.commands.segment as seg_cmd

    calls = []

    def fail_on_second(labels, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(labels, path)

    original = seg_cmd.save_labels
    monkeypatch.setattr(seg_cmd, "save_labels", fail_on_second)
    code, _, _ = _run(["segment", str(images[0]), str(images[1]), "--model", str(tiny_dir), "--tau", "0.9",
                       "--batch-size", "1", "--out", str(out), "--quiet"], capsys)  # fmt: skip
    assert code == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".out4.*"))


def test_segment_refuses_what_the_feature_grid_cannot_take_before_any_image(tiny_dir, images, tmp_path, capsys,
                                                                           monkeypatch):  # fmt: skip
    """--n-segments above the grid's nodes: one line naming the grid, before the UNet runs; never clamped."""
    import diffcut_lab.capturing as capturing

    def no_forward(*a, **k):
        raise AssertionError("the UNet must not run when the grid cannot be cut")

    monkeypatch.setattr(capturing, "capture", no_forward)
    out = tmp_path / "never"
    code, _, err = _run(["segment", str(images[0]), "--model", str(tiny_dir), "--partition", "kway", "--n-segments",
                         "700", "--out", str(out)], capsys)  # fmt: skip
    assert code == 2 and not out.exists()
    line = err.strip().splitlines()[-1]
    assert line.startswith("diffcut-lab segment: error: n_segments=700") and "feature grid" in line
    assert "pass n_segments=" in line


def test_a_killed_runs_scratch_folder_is_removed_by_the_next_run(tiny_dir, images, tmp_path, capsys):
    """A run killed outright leaves its scratch folder; the next segment run in that folder removes it."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".out.diffcut-{pid}-0123abcd.tmp"
    stale.mkdir()
    (stale / ".owner").write_text(f"{pid} {__import__('socket').gethostname()}\n")
    (stale / "half_labels.png").write_bytes(b"partial")
    code, _, err = _run(["segment", str(images[0]), "--model", str(tiny_dir), "--out", str(tmp_path / "out"),
                         "--refine", "none"], capsys)  # fmt: skip
    assert code == 0, err
    assert not stale.exists() and not list(tmp_path.glob(".out.*"))


def test_one_segment_says_why_and_what_to_try(tiny_dir, images, tmp_path, capsys):
    out = tmp_path / "one"
    code, _, err = _run(["segment", str(images[0]), "--model", str(tiny_dir), "--tau", "0.001", "--refine", "none",
                         "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert "(1 segment: the first cut's NCut" in err and "1 segments" not in err
    record = json.loads((out / "settings.json").read_text())["images"][0]
    assert record["n_segments"] == 1 and "a tau of" in record["one_segment_reason"]
