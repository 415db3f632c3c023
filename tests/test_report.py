"""``diffcut-lab report``: early parameter checks, atomic output, and the HTML that comes out."""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import diffcut_lab as dl
from diffcut_lab.cli import main
from diffcut_lab.commands import report as rp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def images(tmp_path):
    from diffcut_lab.datasets.synthetic import make_scene

    paths = []
    for i, ext in enumerate(("png", "jpg")):
        p = tmp_path / f"scene{i}.{ext}"
        Image.fromarray(make_scene(i, size=96).image).save(p)
        paths.append(p)
    return paths


@pytest.fixture()
def no_papermill(monkeypatch):
    """Make any notebook execution fail loudly: validation must stop before it."""
    import papermill

    def boom(*a, **k):
        raise AssertionError("the notebook must not run with bad parameters")

    monkeypatch.setattr(papermill, "execute_notebook", boom)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["--tau", "0"], dl.ParameterError, "tau must satisfy 0 < tau <= 2"),
        (["--tau", "2.5"], dl.ParameterError, "tau must satisfy 0 < tau <= 2"),
        (["--alpha", "-1"], dl.ParameterError, "alpha"),
        (["--timestep", "5000"], dl.ParameterError, "timestep 5000 out of range"),
        (["--image-size", "33"], dl.ParameterError, "multiple"),
        (["--layer", "down_blocks.9.nothing"], dl.UnknownLayerError, "down_blocks"),
    ],
)
def test_bad_parameters_fail_before_running(args, error, message, images, tmp_path, no_papermill):
    ns = _parse(["--model", "pocket", "--images", *map(str, images), "--out", str(tmp_path / "r.html"), *args])
    with pytest.raises(error, match=re.escape(message)):
        rp.build_report(rp.params_from_args(ns), ns.out, quiet=True)
    assert not list(tmp_path.glob("r*")) and not list(tmp_path.glob(".r.*"))


def _parse(argv):
    from diffcut_lab.cli import build_parser

    return build_parser().parse_args(["report", *argv])


