"""The package's metadata, conda environment and CI scripts agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the package itself supports 3.10

REPO = Path(__file__).resolve().parents[1]

# PyPI name -> conda-forge / pytorch channel name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "kaleido": "python-kaleido"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _conda_names() -> set[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    names: set[str] = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(d) for d in dep.get("pip", []) if not d.startswith("-")}
        else:
            names.add(_name(dep))
    return names


def test_environment_names_every_runtime_dependency():
    conda = _conda_names()
    runtime = [_name(r) for r in _pyproject()["project"]["dependencies"]]
    missing = [n for n in runtime if CONDA_NAMES.get(n, n) not in conda]
    assert not missing, f"environment.yml lacks runtime dependencies of pyproject.toml: {missing}"


def test_environment_lower_bounds_match_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    flat = [d for d in env["dependencies"] if isinstance(d, str)]
    flat += next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_bounds = {_name(d): d for d in flat}
    for req in _pyproject()["project"]["dependencies"]:
        name = _name(req)
        bound = re.search(r">=\s*([\w.]+)", req)
        conda_req = conda_bounds[CONDA_NAMES.get(name, name)]
        if bound:
            assert f">={bound.group(1)}" in conda_req.replace(" ", ""), (req, conda_req)


def test_every_runtime_dependency_has_a_lower_bound():
    for req in _pyproject()["project"]["dependencies"]:
        assert ">=" in req, f"{req!r} has no lower bound"


def test_console_script_points_at_cli_main():
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["diffcut-lab"] == "diffcut_lab.cli:main"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    test_cmd = "bash .ci/test"
    demo_cmd = "bash .ci/demo"
    assert test_cmd in readme and demo_cmd in readme
    assert re.search(rf"^{re.escape(test_cmd)}$", ci, re.M), ".ci/run must call the README's test command"


def test_cpu_install_pins_torch():
    install = (REPO / ".ci" / "install").read_text()
    assert re.search(r"torch==\d+\.\d+\.\d+", install), "the CPU path must pin torch (no CUDA download)"


def test_package_data_ships_pocket_weights_pattern():
    data = _pyproject()["tool"]["setuptools"]["package-data"]["diffcut_lab"]
    assert any(p.startswith("pocket/weights") for p in data)
