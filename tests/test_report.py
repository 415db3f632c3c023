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
    ns = _parse(
        ["--model", "pocket", "--images", *map(str, images), "--out", str(tmp_path / "r.html"), *args]
    )
    with pytest.raises(error, match=re.escape(message)):
        rp.build_report(rp.params_from_args(ns), ns.out, quiet=True)
    assert not list(tmp_path.glob("r*")) and not list(tmp_path.glob(".r.*"))


def _parse(argv):
    from diffcut_lab.cli import build_parser

    return build_parser().parse_args(["report", *argv])


def test_missing_image_and_bad_out_through_the_cli(tmp_path, images, no_papermill, capsys):
    code = main(
        ["report", "--images", str(images[0]), str(tmp_path / "nope.png"), "--out", str(tmp_path / "r.html")]
    )
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
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "artifacts", "reports", "build", "dist", "*.egg-info", "__pycache__", ".*cache*"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffcut_lab/notebooks/05_report.ipynb" in names
    assert "diffcut_lab/commands/report.py" in names


@pytest.mark.slow
@pytest.mark.notebook
def test_report_end_to_end(tmp_path, images, artifacts_dir):
    out = tmp_path / "reports" / "demo.html"
    code = main(
        [
            "report",
            "--model",
            "pocket",
            "--images",
            *map(str, images),
            "--tau",
            "0.5",
            "--refine",
            "median",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    html = out.read_text()
    # two figures per image (overlay, step-through), each a plotly div rendered by an embedded plotly.js
    assert len(re.findall(r'class="plotly-graph-div"', html)) == 2 * len(images)
    assert html.count("Plotly.newPlot") >= 2 * len(images)
    assert "plotly.js v" in html and not re.search(
        r'<script[^>]+src="[^"]*plot\.ly', html
    )  # plotly.js inlined
    for p in images:  # one section per image
        assert re.search(rf"<h2[^>]*>{re.escape(p.name)}", html)
    assert "widget-state+json" not in html
    assert "viz.cut_steps_figure(" not in html  # code cells hidden
    executed = out.with_suffix(".ipynb")
    nb = json.loads(executed.read_text())
    assert nb["metadata"]["papermill"]["parameters"]["config"]["tau"] == 0.5
    # the settings table: the layer the alias resolved to, readable values, no raw None
    table = next(c for c in nb["cells"] if "Settings of this run" in json.dumps(c.get("outputs", [])))
    text = json.dumps(table["outputs"])
    assert "down_blocks." in text
    assert re.search(r"the image(&#x27;|&#39;|')s size", text)
    assert "None" not in text and "diffcut</td>" not in text
    # results first: the first image's figure comes before the summary, the settings last and collapsed
    first_figure = html.index('class="plotly-graph-div"')
    settings_at = html.index("Settings of this run")
    assert first_figure < html.index("<table") < settings_at
    details = html[html.rindex("<details", 0, settings_at) :]
    assert "</summary>" in details and details.index("down_blocks.") < details.index("</details>")
    assert "<details open" not in html
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
    assert (
        main(["report", "--images", *map(str, paths), "--refine", "none", "--no-png", "--out", str(out)]) == 0
    )
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
    rp.build_report(
        rp.ReportParams(images=tuple(map(str, images))), out, png=False, quiet=True
    )  # the previous
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


# ---------------------------------------------------------------------------------------------------
# a page that opens complete with no network


def _notebook_with_a_figure(renderer: str = "plotly_mimetype"):
    """An executed notebook as papermill leaves it: Markdown, a plotly figure, a table. With
    ``renderer="plotly_mimetype+notebook"`` (the report notebook's), the figure carries the notebook
    renderer's HTML too (which loads MathJax from a CDN) and a set-up output embeds plotly.js."""
    import nbformat
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2]), layout={"title": {"text": "a figure"}})
    nb = nbformat.v4.new_notebook()
    md = nbformat.v4.new_output("display_data", data={"text/markdown": "## scene.png", "text/plain": ""})
    data = {rp.PLOTLY_MIME: fig.to_plotly_json(), "text/plain": ""}
    setup = []
    if renderer.endswith("+notebook"):
        data.update(pio.renderers["notebook"].to_mimebundle(fig.to_plotly_json()))
        assert "cdnjs" in data["text/html"]  # what the renderer's own drawing would load
        setup = [nbformat.v4.new_output("display_data", data={"text/html": "<script>window.PlotlyConfig = {};"
                                        f"</script><script>{get_plotlyjs()}</script>"})]  # fmt: skip
    plot = nbformat.v4.new_output("display_data", data=data)
    table = nbformat.v4.new_output("execute_result", data={"text/html": "<table><tr><td>1</td></tr></table>"},
                                   execution_count=1)  # fmt: skip
    nb.cells = [nbformat.v4.new_markdown_cell("# Report\n\nInline math $x^2$ stays text."),
                nbformat.v4.new_code_cell("setup()", outputs=setup),
                nbformat.v4.new_code_cell("show()", outputs=[md, plot, table])]  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _external_sources(html: str) -> list[str]:
    """Every src/href of a script, link, img, iframe or module import that names another host."""
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)",
                      html, re.I)  # fmt: skip
    imports = re.findall(r"\bimport\s*\(\s*[\"'`]((?:https?:)?//[^\"'`]+)", html)
    return tags + imports


