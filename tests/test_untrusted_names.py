"""File names, model names and settings are untrusted text: they stay text in Markdown, HTML, plotly
titles, terminal lines and notebook code, and they never make a page run a script or fetch an address."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from diffcut_lab._escape import html_text, markdown_text, one_line
from diffcut_lab.cli import main
from diffcut_lab.progress import Progress

#: names a file may have on Linux (anything but '/' and NUL), each meant to become markup or code
HOSTILE = [
    "[md](javascript:alert(1)).png",
    "![t](http:127.0.0.1:8765).png",
    "<img src=x onerror=alert(1)>.png",
    "<a href='javascript:alert(2)'>x<\\a>.png",
    "[x]: javascript:alert(3) [x].png",
    "www.example.com and http:example.org.png",
    "*em* _em_ `code` $x^2$ ~~s~~ &amp; &#60;b&#62;.png",
    "line\nbreak # heading.png",
    "\x1b[2J\x1b]0;title\x07term.png",
    "gnp.\u202eexe.png",
]


def _render_markdown(text: str) -> str:
    """Markdown to HTML as nbconvert renders a notebook's Markdown (cells and text/markdown outputs)."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    return markdown2html_mistune(text)


def _shown_text(fragment: str) -> str:
    """The text a browser shows for an HTML fragment (tags dropped, references decoded)."""
    import html

    return html.unescape(re.sub(r"<[^>]*>", "", fragment))


@pytest.mark.parametrize("name", HOSTILE)
def test_markdown_text_renders_as_exactly_the_name(name):
    """Item 1: Markdown escaping as well as HTML escaping; the heading shows the name, nothing else."""
    rendered = _render_markdown(f"## {markdown_text(name)}")
    tags = re.findall(r"<[^>]*>", rendered)
    assert [re.match(r"</?\w+", t).group(0) for t in tags] == ["<h2", "<a", "</a", "</h2"], rendered
    attributes = re.findall(r"([\w-]+)=\"([^\"]*)\"", " ".join(tags))
    assert {a for a, _ in attributes} == {"id", "class", "href"}, rendered  # no src, no on... handler
    assert all(v.startswith("#") for a, v in attributes if a == "href"), rendered  # the heading's anchor
    heading = re.match(r"<h2[^>]*>(.*?)<a class=\"anchor-link\"", rendered, re.S)
    assert heading is not None, rendered
    assert _shown_text(heading.group(1)) == one_line(name)


@pytest.mark.parametrize("name", HOSTILE)
def test_html_text_is_inert_text(name):
    escaped = html_text(name)
    assert not set("<>\"'") & set(escaped) and "\n" not in escaped and "\x1b" not in escaped
    assert _shown_text(escaped) == one_line(name)


def test_one_line_shows_control_characters_instead_of_obeying_them():
    assert one_line("a\nb\t c") == "a b c"
    assert one_line("\x1b[2Jx") == "\\x1b[2Jx"
    assert one_line("gnp.\u202eexe") == "gnp.\\u202eexe"
    assert one_line("été 猫 🐈‍⬛.png") == "été 猫 🐈‍⬛.png"  # printable text is kept as it is


def test_progress_lines_do_not_pass_terminal_escapes():
    """Item 1 (terminal side): a name's escape sequences are shown, not run by the terminal."""
    out = io.StringIO()
    with Progress(1, "report", stream=out) as bar:
        bar.advance("\x1b[2J\x1b]0;pwned\x07a.png")
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert out.getvalue() == "report: 1/1 \\x1b[2J\\x1b]0;pwned\\x07a.png\n"


# ---------------------------------------------------------------------------------------------------
# diffcut-lab notebooks --model: a Python literal, never a template


MODELS = [
    'a"b',
    "a'b",
    '\\", os.system("echo pwned"), "',
    '"; import os; os.system("echo pwned") #',
    "C:\\new\\models",
    "trailing\\",
    "\\1 \\g<0> \\n",
    "multi\nline = 1\nos.system('x')",
    "# just a comment",
    "'''\"\"\"",
    "ünïcødé/模型",
]


def _parameters_model(nb: dict) -> object:
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), ast.dump(node)  # nothing but assignments: no code runs
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["model"]


@pytest.mark.parametrize("model", MODELS)
def test_notebooks_model_is_written_as_a_literal(tmp_path, model):
    """Item 2: quotes, backslashes, newlines and '#' in --model reach the notebooks as the exact string."""
    from diffcut_lab.commands.notebooks import copy_notebooks

    paths = copy_notebooks(tmp_path / "nb", model=model)
    assert paths
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert _parameters_model(nb) == model, path.name


def test_notebooks_cli_with_a_hostile_model(tmp_path, capsys):
    model = '\\", __import__("os").system("touch PWNED"), "'
    assert main(["notebooks", str(tmp_path / "nb"), "--model", model]) == 0
    for path in sorted((tmp_path / "nb").glob("*.ipynb")):
        assert _parameters_model(json.loads(path.read_text(encoding="utf-8"))) == model


