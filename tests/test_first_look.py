"""What a newcomer sees first, looked at in Chromium: the report of a non-square photo as
``diffcut-lab report`` writes it, and notebook 01 as JupyterLab runs and saves it.

Each check reads what the browser drew (plotly's full data and layout, the page's text and geometry, the
console), not the Python objects that made it.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _browser import ARTIFACTS, ROOT, _chromium_page, _copy_notebook, _open_and_run_all, pytestmark  # noqa: F401

from diffcut_lab.cli import main

PHOTO = ROOT / "examples" / "images" / "coffee.jpg"  # 384 x 256: panels of the wrong shape show


def _decode(z) -> np.ndarray:
    """A plotly array as the browser holds it: a list, or ``{dtype, bdata, shape}`` (base64 typed array)."""
    if isinstance(z, dict):
        arr = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        shape = z.get("shape")
        if isinstance(shape, str):
            shape = [int(s) for s in shape.split(",")]
        return arr.reshape(shape) if shape else arr
    return np.asarray(z)


def _colour_stops(scale) -> list[str]:
    """The distinct colours of a plotly colorscale, in order (lower case, no spaces)."""
    out: list[str] = []
    for _, colour in scale:
        c = colour.lower().replace(" ", "")
        if not out or out[-1] != c:
            out.append(c)
    return out


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lower().replace(" ", "")
    if c.startswith("#"):
        return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)
    return tuple(int(float(v)) for v in re.findall(r"[\d.]+", c)[:3])  # type: ignore[return-value]


_PAGE = """() => {
  const figs = [...document.querySelectorAll('.plotly-graph-div')];
  const details = document.querySelector('details');
  const last = figs[figs.length - 1].getBoundingClientRect();
  const panels = (g) => Object.keys(g._fullLayout).filter(k => /^xaxis\\d*$/.test(k)).map(k => {
      const x = g._fullLayout[k], y = g._fullLayout['y' + k.slice(1)];
      return {axis: k, w: x._length, h: y._length, xr: x.range, yr: y.range};
  });
  return {
    viewport: window.innerHeight,
    first_figure_top: figs[0].getBoundingClientRect().top,
    details: details ? {open: details.open, top: details.getBoundingClientRect().top,
                        text: details.innerText, summary: details.querySelector('summary').innerText} : null,
    last_figure_bottom: last.bottom,
    text: document.body.innerText + ' ' + [...document.querySelectorAll('svg text')].map(t => t.textContent).join(' '),
    overlay: {panels: panels(figs[0])},
    steps: {
      panels: panels(figs[1]),
      names: figs[1]._fullData.map(t => t.name),
      legend: figs[1]._fullData.filter(t => t.showlegend && t.type === 'scatter').map(t => [t.name, t.marker.color]),
      legends: Object.keys(figs[1]._fullLayout).filter(k => /^legend\\d*$/.test(k)).length,
      titles: figs[1]._fullLayout.annotations.map(a => a.text),
      traces: figs[1]._fullData.map(t => ({name: t.name, colorscale: t.colorscale || null, zmin: t.zmin,
                                             zmax: t.zmax, zmid: t.zmid,
                                             x: t.type === 'scatter' ? Array.from(t.x || []) : null,
                                             cbtitle: t.colorbar && t.colorbar.title ? t.colorbar.title.text : null})),
      frames: figs[1]._transitionData._frames.map(f => ({traces: f.traces, data: f.data.map(d => ({
          colorscale: d.colorscale || null, z: d.z === undefined ? null : d.z, zmin: d.zmin, zmax: d.zmax}))})),
      slider: figs[1].layout.sliders[0].active,
    },
  };
}"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "first_look.html"
    argv = ["report", "--model", "pocket", "--images", str(PHOTO), "--tau", "0.5", "--refine", "median",
            "--no-png", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return out


def _page_state(html: Path) -> tuple[dict, list[tuple[str, str]]]:
    console: list[tuple[str, str]] = []
    with _chromium_page(1300, 900) as page:
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
        page.goto(html.as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.plotly-graph-div .main-svg').length >= 2", timeout=60_000
        )
        page.wait_for_timeout(1000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "first_look_report.png"))
        state = page.evaluate(_PAGE)
    return state, console


