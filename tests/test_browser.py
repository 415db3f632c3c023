"""Real-browser test: JupyterLab headless + Chromium (Playwright) drive the cut stepper of notebook 04.

JupyterLab runs on 127.0.0.1 with a token; a copy of ``notebooks/04_step_through_recursive_cut.ipynb``
(JupyterLab autosaves) is opened, every cell is run, the stepper's slider is moved with the keyboard, and
the test checks that the displayed step and the figure changed. Screenshots go to
``artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from _browser import (
    ARTIFACTS,
    ROOT,
    _chromium_page,
    _copy_notebook,
    _open_and_run_all,
)


def _stepper_state(page) -> dict:
    return page.evaluate(
        """() => {
            const app = document.querySelector('.diffcut-cut-stepper');
            if (!app) return null;
            const gd = app.querySelector('.js-plotly-plot');
            const status = app.querySelector('.widget-html-content');
            const readout = app.querySelector('.widget-readout');
            let z = null;
            if (gd && gd.data) {
                const tr = gd.data.find(t => t.name === 'Fiedler');
                if (tr) z = JSON.stringify(tr.z).slice(0, 20000);
            }
            return {status: status ? status.innerText : '', readout: readout ? readout.innerText : '',
                    z: z, traces: gd && gd.data ? gd.data.length : 0};
        }"""
    )


_FIGURE_STATE = """(index) => {
    const gd = document.querySelectorAll('.diffcut-cut-stepper .js-plotly-plot')[index];
    const pick = (t) => ({name: t.name, colorscale: JSON.stringify(t.colorscale === undefined ? null : t.colorscale),
                          zmin: t.zmin, zmax: t.zmax, z: String(JSON.stringify(t.z)).slice(0, 4000),
                          x: String(JSON.stringify(t.x)).slice(0, 4000), y: String(JSON.stringify(t.y)).slice(0, 4000)});
    return {traces: gd.data.map(pick),
            full: gd._fullData.map(t => JSON.stringify(t.colorscale === undefined ? null : t.colorscale)),
            xrange: gd._fullLayout.xaxis3.range, yrange: gd._fullLayout.yaxis3.range,
            curve: (() => { const t = gd._fullData.find(d => d.name === 'NCut(threshold)');
                            const v = Array.from(t.y || []).filter(Number.isFinite);
                            const x = Array.from(t.x || []).filter(Number.isFinite);
                            return v.length ? [Math.min(...x), Math.max(...x), Math.max(...v)] : null; })(),
            titles: gd._fullLayout.annotations.map(a => a.text)};
}"""


def _wait_status(page, index: int, text: str) -> None:
    page.wait_for_function(
        "([i, t]) => { const s = document.querySelectorAll('.diffcut-cut-stepper')[i]"
        "  .querySelector('.widget-html-content'); return s && s.textContent.includes(t); }",
        arg=[index, text],
        timeout=30_000,
    )


def _plot_pixels(locator) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=np.int16)


def test_stepper_in_jupyterlab(lab, tmp_path):
    url, token = lab
    nb_path = _copy_notebook(tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _chromium_page(1400, 1100) as page:
        _open_and_run_all(page, url, token, nb_path.name)
        # the stepper is displayed once its cell ran and the widget manager rendered it
        page.wait_for_selector(".diffcut-cut-stepper .js-plotly-plot", timeout=180_000)
        page.wait_for_function(
            "() => { const s = document.querySelector('.diffcut-cut-stepper .widget-html-content');"
            " return s && s.innerText.includes('step 1 of'); }",
            timeout=60_000,
        )
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
        app = page.locator(".diffcut-cut-stepper").first
        app.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        _check_first_frames(page)
        app.scroll_into_view_if_needed()
        before = _stepper_state(page)
        assert before and "step 1 of" in before["status"], before
        assert before["readout"].strip() == "1"
        assert before["z"], "the Fiedler heatmap has no data"
        page.screenshot(path=str(ARTIFACTS / "04_stepper_step1.png"))

        handle = app.locator(".widget-slider .noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        page.wait_for_function(
            "() => { const s = document.querySelector('.diffcut-cut-stepper .widget-html-content');"
            " return s && s.innerText.includes('step 2 of'); }",
            timeout=30_000,
        )
        page.wait_for_function(
            "(z0) => { const gd = document.querySelector('.diffcut-cut-stepper .js-plotly-plot');"
            " const tr = gd && gd.data && gd.data.find(t => t.name === 'Fiedler');"
            " return tr && JSON.stringify(tr.z).slice(0, 20000) !== z0; }",
            arg=before["z"],
            timeout=30_000,
        )
        page.wait_for_timeout(700)  # let plotly repaint before the screenshot
        after = _stepper_state(page)
        app.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "04_stepper_step2.png"))
        app.screenshot(path=str(ARTIFACTS / "04_stepper_widget.png"))
        _check_redisplay(page)
    assert "step 2 of" in after["status"]
    assert after["readout"].strip() == "2"
    assert after["z"] != before["z"], "the figure did not change with the slider"
    assert after["traces"] == before["traces"] >= 10


def _check_first_frames(page) -> None:
    """Every stepper's first frame, as drawn when the cell ran, equals step 1 redrawn (next, then prev):
    same colour scales (no plotly default), same data, same axis ranges, and the same pixels."""
    apps = page.locator(".diffcut-cut-stepper")
    assert apps.count() == 2, "notebook 04 shows two steppers (fixed and paper mode)"
    for i in range(apps.count()):
        app = apps.nth(i)
        app.scroll_into_view_if_needed()
        page.wait_for_timeout(700)
        plot = app.locator(".js-plotly-plot")
        first = page.evaluate(_FIGURE_STATE, i)
        first_px = _plot_pixels(plot)
        page.screenshot(path=str(ARTIFACTS / f"04_stepper{i}_first_frame.png"))
        assert "Plasma" not in str(first["full"]) and '"#0d0887"' not in str(first["full"]), (
            "a heatmap fell back to plotly's default colour scale on the first frame"
        )
        app.locator("button:has-text('next')").click()
        _wait_status(page, i, "step 2 of")
        app.locator("button:has-text('prev')").click()
        _wait_status(page, i, "step 1 of")
        page.wait_for_timeout(900)
        redrawn = page.evaluate(_FIGURE_STATE, i)
        assert redrawn == first, f"stepper {i}: the first frame differs from step 1 redrawn"
        diff = abs(_plot_pixels(plot) - first_px)
        assert diff.shape == first_px.shape and float((diff.max(axis=2) > 40).mean()) < 0.002, (
            f"stepper {i}: the first frame's pixels differ from step 1 redrawn"
        )
        assert first["curve"], f"stepper {i}: no NCut curve on the first frame"
        x_lo, x_hi, y_hi = first["curve"]
        assert first["xrange"][0] <= x_lo and x_hi <= first["xrange"][1], (first["xrange"], first["curve"])
        assert y_hi <= first["yrange"][1], (
            f"stepper {i}: the NCut curve runs above its axis on the first frame"
        )


def test_report_slider_frames_keep_the_curve_in_view(tmp_path):
    """The report's step slider: at a later step the NCut curve, the chosen threshold and tau stay inside
    the axes (each frame carries its own ranges)."""
    import diffcut_lab as dl
    from diffcut_lab import viz

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:24, :24]
    seg = (xx >= 8).astype(int) + 2 * (yy >= 16) + (xx >= 18)
    feats = (rng.normal(size=(8, 24, 24)) * 0.4 + rng.normal(size=(5, 8))[seg].transpose(2, 0, 1)).astype(
        "float32"
    )
    tree = dl.cut_tree(feats, dl.DiffCutConfig(tau=0.6))
    assert len(tree.steps) >= 4, tree
    html = tmp_path / "steps.html"
    viz.cut_steps_figure(tree, (seg * 50).astype("uint8")).write_html(html, include_plotlyjs=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _chromium_page(1300, 900) as page:
        page.goto(html.as_uri())
        page.wait_for_function("() => document.querySelector('.js-plotly-plot')?._fullLayout", timeout=30_000)
        for k in range(1, len(tree.steps) + 1):
            page.evaluate(
                "(k) => Plotly.animate(document.querySelector('.js-plotly-plot'), [String(k)],"
                " {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}})",
                k,
            )
            page.wait_for_timeout(150)
            st = page.evaluate(
                "() => { const gd = document.querySelector('.js-plotly-plot'); const L = gd._fullLayout;"
                " const A = (v) => Array.from(v || []).map(Number).filter(Number.isFinite);"
                " const F = gd._fullData;"
                " return {x: L.xaxis3.range, y: L.yaxis3.range, curve: [A(F[3].x), A(F[3].y)],"
                " chosen: [A(F[4].x), A(F[4].y)], tau: A(F[5].y)}; }"
            )
            cx = st["curve"][0] + st["chosen"][0]
            cy = st["curve"][1] + st["chosen"][1] + st["tau"]
            assert len(st["curve"][0]) > 10, f"step {k} has no NCut curve"
            assert st["x"][0] <= min(cx) and max(cx) <= st["x"][1], (k, st["x"], min(cx), max(cx))
            assert st["y"][0] <= min(cy) and max(cy) <= st["y"][1], (k, st["y"], max(cy))
            if k == len(tree.steps):
                page.screenshot(path=str(ARTIFACTS / "report_steps_last.png"))


def test_report_page_draws_offline_and_requests_nothing(tmp_path):
    """The report's HTML, as the command exports it (figures from their plotly JSON, a heading whose
    file name is a Markdown link): in Chromium the figures are drawn and the page asks for nothing but
    itself -- no CDN, no MathJax, no require.js, no address taken from a name."""
    import nbformat

    import diffcut_lab as dl
    from diffcut_lab import viz
    from diffcut_lab._escape import html_text, markdown_text
    from diffcut_lab.commands import report as rp

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:16, :16]
    seg = (xx >= 8).astype(int) + 2 * (yy >= 8)
    feats = (rng.normal(size=(8, 16, 16)) * 0.3 + rng.normal(size=(4, 8))[seg].transpose(2, 0, 1)).astype(
        "float32"
    )
    tree = dl.cut_tree(feats, dl.DiffCutConfig(tau=0.6))
    image = (seg * 60).astype("uint8")
    name = "![t](http:127.0.0.1:8765)[md](javascript:alert(1)).png"
    figs = [viz.overlay(image, tree.labels, title=f"{html_text(name)}: segments"),
            viz.cut_steps_figure(tree, image, title=f"{html_text(name)}: every cut")]  # fmt: skip
    outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": f"## {markdown_text(name)}"})]
    outputs += [
        nbformat.v4.new_output("display_data", data={rp.PLOTLY_MIME: f.to_plotly_json()}) for f in figs
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("show()", outputs=outputs)])
    html = tmp_path / "report.html"
    rp.export_html(json.loads(json.dumps(nb, default=_jsonable)), html, title="report")
    requests: list[str] = []
    errors: list[str] = []
    with _chromium_page(1300, 900) as page:
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(html.as_uri())
        page.wait_for_function(
            "() => [...document.querySelectorAll('.plotly-graph-div')]"
            ".filter(d => d.querySelector('.main-svg')).length === 2",
            timeout=30_000,
        )
        page.wait_for_timeout(1000)
        heading = page.evaluate("() => document.querySelector('h2').textContent")
        titles = page.evaluate("() => [...document.querySelectorAll('.gtitle')].map(t => t.textContent)")
        links = page.evaluate("() => [...document.querySelectorAll('a[href], img')].map(a => a.outerHTML)")
        # the step-through opens on its first step and stays there (no auto-play through the frames)
        opened = page.evaluate(
            "() => { const g = document.querySelectorAll('.plotly-graph-div')[1];"
            " return [g.layout.sliders[0].active, g._fullLayout.annotations[0].text]; }"
        )
    assert opened[0] == 0 and "step 1" in opened[1], opened
    assert requests == [html.as_uri()], requests
    assert not errors, errors
    assert heading.startswith(name), heading
    assert len(titles) == 2 and all(t.startswith(name) for t in titles), titles
    assert all('href="#' in a for a in links), links


def _jsonable(value: Any) -> Any:
    """numpy values in a figure's JSON as plain lists and numbers."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _check_redisplay(page) -> None:
    """A stepper displayed again from the kernel (a new cell) draws the state the kernel holds: the
    same figure as the live view, not plotly's defaults."""
    page.evaluate(
        """() => { const nb = window.jupyterapp.shell.currentWidget.content; const n = nb.model.cells.length;
            nb.model.sharedModel.insertCell(n, {cell_type: 'code', source: 'stepper.show_step(3)\\nstepper'});
            nb.activeCellIndex = n; window.jupyterapp.commands.execute('notebook:run-cell'); return true; }"""
    )
    page.wait_for_function("() => document.querySelectorAll('.diffcut-cut-stepper .js-plotly-plot').length === 3",
                           timeout=60_000)  # fmt: skip
    for i in (0, 2):
        _wait_status(page, i, "step 3 of")
    states = []
    for i in (0, 2):  # JupyterLab may detach cells out of view: read each one on screen
        page.locator(".diffcut-cut-stepper").nth(i).scroll_into_view_if_needed()
        page.wait_for_timeout(900)
        states.append(page.evaluate(_FIGURE_STATE, i))
    live, again = states
    assert again == live, "a stepper displayed again differs from the live one"