def test_missing_image_and_bad_out_through_the_cli(tmp_path, images, no_papermill, capsys):
    code = main(["report", "--images", str(images[0]), str(tmp_path / "nope.png"), "--out",
                 str(tmp_path / "r.html")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.png does not exist" in err
    assert main(["report", "--samples", "--out", str(tmp_path / "r.pdf")]) == 2
    assert "must end in .html" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["report", "--images", str(bad), "--out", str(tmp_path / "r.html")]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert not list(tmp_path.glob("r.*"))


def test_images_or_samples_required(capsys):
    with pytest.raises(SystemExit):
        _parse(["--out", "x.html"])
    with pytest.raises(SystemExit):
        _parse(["--samples", "--images", "a.png"])


def test_failed_run_leaves_nothing(tmp_path, images, monkeypatch):
    import papermill

    def failing(src, dst, **kw):
        Path(dst).write_text("{}")  # a half-written executed notebook
        raise papermill.PapermillExecutionError(3, 3, "x = 1", "ValueError", "broken", ["trace"])

    monkeypatch.setattr(papermill, "execute_notebook", failing)
    out = tmp_path / "reports" / "demo.html"
    out.parent.mkdir()
    (out.parent / "old.txt").write_text("keep")
    with pytest.raises(dl.DiffCutLabError, match="failed in cell 3: ValueError: broken"):
        rp.build_report(rp.ReportParams(images=tuple(map(str, images))), out, quiet=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["old.txt"]


def test_params_to_dict_are_the_notebook_parameters():
    nb = json.loads(rp.report_notebook_path().read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    names = re.findall(r"^(\w+) = ", "".join(first["source"]), re.M)
    assert sorted(names) == sorted(rp.ReportParams().to_dict())


def test_notebook_is_package_data():
    path = rp.report_notebook_path()
    assert path.parent.name == "notebooks" and path.parent.parent.name == "diffcut_lab"


@pytest.mark.slow
def test_wheel_ships_the_report_notebook(tmp_path):
    """A non-editable install finds the notebook: it is inside the wheel as package data."""
    import subprocess
    import sys

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "artifacts", "reports", "build", "dist", "*.egg-info", "__pycache__", ".*cache*"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffcut_lab/notebooks/05_report.ipynb" in names
    assert "diffcut_lab/commands/report.py" in names


@pytest.mark.slow
@pytest.mark.notebook
def test_report_end_to_end(tmp_path, images, artifacts_dir):
    out = tmp_path / "reports" / "demo.html"
    code = main(["report", "--model", "pocket", "--images", *map(str, images), "--tau", "0.5", "--refine",
                 "median", "--out", str(out), "--quiet"])
    assert code == 0
    html = out.read_text()
    # two figures per image (overlay, step-through), each a plotly div rendered by an embedded plotly.js
    assert len(re.findall(r'class="plotly-graph-div"', html)) == 2 * len(images)
    assert html.count("Plotly.newPlot") >= 2 * len(images)
    assert "plotly.js v" in html and not re.search(r'<script[^>]+src="[^"]*plot\.ly', html)  # plotly.js inlined
    for p in images:  # one section per image
        assert re.search(rf"<h2[^>]*>{re.escape(p.name)}", html)
    assert "widget-state+json" not in html
    assert "viz.cut_steps_figure(" not in html  # code cells hidden
    executed = out.with_suffix(".ipynb")
    nb = json.loads(executed.read_text())
    assert nb["metadata"]["papermill"]["parameters"]["config"]["tau"] == 0.5
    # the settings table: the layer the alias resolved to, readable values, no raw None
    table = next(c for c in nb["cells"] if "setting" in json.dumps(c.get("outputs", [])))
    text = json.dumps(table["outputs"])
    assert "down_blocks." in text
    assert re.search(r"the image(&#x27;|&#39;|')s size", text)
    assert "None" not in text and "diffcut</td>" not in text
    pngs = sorted((out.parent / "demo_figures").glob("*.png"))
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        assert len(pngs) == 2 * len(images)
        assert all(Image.open(p).size[0] > 300 for p in pngs)
    leftovers = [p.name for p in out.parent.iterdir()]
    assert sorted(leftovers) == sorted(["demo.html", "demo.ipynb", "demo_figures"][: 3 if pngs else 2])
    shutil.copy(out, artifacts_dir / "report_demo.html")
    if Path("/usr/bin/chromium").exists():
        assert _drawn_figures_offline(out) == 2 * len(images)


def _drawn_figures_offline(html: Path) -> int:
    """Open the report in Chromium with every network request refused; count the figures plotly drew."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("http*://**", lambda route: route.abort())  # CDN scripts of the template fail
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.resolve().as_uri())
            page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
            assert not errors, errors
            return page.locator(".plotly-graph-div:has(.main-svg)").count()
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.notebook
def test_untrusted_names_are_escaped_and_same_names_kept(tmp_path, capsys, monkeypatch):
    """A file name is untrusted text: it must not become markup; two folders' same.png are both shown.
    The command says its plan, a line per image as the notebook finishes it, and what it wrote."""
    from diffcut_lab.datasets.synthetic import make_scene

    evil = "<img src=x onerror=alert(1)>.png"
    paths = [tmp_path / "d1" / "same.png", tmp_path / "d2" / "same.png", tmp_path / "d2" / evil]
    for i, p in enumerate(paths):
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(make_scene(40 + i, size=64).image).save(p)
    monkeypatch.chdir(tmp_path)  # a relative --out, as the README's demo passes (the kernel runs elsewhere)
    out = Path("reports") / "r.html"
    assert main(["report", "--images", *map(str, paths), "--refine", "none", "--no-png", "--out", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"diffcut-lab report: 3 image(s) with model 'pocket' -> {out} (+ r.ipynb)", lines
    names = ["d1/same.png", "d2/same.png", evil]
    assert lines[1:4] == [f"diffcut-lab report: segmented: {i}/3 {n}" for i, n in enumerate(names, 1)], lines
    assert lines[-1].startswith(f"diffcut-lab report: wrote {out} (") and lines[-1].endswith(" s"), lines
    html = out.read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    for name in ("d1/same.png", "d2/same.png"):
        assert re.search(rf"<h2[^>]*>{re.escape(name)}", html), name
    assert len(re.findall(r'class="plotly-graph-div"', html)) == 2 * len(paths)


def _fake_papermill(monkeypatch):
    """Notebook execution replaced by writing an empty executed notebook (the moves are under test)."""
    import nbformat
    import papermill

    def fake(src, dst, **kw):
        nbformat.write(nbformat.v4.new_notebook(), dst)

    monkeypatch.setattr(papermill, "execute_notebook", fake)


def test_out_in_the_way_fails_before_running(tmp_path, images, no_papermill):
    (tmp_path / "r.html").mkdir()
    with pytest.raises(dl.ParameterError, match="in the way"):
        rp.build_report(rp.ReportParams(images=tuple(map(str, images))), tmp_path / "r.html", quiet=True)
    (tmp_path / "s.ipynb").mkdir()
    with pytest.raises(dl.ParameterError, match="in the way"):
        rp.build_report(rp.ReportParams(images=tuple(map(str, images))), tmp_path / "s.html", quiet=True)


def test_a_failed_final_move_puts_the_previous_report_back(tmp_path, images, monkeypatch):
    _fake_papermill(monkeypatch)
    out = tmp_path / "r.html"
    rp.build_report(rp.ReportParams(images=tuple(map(str, images))), out, png=False, quiet=True)  # the previous
    figures = tmp_path / "r_figures"  # ... and its figures, as the command writes them
    figures.mkdir()
    (figures / "figure-01.png").write_text("png")
    rp._mark_figures(figures)
    old = {p: p.read_text() for p in (out, out.with_suffix(".ipynb"), figures / "figure-01.png")}
    real = os.replace
    failed = []

    def failing(src, dst):
        if Path(dst) == out and Path(src).name == out.name and not failed:  # the new HTML's move, once
            failed.append(src)
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space"):
        rp.build_report(rp.ReportParams(images=tuple(map(str, images))), out, png=False, quiet=True)
    assert {p: p.read_text() for p in old} == old
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".r", "r"))) == [
        "r.html", "r.ipynb", "r_figures"]  # fmt: skip
