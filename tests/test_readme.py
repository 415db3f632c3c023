"""The README runs as written from a fresh clone: its Python snippets and its command lines.

Snippets and commands are read from README.md itself, so an edit of the README is tested as it reads.
They run in a temporary folder that holds the repository's ``examples/`` (every file a command names is
there). Commands that need a dataset or a model hub this machine does not have are listed in
``NEEDS_OUTSIDE`` with what they need, and must end with one line that names it (exit code 2).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: command lines that cannot run offline here, and the word their one-line error must contain
NEEDS_OUTSIDE = {"eval": "/data/VOC2012"}
#: lines of bash blocks that are not the toolkit's commands (set-up, the editor, the CI scripts themselves)
NOT_COMMANDS = ("bash .ci/", "source ", "jupyter ", "conda ")


def _blocks(lang: str) -> list[tuple[str, str]]:
    """``(heading, code)`` of every fenced block in ``lang``, with the section heading above it."""
    out = []
    heading = ""
    for m in re.finditer(r"^(#{2,4} [^\n]*)$|^```(\w*)\n(.*?)^```", README, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        elif m.group(2) == lang:
            out.append((heading, m.group(3)))
    return out


def _commands() -> list[str]:
    lines = []
    for _, code in _blocks("bash"):
        for line in code.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith(NOT_COMMANDS):
                lines.append(line)
    return lines


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _run(argv: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_every_file_the_readme_names_exists():
    named = set(re.findall(r"(examples/[\w./-]+\.\w+)", README))
    assert named, "the README names example files"
    missing = sorted(p for p in named if not (ROOT / p.rstrip(".")).exists())
    assert not missing, f"README names files that do not exist: {missing}"


def test_the_readme_lists_its_commands():
    cmds = [c.split()[1] for c in _commands() if c.startswith("diffcut-lab ")]
    assert {"layers", "segment", "report", "ablate", "eval", "notebooks"} <= set(cmds)


@pytest.mark.slow
@pytest.mark.parametrize("line", [c for c in _commands() if c.startswith("diffcut-lab ")])
def test_each_command_line_runs_as_written(line: str, workdir: Path):
    argv = shlex.split(line)
    exe = str(Path(sys.executable).with_name("diffcut-lab"))
    res = _run([exe, *argv[1:]], workdir)
    command = argv[1]
    if command in NEEDS_OUTSIDE:
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and NEEDS_OUTSIDE[command] in lines[0], res.stderr
        return
    assert res.returncode == 0, f"{line}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    outputs = [a for a in argv if a.startswith(("out/", "reports/", "results/", "my-notebooks"))]
    for out in outputs:
        assert (workdir / out).exists(), f"{line} did not write {out}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "heading,code", _blocks("python"), ids=lambda v: v[:30] if isinstance(v, str) else ""
)
def test_each_python_snippet_runs_as_written(heading: str, code: str, workdir: Path, tmp_path: Path):
    if "segmind/SSD-1B" in code and 'load_backbone("pocket")' not in code:
        pytest.skip("loads real weights from the hub (its loading code is tested on small saved models)")
    script = tmp_path / "snippet.py"
    prelude = "" if "import diffcut_lab as dl" in code else _USE_PRELUDE
    script.write_text(prelude + code, encoding="utf-8")
    res = _run([sys.executable, str(script)], workdir)
    assert res.returncode == 0, f"[{heading}]\n{res.stderr[-4000:]}"


#: later snippets continue the "Use" section's session (bb, cache) as a notebook would
_USE_PRELUDE = next(code for heading, code in _blocks("python") if heading == "Use")