@pytest.mark.parametrize("renderer", ["plotly_mimetype", "plotly_mimetype+notebook"])
def test_html_loads_nothing_from_another_host(tmp_path, renderer):
    """Item 3: no MathJax, require.js or mermaid from a CDN; plotly.js embedded once; the figure drawn
    from its JSON."""
    out = tmp_path / "r.html"
    rp.export_html(_notebook_with_a_figure(renderer), out, title="r")
    html = out.read_text(encoding="utf-8")
    assert _external_sources(html) == []
    before, bundle = html.split("plotly.js v")
    outside = before + bundle[bundle.index("</script>") :]  # the page without the plotly.js bundle
    assert not re.search(r"cdn|require(\.min)?\.js|mermaid|tex-svg|mathjax/", outside, re.I)
    assert html.count("plotly.js v") == 1 and html.count("Plotly.newPlot") == 1
    assert 'class="plotly-graph-div"' in html and "a figure" in html
    assert rp.written_by_report(out)


# ---------------------------------------------------------------------------------------------------
# nothing the command did not write is overwritten


def _report_args(images, out):
    return ["report", "--images", *map(str, images), "--no-png", "--quiet", "--out", str(out)]


def test_a_notebook_of_the_users_own_is_never_replaced(tmp_path, images, no_papermill, capsys):
    """Item 4: `report --out mynb/05_report.html` beside the user's mynb/05_report.ipynb is refused
    before anything runs, in one line; the notebook is untouched."""
    mine = tmp_path / "mynb" / "05_report.ipynb"
    mine.parent.mkdir()
    shutil.copy(rp.report_notebook_path(), mine)
    mine.write_text(mine.read_text().replace("# DiffCut report", "# my own notes"))
    before = mine.read_bytes()
    assert main(_report_args(images, mine.with_suffix(".html"))) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "05_report.ipynb was not written by diffcut-lab report" in err and "another --out" in err
    assert mine.read_bytes() == before
    assert sorted(p.name for p in mine.parent.iterdir()) == ["05_report.ipynb"]


