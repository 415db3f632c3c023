"""JupyterLab and Chromium for the real-browser tests: a headless JupyterLab server on 127.0.0.1 with a
token, Debian's Chromium driven by Playwright, and the steps every browser test takes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_step_through_recursive_cut.ipynb"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MODEL = os.environ.get("DIFFCUT_LAB_TEST_MODEL", "pocket")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="no Chromium at /usr/bin/chromium (Debian: "
        "apt-get install chromium; `bash .ci/install dev` does it)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_notebook(dest: Path, source: Path = NOTEBOOK) -> Path:
    nb = json.loads(source.read_text())
    if MODEL != "pocket":  # test runs against another local model (e.g. a tiny one while pocket is absent)
        for cell in nb["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                src = "".join(cell["source"])
                cell["source"] = src.replace('model = "pocket"', f"model = {MODEL!r}")
    out = dest / source.name
    out.write_text(json.dumps(nb))
    return out


def _open_and_run_all(page, url: str, token: str, name: str) -> None:
    """Open notebook ``name`` in JupyterLab, wait for its kernel and run every cell."""
    page.goto(f"{url}/lab/tree/{name}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _settle_dialogs(page)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=30_000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }")


@contextmanager
def running_lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 serving tmp_path; yields (url, token)."""
    port = _free_port()
    token = "diffcut-lab-test-token"
    (tmp_path / "home").mkdir()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp_path / "home" / "cfg"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "home" / "rt"),
        HOME=str(tmp_path / "home"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    env.pop("JUPYTER_DATA_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp_path}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
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
                raise RuntimeError(
                    "JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:]
                )
            time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def _chromium_page(width: int, height: int) -> Iterator[Any]:
    """A page of Debian's Chromium driven by Playwright (skips when Playwright is not installed)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


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