def test_report_first_look_in_chromium(report):
    state, console = _page_state(report)
    # 1. results first: the first figure is on the first screen; the settings are one collapsed block after
    #    the last figure
    assert state["first_figure_top"] < state["viewport"] * 0.5, state["first_figure_top"]
    details = state["details"]
    assert details is not None and details["open"] is False
    assert "Settings" in details["summary"] and details["top"] >= state["last_figure_bottom"]
    # 3. every map of the photo at the photo's aspect ratio (384 x 256), in both figures
    maps = [
        p for p in state["overlay"]["panels"] + state["steps"]["panels"] if p["xr"][0] == -0.5
    ]  # pixel axes
    assert len(maps) == 4, maps  # the overlay; the step figure's sub-graph, Fiedler and partition
    for p in maps:
        data_ratio = abs(p["xr"][1] - p["xr"][0]) / abs(p["yr"][1] - p["yr"][0])
        assert data_ratio == pytest.approx(384 / 256, rel=0.02), p
        assert p["w"] / p["h"] == pytest.approx(data_ratio, rel=0.02), p  # drawn at that shape
    # 2. one colour per side of the cut on every panel of a step, said once in one legend
    steps = state["steps"]
    legend = dict(steps["legend"])
    this = next(v for k, v in legend.items() if k.startswith("this side"))
    that = next(v for k, v in legend.items() if k.startswith("that side"))
    assert steps["legends"] == 1
    traces = {t["name"]: t for t in steps["traces"]}
    fiedler = traces["Fiedler"]
    assert fiedler["cbtitle"], "the Fiedler colour bar has no title"
    stops = _colour_stops(fiedler["colorscale"])
    assert stops == [that.lower(), "#ffffff", this.lower()], stops
    assert any("white: the threshold" in t for t in steps["titles"]), steps["titles"]
    for name in ("sub-graph", "partition"):
        colours = {_rgb(c) for c in _colour_stops(traces[name]["colorscale"])}
        assert {_rgb(this), _rgb(that)} <= colours, (name, colours, this, that)
    # the Fiedler panel's white point (the middle of its colour scale) is the chosen threshold
    threshold = traces["threshold"]["x"][0]
    assert (fiedler["zmin"] + fiedler["zmax"]) / 2 == pytest.approx(threshold, rel=1e-6, abs=1e-12)
    # 4. a segment keeps its colour from one step to the next (lineage colours in the partition panel)
    part_index = steps["names"].index("partition")
    previous: dict[bytes, tuple] | None = None
    for k, frame in enumerate(steps["frames"]):
        data = frame["data"][frame["traces"].index(part_index)]
        z = _decode(data["z"]).astype(int)
        scale = data["colorscale"]
        n = len(_colour_stops(scale))
        colour_of = {}
        for seg in np.unique(z):
            level = (seg - data["zmin"]) / (data["zmax"] - data["zmin"])
            colour_of[(z == seg).tobytes()] = next(_rgb(c) for v, c in reversed(scale) if v <= level + 1e-9)
        assert len(colour_of) == len(set(colour_of.values())) <= n, (
            f"two segments share a colour in frame {k}"
        )
        if previous is not None:
            for mask, colour in colour_of.items():
                if mask in previous:
                    assert previous[mask] == colour, f"an unchanged segment changed colour at frame {k}"
        previous = colour_of
    assert steps["slider"] == 0  # the step-through opens on its first step
    # 7. whole names, one verdict, nothing cut with "....", a clean console
    assert "...." not in state["text"]
    assert not re.search(r"accepted: split accepted|rejected: leaf rejected", state["text"])
    bad = [(kind, text) for kind, text in console
           if kind in ("error", "warning", "trace", "pageerror") or "invalid" in text.lower()]  # fmt: skip
    assert not bad, bad


@pytest.mark.notebook
def test_notebook_01_in_jupyterlab_saves_what_it_shows(lab, tmp_path):
    """Notebook 01 run and saved by JupyterLab: every figure drawn, one recursion's four taus coloured by
    the tree (a segment that persists keeps its colour), and the saved file small: no copy of plotly.js,
    each figure stored once as plotly JSON (JupyterLab's plotly extension adds a PNG preview)."""
    url, token = lab
    nb_path = _copy_notebook(tmp_path, ROOT / "notebooks" / "01_quickstart.ipynb")
    with _chromium_page(1400, 1000) as page:
        _open_and_run_all(page, url, token, nb_path.name)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='busy']", timeout=60_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=300_000)
        page.wait_for_timeout(3000)  # the plotly extension renders, then snapshots each figure
        drawn = page.evaluate("() => document.querySelectorAll('.jp-RenderedPlotly .main-svg').length")
        page.evaluate("() => { window.jupyterapp.commands.execute('docmanager:save'); return true; }")
        page.wait_for_timeout(3000)
    nb = json.loads(nb_path.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures and drawn >= len(figures), (drawn, len(figures))
    assert not any("plotly.js v" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    size = nb_path.stat().st_size
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(nb_path, ARTIFACTS / "01_saved_by_jupyterlab.ipynb")  # to look at what was saved
    assert size < 4 * 2**20, f"notebook 01 saved at {size / 2**20:.1f} MB"
    four = next(
        o["data"]["application/vnd.plotly.v1+json"]
        for o in figures
        if "four taus" in json.dumps(o["data"]["application/vnd.plotly.v1+json"]["layout"]["title"])
    )
    _assert_kept_segments_keep_their_colour(four)


def _assert_kept_segments_keep_their_colour(fig: dict) -> None:
    """In the panels of one recursion at several taus, a segment present in two neighbouring panels (the
    same pixels) is drawn in the same colour: the median colour of its pixels in each panel's picture."""
    import io

    from PIL import Image

    panels = []
    for axis in ("x", "x2", "x3", "x4"):
        image = next(t for t in fig["data"] if t["type"] == "image" and t.get("xaxis", "x") == axis)
        hover = next(t for t in fig["data"] if t["type"] == "heatmap" and t.get("xaxis", "x") == axis)
        png = base64.b64decode(image["source"].split(",", 1)[1])
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        cells = _decode(hover["z"]).astype(int)
        step = int(hover.get("dx", 1))
        pixels = np.kron(cells, np.ones((step, step), dtype=int))[: rgb.shape[0], : rgb.shape[1]]
        panels.append(
            {(pixels == k).tobytes(): np.median(rgb[pixels == k], axis=0) for k in np.unique(pixels)}
        )
    kept = 0
    for before, after in itertools.pairwise(panels):
        for mask, colour in after.items():
            if mask in before:
                kept += 1
                assert np.abs(before[mask] - colour).max() <= 3, (before[mask], colour)
    assert kept >= 1, "no segment persists between two taus: nothing was compared"