def test_notebooks_force_is_all_or_nothing(tmp_path, monkeypatch):
    """Item 2: a failure in the middle of `notebooks --force` leaves the folder as it was, no .tmp file."""
    import os

    from diffcut_lab.commands import notebooks as nbcmd

    out = tmp_path / "nb"
    first = nbcmd.copy_notebooks(out, model="first")
    (out / "mine.txt").write_text("keep")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space"):
        nbcmd.copy_notebooks(out, model="second", force=True)
    monkeypatch.setattr(os, "replace", real)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert len(first) >= 3 and len(calls) >= 3


def test_notebooks_into_a_new_folder_fails_whole(tmp_path, monkeypatch):
    """A failure while copying into a new folder leaves no folder (and no hidden scratch folder)."""
    from diffcut_lab.commands import notebooks as nbcmd

    calls = []
    real = nbcmd._set_model

    def failing(nb, model):
        calls.append(model)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(nb, model)

    monkeypatch.setattr(nbcmd, "_set_model", failing)
    with pytest.raises(OSError, match="No space"):
        nbcmd.copy_notebooks(tmp_path / "new", model="m")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# the report: hostile names end to end, and a page that contacts nobody


def _save_scene(path: Path, seed: int) -> Path:
    from diffcut_lab.datasets.synthetic import make_scene

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_scene(seed, size=64).image).save(path, format="PNG")
    return path


@pytest.mark.slow
@pytest.mark.notebook
def test_report_with_markdown_names_has_no_live_link_and_fetches_nothing(tmp_path, artifacts_dir):
    """Item 1 and 3 end to end: file names that are Markdown links, images and HTML stay text in the
    report; in Chromium the page makes no request at all and has no javascript: link."""
    names = [
        "[md](javascript:alert(1)).png",
        "![t](http:127.0.0.1:8765).png",
        "<a href='javascript:alert(2)'>t<\\a>.png",
    ]
    paths = [_save_scene(tmp_path / "in" / n, i) for i, n in enumerate(names)]
    out = tmp_path / "r.html"
    assert main(["report", "--images", *map(str, paths), "--refine", "none", "--no-png", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    html = out.read_text(encoding="utf-8")
    tags = _tags(html)  # what a browser builds: tags and their attributes (script text is not markup)
    assert not [t for t, _ in tags if t in ("img", "iframe", "object", "embed", "link")]
    hrefs = [v for _, attrs in tags for a, v in attrs if a in ("href", "src", "action", "formaction")]
    assert all((v or "").startswith("#") for v in hrefs), [v for v in hrefs if not (v or "").startswith("#")]
    assert not [a for _, attrs in tags for a, _ in attrs if a.startswith("on")]
    for name in names:  # each heading shows the name as it is
        assert re.search(r"<h2[^>]*>" + re.escape(_html_of(name)), html), name
    assert not _external_sources(html)
    shutil_copy(out, artifacts_dir / "report_hostile_names.html")
    if Path("/usr/bin/chromium").exists():
        page = _open_offline(out)
        assert page["requests"] == [], page["requests"]
        assert page["javascript_links"] == 0 and page["images"] == 0
        assert page["figures"] == 2 * len(names)
        for name in names:
            assert f"{name}¶" in page["headings"]  # the heading, then its anchor
            assert sum(name in t for t in page["titles"]) == 2, (name, page["titles"])


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """The start tags of an HTML page with their attributes, as an HTML parser reads them."""
    from html.parser import HTMLParser

    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

        handle_startendtag = handle_starttag

    Collect().feed(html)
    return found


def _html_of(name: str) -> str:
    import html

    return html.escape(name, quote=False)


def shutil_copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copy(src, dst)


def _external_sources(html: str) -> list[str]:
    """Every src/href of a script, link, img or iframe that names another host."""
    return re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)",
                      html, re.I)  # fmt: skip


def _open_offline(html: Path) -> dict:
    """Open ``html`` in Chromium; list every request that is not the page itself, and read the page."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])  # fmt: skip
        try:
            page = browser.new_page()
            requests: list[str] = []
            page_url = html.resolve().as_uri()
            page.on("request", lambda r: requests.append(r.url) if r.url != page_url else None)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
            page.wait_for_timeout(1000)
            assert not errors, errors
            return {
                "requests": requests,
                "figures": page.locator(".plotly-graph-div:has(.main-svg)").count(),
                "javascript_links": page.evaluate(
                    "() => [...document.querySelectorAll('a[href], [*|href]')].filter(a => "
                    "(a.getAttribute('href') || a.getAttribute('xlink:href') || '').trim().toLowerCase()"
                    ".startsWith('javascript')).length"
                ),
                "images": page.evaluate("() => document.querySelectorAll('main img').length"),
                "headings": page.evaluate(
                    "() => [...document.querySelectorAll('h2')].map(h => h.textContent)"
                ),
                "titles": page.evaluate(
                    "() => [...document.querySelectorAll('.gtitle')].map(t => t.textContent)"
                ),
            }
        finally:
            browser.close()
