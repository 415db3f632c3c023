"""The command line: every command is registered, explains itself, and fails cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffcut_lab import cli

EXPECTED = ["segment", "layers", "report", "eval", "ablate", "notebooks"]


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


CONFIG_COMMANDS = ["segment", "report", "eval"]
REQUIRED = {"segment": ["x.png"], "report": ["--samples"], "eval": ["--dataset", "synthetic"]}


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_settings_have_one_default_everywhere(command):
    """Options made from DiffCutConfig's fields: no option given is DiffCutConfig(); --paper the preset."""
    from diffcut_lab import DiffCutConfig
    from diffcut_lab.commands._options import DEFAULT_MODEL, config_from_args

    parser = cli.build_parser()
    args = parser.parse_args([command, *REQUIRED[command]])
    assert config_from_args(args) == DiffCutConfig()
    assert args.model == DEFAULT_MODEL == "pocket"
    args = parser.parse_args([command, *REQUIRED[command], "--paper", "--tau", "0.2", "--pamr-dilations", "1", "2",
                              "--no-antialias", "--max-depth", "3"])  # fmt: skip
    assert config_from_args(args) == DiffCutConfig.paper(tau=0.2, pamr_dilations=(1, 2), max_depth=3)


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
@pytest.mark.parametrize(
    ("option", "field"),
    [(["--tau", "3"], "tau"), (["--alpha", "0"], "alpha"), (["--min-size", "0"], "min_size"),
     (["--pamr-dilations", "0"], "pamr_dilations"), (["--mode", "paper", "--min-size", "4"], "min_size")],
)  # fmt: skip
def test_bad_settings_fail_before_any_work_naming_the_field(command, option, field, capsys, monkeypatch):
    import diffcut_lab.backbones as backbones

    def no_model(*a, **k):
        raise AssertionError("a bad setting must fail before the model is loaded")

    monkeypatch.setattr(backbones, "load_backbone", no_model)
    assert cli.main([command, *REQUIRED[command], *option]) == 2
    assert field in capsys.readouterr().err


def test_a_command_that_fails_to_import_is_named_with_its_error(monkeypatch, capsys):
    """A broken command module is loud (its name and the import error, in --help and when run) and the
    other commands still work."""
    monkeypatch.setitem(cli.COMMANDS, "ghost", "ghost")
    monkeypatch.setitem(sys.modules, "diffcut_lab.commands.ghost", None)  # importing it raises ImportError
    assert sorted(_registered()) == sorted([*EXPECTED, "ghost"])
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ghost UNAVAILABLE (ModuleNotFoundError: import of diffcut_lab.commands.ghost halted" in out
    assert cli.main(["ghost", "--any", "thing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffcut-lab ghost: error: the command is unavailable")
    assert (
        "diffcut_lab.commands.ghost failed to import (ModuleNotFoundError: import of diffcut_lab.commands.ghost"
        in err
    )
    assert cli.main(["layers", "--model", "pocket", "--kind", "attn1"]) == 0
    assert "<- diffcut" in capsys.readouterr().out


def test_help_does_not_import_torch():
    code = "import sys; from diffcut_lab import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_os_errors_are_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """A full disk (or a permission, or a file in the way) ends with exit 2 and one readable line."""
    import diffcut_lab.commands.layers as layers

    def full_disk(args):
        raise OSError(28, "No space left on device", str(tmp_path / "out.png"))

    monkeypatch.setattr(layers, "run", full_disk)
    assert cli.main(["layers", "--model", "pocket"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "out.png" in err
    (tmp_path / "blocker").write_text("x")
    assert cli.main(["ablate", "examples/ablation_pocket.yaml", "--out", str(tmp_path / "blocker")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    """``diffcut-lab layers | head -1``: no BrokenPipeError traceback when the reader stops early."""
    code = (
        "import sys; from diffcut_lab import cli\n"
        "sys.argv = ['diffcut-lab', 'layers', '--model', 'pocket']\n"
        "raise SystemExit(cli.main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_notebooks_command_copies_every_notebook_with_the_model_set(tmp_path, capsys):
    import json

    from diffcut_lab.cli import main

    out = tmp_path / "mine"
    assert main(["notebooks", str(out), "--model", "segmind/SSD-1B"]) == 0
    names = sorted(p.name for p in out.iterdir())
    shipped = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
    assert names == shipped and len(names) == 6
    for path in out.iterdir():
        nb = json.loads(path.read_text())
        params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        assert 'model = "segmind/SSD-1B"' in "".join(params["source"]).splitlines(), path.name
        assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert f"jupyter lab {out}" in capsys.readouterr().err
    assert main(["notebooks", str(out)]) == 2  # nothing is overwritten without --force
    assert "--force" in capsys.readouterr().err
    assert main(["notebooks", str(out), "--force"]) == 0
    params = next(c for c in json.loads((out / names[0]).read_text())["cells"] if c["cell_type"] == "code")
    assert 'model = "pocket"' in "".join(params["source"])
