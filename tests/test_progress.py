"""How long work reports itself: plain lines in a log, resumed counts, and the report's progress file."""

from __future__ import annotations

import io

from diffcut_lab.progress import PROGRESS_ENV, Progress, track, watch


def test_a_log_gets_one_line_per_item_counting_what_was_done_before():
    out = io.StringIO()  # not a terminal: plain lines, no carriage returns
    with Progress(2, "study", initial=3, stream=out) as bar:
        bar.advance("a.png")
        bar.advance("b.png")
    assert out.getvalue().splitlines() == ["study: 4/5 a.png", "study: 5/5 b.png"]
    assert "\r" not in out.getvalue()


def test_quiet_prints_nothing():
    out = io.StringIO()
    with Progress(3, "x", quiet=True, stream=out) as bar:
        bar.advance("a")
    assert out.getvalue() == "" and bar.done == 1


def test_track_is_plain_iteration_outside_a_report(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert list(track({"a": 1, "b": 2}.items())) == [("a", 1), ("b", 2)]


def test_track_reports_each_finished_item_to_the_watching_command(monkeypatch, tmp_path):
    path = tmp_path / "progress.tsv"
    monkeypatch.setenv(PROGRESS_ENV, str(path))
    out = io.StringIO()
    with Progress(2, "report", stream=out) as bar, watch(path, bar, interval=0.01):
        for name, _ in track({"d1/a.png": 1, "odd\nname.png": 2}.items()):
            assert not out.getvalue().count(name)  # reported once finished, not when started
    assert out.getvalue().splitlines() == ["report: 1/2 d1/a.png", "report: 2/2 odd name.png"]


def test_track_never_stops_the_work_when_the_progress_file_cannot_be_written(monkeypatch, tmp_path):
    monkeypatch.setenv(PROGRESS_ENV, str(tmp_path / "missing-dir" / "progress.tsv"))
    assert list(track(["a", "b"])) == ["a", "b"]
