"""The notebooks: committed without outputs, a tagged parameters cell, library calls only, and each one
executes top to bottom on the pocket model (papermill, with a real kernel)."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "01_quickstart.ipynb",
    "02_compare_layers.ipynb",
    "03_affinity_eigenvectors.ipynb",
    "04_step_through_recursive_cut.ipynb",
    "05_report.ipynb",
    "06_ablation_layers_timesteps.ipynb",
]
MODEL = os.environ.get("DIFFCUT_LAB_TEST_MODEL", "pocket")
FIX = "strip them with: jupyter nbconvert --clear-output --inplace notebooks/*.ipynb"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PARAM_LINE = re.compile(r"^[A-Za-z_]\w* = [^#]+?(  # [^'\"]*)?$")


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_all_notebooks_present():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    raw = json.loads(path.read_text())
    assert all("id" in c for c in raw["cells"]), f"{path.name}: a cell has no id (nbformat 4.5 requires one)"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.outputs == [], f"{path.name}: code cell {i} holds outputs; {FIX}"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count; {FIX}"
    assert "widgets" not in nb.metadata, f"{path.name} holds widget state; {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = _code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell is not tagged"
    lines = [ln for ln in first.source.splitlines() if ln.strip()]
    for ln in lines:  # plain `name = value  # comment` lines: papermill parses them reliably
        assert PARAM_LINE.match(ln), f"{path.name}: parameter line not plain: {ln!r}"
        ast.parse(ln)
    assert any(re.match(r'^model = "pocket"', ln) for ln in lines), (
        f"{path.name}: model must default to pocket"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_call_the_library(path):
    """No algorithm defined inline: no function or class definitions in the notebooks."""
    nb = nbformat.read(path, as_version=4)
    for cell in _code_cells(nb):
        tree = ast.parse(cell.source)
        defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name} defines {defs}; put algorithms in the library"
        assert "import diffcut_lab" in "".join(c.source for c in _code_cells(nb))


def test_report_notebook_has_one_source():
    """The report notebook ships with the package; notebooks/05_report.ipynb is a link to it."""
    packaged = ROOT / "diffcut_lab" / "notebooks" / "05_report.ipynb"
    linked = ROOT / "notebooks" / "05_report.ipynb"
    assert linked.is_symlink() and linked.resolve() == packaged.resolve()
    src = "".join(c.source for c in _code_cells(nbformat.read(packaged, as_version=4)))
    assert 'pio.renderers.default = "plotly_mimetype+notebook"' in src
    params = _code_cells(nbformat.read(packaged, as_version=4))[0].source
    from diffcut_lab.commands.report import ReportParams

    for name in ReportParams().to_dict():  # the settings travel as one DiffCutConfig dict
        assert re.search(rf"^{name} = ", params, re.M), f"report parameter {name} missing"
    assert "dl.DiffCutConfig.from_dict(config)" in src


# --------------------------------------------------------------------------------------------- execution
#: lighter parameters for CI (the defaults are what a user runs; these keep the suite within its budget)
CI_PARAMETERS = {
    "01_quickstart": {"n_images": 2},
    "02_compare_layers": {"n_scenes": 2, "timesteps": [10, 50], "taus": [0.5, 0.7, 0.9], "walk_steps": [2]},
    "03_affinity_eigenvectors": {},
    "04_step_through_recursive_cut": {},
    "06_ablation_layers_timesteps": {"limit": 2, "taus": [0.5, 0.9]},
}


def _model_available() -> bool:
    """The pocket model ships with the package (a missing copy fails the run); another model may be absent."""
    return MODEL == "pocket" or Path(MODEL).exists()


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CI_PARAMETERS))
def test_notebook_executes(name, tmp_path):
    """Runs the notebook with papermill (05 runs in tests/test_report.py through the CLI)."""
    import papermill as pm

    if not _model_available():
        pytest.skip(f"model {MODEL!r} is not installed (the pocket weights ship with the package)")
    params = dict(CI_PARAMETERS[name])
    if MODEL != "pocket":
        params["model"] = MODEL
        if name.startswith("06"):
            params["layers"] = ["diffcut"]
    out = tmp_path / f"{name}.ipynb"
    before = sorted((ROOT / "notebooks").rglob("*"))
    pm.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"),
        str(out),
        parameters=params,
        cwd=str(tmp_path),
        progress_bar=False,
        kernel_name="python3",
        request_save_on_cell_execute=False,
        execution_timeout=300,
    )
    assert sorted((ROOT / "notebooks").rglob("*")) == before, "running a notebook left files in notebooks/"
    nb = json.loads(out.read_text())
    assert _own_bytes(nb) < 5e6, f"{name}: {_own_bytes(nb) / 1e6:.1f} MB of outputs"
    if not name.startswith("05"):  # each figure stored once, as plotly JSON; no copy of plotly.js
        assert not _embeds_plotly_js(nb), f"{name} embeds plotly.js in its outputs"
        cells = len(json.dumps(nb["cells"]))  # what JupyterLab saves (it keeps no widget state by default)
        assert cells < 4e6, f"{name}: {cells / 1e6:.1f} MB of cells"
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert figures, f"{name} displayed no plotly figure"
    if name.startswith("01"):  # the tau cell shows tau changing the result, not four equal pictures
        fig = next(
            f[PLOTLY_MIME]
            for f in (o.get("data", {}) for o in outputs)
            if "four taus" in json.dumps(f.get(PLOTLY_MIME, {}).get("layout", {}).get("title", ""))
        )
        counts = [
            re.search(r"(\d+) segments", a["text"]).group(1)
            for a in fig["layout"]["annotations"]
            if "tau=" in a.get("text", "")
        ]
        assert len(counts) == 4 and len(set(counts)) >= 3, counts
    plotly = [o["data"][PLOTLY_MIME] for o in figures]
    if name.startswith("02"):  # layers ranked at their own tau, timesteps as categories, named rows
        fig = next(f for f in plotly if "test scenes" in json.dumps(f["layout"].get("title", "")))
        assert fig["layout"]["xaxis"]["type"] == "category" and fig["data"][0]["colorbar"]["title"]["text"]
        assert all(
            y.split(".")[0] in ("down1", "down2", "mid", "up0", "up1", "up2") for y in fig["data"][0]["y"]
        )
        bars = next(f for f in plotly if "vs automatic" in json.dumps(f["layout"].get("title", "")))
        assert {t["name"] for t in bars["data"]} == {"tau chosen", "auto"}
        assert (
            any("attention walk" in x for x in bars["data"][0]["x"])
            and "K-way (cosine)" in bars["data"][0]["x"]
        )
    if name.startswith("03"):  # eigenvectors share one colour bar and scale; y0 is not drawn
        fig = next(f for f in plotly if "eigenvectors y1" in json.dumps(f["layout"].get("title", "")))
        assert fig["layout"]["coloraxis"]["colorbar"]["title"]["text"]
        assert not any(t.get("name") == "y0" for t in fig["data"])
    if name.startswith("06"):  # one metric and unit, named; categorical axes
        heat = next(f for f in plotly if f["data"][0]["type"] == "heatmap")
        assert (
            "pooled" in json.dumps(heat["layout"]["title"]) and heat["layout"]["xaxis"]["type"] == "category"
        )
        assert "diffcut" not in json.dumps(heat["data"][0]["y"])  # rows are named by their layer
    if name.startswith("04"):
        widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(widgets) == 2, "notebook 04 shows two steppers (fixed and paper mode)"


def _embeds_plotly_js(nb: dict) -> bool:
    return any(
        "plotly.js v" in "".join(out.get("data", {}).get("text/html", ""))[:2000]
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
    )


def test_interactive_notebooks_store_each_figure_once():
    """Notebooks 01-04 and 06 are read in JupyterLab: figures as plotly JSON only (the notebook renderer
    would add a second copy of every figure as HTML and plotly.js itself, 4.9 MB, to the saved file); the
    report notebook alone embeds plotly.js, for its HTML export."""
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        src = "".join(c.source for c in _code_cells(nbformat.read(path, as_version=4)))
        renderer = re.search(r'^pio\.renderers\.default = "([^"]+)"', src, re.M)
        assert renderer, f"{path.name} sets no plotly renderer"
        expected = "plotly_mimetype+notebook" if path.name.startswith("05") else "plotly_mimetype"
        assert renderer.group(1) == expected, (path.name, renderer.group(1))


def _own_bytes(nb: dict) -> int:
    """Bytes of a notebook's outputs without the two libraries it carries for offline viewing: plotly.js
    (embedded once, with the first figure, so exported HTML draws offline) and the FigureWidget's
    front-end bundle (stored with the widget state)."""
    total = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            for mime, value in out.get("data", {}).items():
                text = value if isinstance(value, str) else json.dumps(value)
                if mime == "text/html" and "plotly.js v" in text[:2000]:
                    continue
                total += len(text)
    return total
