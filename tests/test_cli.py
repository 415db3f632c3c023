"""The command line: every command is registered, explains itself, and fails cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffcut_lab import cli

EXPECTED = ["segment", "layers", "report", "eval", "ablate"]


def _registered() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


def test_all_commands_are_registered():
    assert sorted(_registered()) == sorted(EXPECTED)


@pytest.mark.parametrize("command", EXPECTED)
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"diffcut-lab {command}" in out
    assert len(out.splitlines()) > 5, "help should explain the options"


def test_module_entry_point_prints_version():
    out = subprocess.run(
        [sys.executable, "-m", "diffcut_lab", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("diffcut-lab ")


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