def test_eigenvector_explorer_first_frame_in_jupyterlab(lab, tmp_path):
    """Notebook 03's explorer, as JupyterLab first draws it: the eigenvectors on their shared diverging
    scale and the affinity row on its own (not plotly's defaults), every panel present."""
    url, token = lab
    nb_path = _copy_notebook(tmp_path, ROOT / "notebooks" / "03_affinity_eigenvectors.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _chromium_page(1400, 1100) as page:
        _open_and_run_all(page, url, token, nb_path.name)
        page.wait_for_selector(".widget-vbox .js-plotly-plot", timeout=180_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
        app = page.locator(".widget-vbox").last
        app.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)
        state = page.evaluate(
            """() => { const gd = document.querySelector('.widget-vbox .js-plotly-plot');
                const row = gd._fullData.find(t => t.name === 'affinity row');
                return {names: gd._fullData.map(t => t.name), axis: gd._fullLayout.coloraxis.colorscale,
                        row: row.colorscale, range: [gd._fullLayout.coloraxis.cmin, gd._fullLayout.coloraxis.cmax]}; }"""
        )
        app.screenshot(path=str(ARTIFACTS / "03_explorer_first_frame.png"))
    assert [f"y{j}" for j in range(1, 9)] == [n for n in state["names"] if n.startswith("y")]
    assert state["axis"][0][1] == "rgb(5,48,97)" and state["range"] == [-1, 1]  # RdBu reversed, centred at 0
    assert state["row"][0][1] == "#440154"  # Viridis