@pytest.mark.parametrize("what", ["html", "notebook", "figures"])
def test_outputs_the_command_wrote_are_replaced_and_edited_ones_refused(tmp_path, images, monkeypatch, capsys,
                                                                        what):  # fmt: skip
    """Item 4: a second run replaces the first run's outputs; once one of them is edited (or a file is
    added to the figures folder) the next run refuses and leaves everything as it is."""
    _fake_papermill(monkeypatch)
    out = tmp_path / "r.html"
    assert main(_report_args(images, out)) == 0
    figures = tmp_path / "r_figures"
    figures.mkdir()
    (figures / "figure-01.png").write_bytes(b"png")
    rp._mark_figures(figures)
    assert all(rp.written_by_report(p) for p in (out, out.with_suffix(".ipynb"), figures))
    assert main(_report_args(images, out)) == 0  # its own outputs: replaced
    figures.mkdir()
    (figures / "figure-01.png").write_bytes(b"png")
    rp._mark_figures(figures)
    if what == "html":
        out.write_text(out.read_text().replace("<body", "<body data-edited"))
    elif what == "notebook":
        nb = json.loads(out.with_suffix(".ipynb").read_text())
        nb["cells"].append({"cell_type": "markdown", "id": "mine", "metadata": {}, "source": "my notes"})
        out.with_suffix(".ipynb").write_text(json.dumps(nb))
    else:
        (figures / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(_report_args(images, out)) == 2
    assert "was not written by diffcut-lab report (or was changed since)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_file_that_merely_looks_like_a_report_is_refused(tmp_path):
    """The mark is a hash of the content: a copied mark line or a notebook claiming the key is not enough."""
    html = tmp_path / "r.html"
    html.write_text("<html>mine</html>\n" + rp.HTML_MARK.format("0" * 64))
    nb = tmp_path / "r.ipynb"
    shutil.copy(rp.report_notebook_path(), nb)
    data = json.loads(nb.read_text())
    data["metadata"][rp.NOTEBOOK_MARK] = {"cells_sha256": "0" * 64}
    nb.write_text(json.dumps(data))
    assert not rp.written_by_report(html) and not rp.written_by_report(nb)
    assert not rp.written_by_report(tmp_path / "missing.html")


# ---------------------------------------------------------------------------------------------------
# paths: the notebook runs in another directory


def _capture_parameters(monkeypatch) -> list[dict]:
    import nbformat
    import papermill

    seen: list[dict] = []

    def fake(src, dst, parameters=None, **kw):
        seen.append(parameters)
        nbformat.write(nbformat.v4.new_notebook(), dst)

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return seen


def test_a_relative_model_directory_reaches_the_notebook_as_an_absolute_path(tmp_path, images, tiny_dir,
                                                                              monkeypatch):  # fmt: skip
    """Item 5: `report --model mymodel` (a relative local directory) works as `segment` does."""
    shutil.copytree(tiny_dir, tmp_path / "work" / "mymodel")
    monkeypatch.chdir(tmp_path / "work")
    seen = _capture_parameters(monkeypatch)
    assert main(["report", "--model", "mymodel", "--images", *map(str, images), "--no-png", "--quiet",
                 "--out", "r.html"]) == 0  # fmt: skip
    assert seen[0]["model"] == str((tmp_path / "work" / "mymodel").resolve())
    assert all(Path(p).is_absolute() for p in seen[0]["images"])
    seen.clear()  # the library call resolves too, and leaves hub ids and "pocket" alone
    rp.build_report(rp.ReportParams(model="mymodel", images=tuple(map(str, images))), "s.html", png=False,
                    quiet=True)  # fmt: skip
    assert Path(seen[0]["model"]).is_absolute()
    assert rp.resolve_params(rp.ReportParams(model="pocket")).model == "pocket"
    assert rp.resolve_params(rp.ReportParams(model="segmind/SSD-1B")).model == "segmind/SSD-1B"


@pytest.mark.slow
@pytest.mark.notebook
def test_report_runs_with_a_relative_model_directory(tmp_path, tiny_dir, monkeypatch):
    """Item 5 end to end: the notebook itself loads the relative model directory."""
    from diffcut_lab.datasets.synthetic import make_scene

    work = tmp_path / "work"
    shutil.copytree(tiny_dir, work / "mymodel")
    Image.fromarray(make_scene(3, size=64).image).save(work / "a.png")
    monkeypatch.chdir(work)
    assert main(["report", "--model", "mymodel", "--images", "a.png", "--refine", "none", "--no-png",
                 "--quiet", "--out", "out/r.html"]) == 0  # fmt: skip
    assert (work / "out" / "r.html").is_file()


def test_an_image_folder_says_what_to_pass_instead(tmp_path, images, no_papermill, capsys):
    """Item 6: `--images DIR` is not 'does not exist': it is a folder, and the files in it are wanted."""
    folder = tmp_path / "photos"
    folder.mkdir()
    assert main(["report", "--images", str(folder), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "is a folder; pass the image files in it" in err and "does not exist" not in err


def test_a_loop_of_links_among_images_is_one_line(tmp_path, images, no_papermill, capsys):
    """Item 6: a symlink loop among the images ends in one line naming it, exit code 2."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    me = tmp_path / "me.png"
    me.symlink_to(me)
    for loop in (a, me):
        assert main(["report", "--images", str(images[0]), str(loop), "--out", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"image {loop} is a loop of symbolic links" in err, err
    assert not list(tmp_path.glob("r.*")) and not list(tmp_path.glob(".r.*"))


# ---------------------------------------------------------------------------------------------------
# scratch folders: removed on SIGTERM, and after a killed run by the next one


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_run_removes_scratch_folders_of_killed_runs(tmp_path, images, monkeypatch):
    """Item 6: a run killed outright (SIGKILL) leaves a hidden scratch folder; the next run in the same
    folder removes it, and leaves those of live runs and anything else alone."""
    import socket
    import subprocess
    import sys

    _fake_papermill(monkeypatch)
    host = socket.gethostname()
    dead = tmp_path / f".r.diffcut-{_dead_pid()}-0123abcd.tmp"
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".r.diffcut-{live_proc.pid}-89abcdef.tmp"
        other_host = tmp_path / f".s.diffcut-{_dead_pid()}-00000000.tmp"
        for path, owner in ((dead, dead), (live, live), (other_host, None)):
            path.mkdir()
            (path / "r.ipynb").write_text("partial")
            pid = re.search(r"diffcut-(\d+)-", path.name).group(1)
            (path / ".owner").write_text(f"{pid} {host if owner else 'elsewhere'}\n")
        unrelated = tmp_path / ".r.something.tmp"
        unrelated.mkdir()
        rp.build_report(rp.ReportParams(images=tuple(map(str, images))), tmp_path / "r.html", png=False,
                        quiet=True)  # fmt: skip
        assert not dead.exists()
        assert live.exists() and other_host.exists() and unrelated.exists()
    finally:
        live_proc.kill()
        live_proc.wait()


_SLOW_REPORT = """
import sys, time
import papermill
from pathlib import Path

def slow(src, dst, **kw):
    Path(dst).write_text("{}")
    print("running", flush=True)
    time.sleep(120)

papermill.execute_notebook = slow
from diffcut_lab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_removes_the_scratch_folder(tmp_path, images):
    """Item 6: `kill` (SIGTERM) during a report ends it as Ctrl-C does: exit 130, one line, no hidden
    scratch folder, nothing at --out."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "slow_report.py"
    script.write_text(_SLOW_REPORT)
    out = tmp_path / "out" / "r.html"
    proc = subprocess.Popen([sys.executable, str(script), *_report_args(images, out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "running"
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".r.")], "no scratch folder"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "diffcut-lab report: interrupted", err
    assert list(out.parent.iterdir()) == []


def test_the_png_warning_says_why_in_whole_words(tmp_path, monkeypatch):
    """Without a browser for kaleido the report goes on; the warning names the cause without cutting a word."""
    import plotly.io as pio

    from diffcut_lab.commands.report import export_pngs

    def no_browser(*a, **k):
        raise RuntimeError("could not find a Chromium executable anywhere on this machine " * 4)

    monkeypatch.setattr(pio, "write_images", no_browser)
    with pytest.warns(RuntimeWarning, match="PNG export needs a Chromium") as caught:
        assert export_pngs([{"data": [], "layout": {}}], tmp_path / "figs") == []
    words = str(caught[0].message).rsplit("(", 1)[1].rstrip(")").split()
    allowed = {"RuntimeError:", *"could not find a Chromium executable anywhere on this machine".split()}
    assert words[-1] == "..." and set(words[:-1]) <= allowed  # shortened between words
    assert not (tmp_path / "figs").exists()
