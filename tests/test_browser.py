"""Real-browser test: JupyterLab headless + Chromium (Playwright) drive the cut stepper of notebook 04.

JupyterLab runs on 127.0.0.1 with a token; a copy of ``notebooks/04_step_through_recursive_cut.ipynb``
(JupyterLab autosaves) is opened, every cell is run, the stepper's slider is moved with the keyboard, and
the test checks that the displayed step and the figure changed. Screenshots go to
``artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_step_through_recursive_cut.ipynb"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MODEL = os.environ.get("DIFFCUT_LAB_TEST_MODEL", "pocket")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium (Debian: "
                       "apt-get install chromium; `bash .ci/install dev` does it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_notebook(dest: Path) -> Path:
    nb = json.loads(NOTEBOOK.read_text())
    if MODEL != "pocket":  # test runs against another local model (e.g. a tiny one while pocket is absent)
        for cell in nb["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                src = "".join(cell["source"])
                cell["source"] = src.replace('model = "pocket"', f"model = {MODEL!r}")
    out = dest / NOTEBOOK.name
    out.write_text(json.dumps(nb))
    return out


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving tmp_path; yields (url, token)."""
    port = _free_port()
    token = "diffcut-lab-test-token"
    (tmp_path / "home").mkdir()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "home" / "cfg"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "home" / "rt"), HOME=str(tmp_path / "home"),
               JUPYTER_PLATFORM_DIRS="1")
    env.pop("JUPYTER_DATA_DIR", None)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
    ]
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settle_dialogs(page) -> None:
    """Accept the kernel dialog (python3 is preselected) and decline the news toast, when they appear."""
    try:
        page.wait_for_selector(".jp-Dialog .jp-mod-accept", timeout=8_000)
        page.click(".jp-Dialog .jp-mod-accept")
    except Exception:  # no dialog: the kernel started by itself
        pass
    no_news = page.locator(".jp-toast-button:has-text('No')")
    if no_news.count():
        no_news.first.click()


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


def test_stepper_in_jupyterlab(lab, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, token = lab
    nb_path = _copy_notebook(tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{url}/lab/tree/{nb_path.name}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _settle_dialogs(page)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            page.wait_for_function("() => window.jupyterapp !== undefined", timeout=30_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }")
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
        finally:
            browser.close()
    assert "step 2 of" in after["status"]
    assert after["readout"].strip() == "2"
    assert after["z"] != before["z"], "the figure did not change with the slider"
    assert after["traces"] == before["traces"] >= 10
