"""The tree of cuts draws its hatching in a form plotly.js accepts: no "Invalid color specifier" in the
browser console, in the static step-through figure (every frame), the tree figure and the app's figure.

plotly.js takes a ``marker.pattern`` only on a bar trace with one ``marker.color``: with a per-bar colour
array it logs ``Invalid color specifier: Array(n)`` and draws part of the hatching dark. The first tests read
the figures' JSON; the last opens them in Chromium (Playwright) and reads the console.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from _browser import CHROMIUM, _chromium_page

import diffcut_lab as dl
from diffcut_lab import viz
from diffcut_lab.viz import _step_data as sd


@pytest.fixture(scope="module")
def tree():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:24, :24]
    seg = (xx >= 8).astype(int) + 2 * (yy >= 16) + (xx >= 18)
    feats = rng.normal(size=(8, 24, 24)) * 0.4 + rng.normal(size=(5, 8))[seg].transpose(2, 0, 1)
    tree = dl.cut_tree(feats.astype(np.float32), dl.DiffCutConfig(tau=0.6))
    assert any(s.accepted for s in tree.steps) and not all(s.accepted for s in tree.steps), tree
    return tree


def _figures(tree) -> dict[str, go.Figure]:
    image = np.full((48, 48, 3), 120, np.uint8)
    return {
        "steps": viz.cut_steps_figure(tree, image),
        "tree": viz.cut_tree_figure(tree),
        "app": go.Figure(viz.cut_stepper(tree, image).figure),
    }


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _bar_dicts(fig: go.Figure) -> Iterator[tuple[str, dict, dict]]:
    """``(where, properties, trace)`` of every bar trace of the figure and of its frames, as plotly JSON
    (a frame's properties are merged into its trace's, which holds the ones a frame leaves unchanged)."""
    js = fig.to_plotly_json()
    for j, tr in enumerate(js["data"]):
        if tr.get("type") == "bar":
            yield f"data[{j}]", tr, tr
    for frame in js.get("frames", []):
        for idx, tr in zip(frame["traces"], frame["data"]):
            if js["data"][idx].get("type") == "bar":
                yield f"frame {frame['name']}, trace {idx}", tr, js["data"][idx]


def test_patterns_sit_on_bars_of_one_colour(tree):
    """A pattern only on a bar trace whose marker colour is one colour, and its own colours scalar."""
    for name, fig in _figures(tree).items():
        patterned = 0
        for where, tr, trace in _bar_dicts(fig):
            marker, own = tr.get("marker", {}), trace.get("marker", {})
            pattern = {**own.get("pattern", {}), **marker.get("pattern", {})}
            if not pattern.get("shape"):
                continue
            patterned += 1
            colour = marker.get("color", own.get("color"))
            assert isinstance(colour, str), (name, where, colour)
            for key in ("fgcolor", "bgcolor"):
                assert not _is_array(pattern.get(key)), (name, where, key)
        assert patterned, name


def test_the_hatching_marks_the_rejected_cuts_over_the_nodes(tree):
    """The same chart as before: the nodes keep their colours; the rejected ones are hatched white, at the
    same places, faded alike."""
    rejected = ["" if s.accepted else "/" for s in tree.steps]
    fig = viz.cut_steps_figure(tree)
    nodes, hatch = fig.data[sd.T_ICICLE], fig.data[sd.T_HATCH]
    assert nodes.marker.pattern.shape is None and len(set(nodes.marker.color)) > 1
    assert list(hatch.marker.pattern.shape) == rejected
    assert (hatch.marker.pattern.fgcolor, hatch.marker.pattern.size, hatch.marker.pattern.solidity) == (
        "white",
        7,
        0.25,
    )
    for key in ("x", "base", "y"):
        assert list(hatch[key]) == list(nodes[key])
    assert list(hatch.marker.opacity) == list(nodes.marker.opacity)
    assert hatch.hoverinfo == "skip" and hatch.showlegend is False  # hover and clicks go to the nodes
    alone = viz.cut_tree_figure(tree)
    assert [t.type for t in alone.data] == ["bar", "bar"] and list(
        alone.data[1].marker.pattern.shape
    ) == rejected
    assert alone.layout.showlegend is False


def test_the_app_moves_the_hatching_with_the_nodes(tree):
    """In the app the hatching follows the step (fading) and a pruned tree (fewer nodes)."""
    app = viz.cut_stepper(tree, np.full((48, 48, 3), 120, np.uint8))
    nodes, hatch = app.figure.data[sd.T_ICICLE], app.figure.data[sd.T_HATCH]
    app.show_step(3)
    assert list(hatch.marker.opacity) == list(nodes.marker.opacity) and nodes.marker.opacity[3] < 1
    app.set_tau(0.2)  # pruned below the first cut: one step
    assert len(app.tree.steps) < len(tree.steps)
    for key in ("x", "base", "y"):
        assert list(hatch[key]) == list(nodes[key])
    assert list(hatch.marker.pattern.shape) == ["" if s.accepted else "/" for s in app.tree.steps]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium at /usr/bin/chromium")
def test_no_colour_warnings_in_the_browser_console(tree, tmp_path):
    """Each figure draws with an empty console, and the static figure's frames (every step) add no colour
    warning; the hatching is drawn in white lines."""
    drawn: dict[str, list[str]] = {}
    stepped: list[str] = []
    messages: list[str] = []
    with _chromium_page(1300, 900) as page:
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        for name, fig in _figures(tree).items():
            html = tmp_path / f"{name}.html"
            fig.write_html(html, include_plotlyjs=True)
            page.goto(html.as_uri())
            page.wait_for_function(
                "() => document.querySelector('.js-plotly-plot')?._fullLayout", timeout=30_000
            )
            page.wait_for_timeout(300)
            strokes = page.evaluate(
                "() => [...document.querySelectorAll('pattern path')].map(p => p.getAttribute('stroke'))"
            )
            assert strokes and set(strokes) == {"rgb(255, 255, 255)"}, (name, strokes)
            drawn[name] = messages[:]
            messages.clear()
            for k in range(1, len(fig.frames) + 1):  # every step of the static figure
                page.evaluate("async (k) => await Plotly.animate(document.querySelector('.js-plotly-plot'),"
                              " [String(k)], {mode: 'immediate', frame: {duration: 0, redraw: true},"
                              " transition: {duration: 0}})", k)  # fmt: skip
            page.wait_for_timeout(300)
            stepped += messages
            messages.clear()
    assert not any(drawn.values()), drawn
    # (moving through the frames also logs a NaN transform of the tau line's text and an undefined page
    # error, from plotly.js's animation; colour warnings are what is checked here)
    assert not [m for m in stepped if "color" in m.lower()], stepped
