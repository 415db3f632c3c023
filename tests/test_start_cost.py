"""The cost of starting: what the command line imports, and the config-only outline of a model.

``diffcut-lab layers`` reads a model's hook points from its config files (no diffusers, no pandas); the
outline it reads must be what the built modules say. No timing is checked here (see
``benchmarks/load_time.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffcut_lab.backbones import load_backbone, model_outline, pocket_weights_dir
from diffcut_lab.commands.layers import format_table
from diffcut_lab.errors import ParameterError
from diffcut_lab.hook_points import (
    FRAME_COLUMNS,
    diffcut_layer_name,
    hook_point_rows,
    hook_points_frame,
    list_hook_points,
    outline_from_config,
    resolve_layers,
    unet_outline,
)
from diffcut_lab.testing import save_tiny_model, tiny_configs

POCKET_CONFIG = json.loads((pocket_weights_dir() / "unet" / "config.json").read_text())

SD21_LIKE = {  # SD 2.x: per-block head counts, linear projections, 1024-d cross-attention
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "use_linear_projection": True,
    "sample_size": 96,
}

SMALL_VARIANTS = {
    "pocket": POCKET_CONFIG,
    **{f"tiny-{f}": tiny_configs(f)["unet"] for f in ("sd1", "sdxl", "pixel")},
    "layers-per-block-list": {**tiny_configs("sd1")["unet"], "layers_per_block": [1, 2, 1]},
    "no-mid-block": {**tiny_configs("sd1")["unet"], "mid_block_type": None},
    "resnet-mid-block": {**tiny_configs("sd1")["unet"], "mid_block_type": "UNetMidBlock2D"},
    "only-cross-attention": {**tiny_configs("sd1")["unet"], "only_cross_attention": True},
    "heads-not-dividing-width": {**tiny_configs("pixel")["unet"], "attention_head_dim": 3},
    "per-layer-depths": {
        **tiny_configs("sdxl")["unet"],
        "transformer_layers_per_block": [[1, 2], [2, 1]],
        "reverse_transformer_layers_per_block": [[1, 2, 1], [2, 1, 3]],
    },
}


def _built(config: dict):
    from diffcut_lab._diffusers import new_unet

    return new_unet(config, empty=True)


@pytest.mark.parametrize("name", sorted(SMALL_VARIANTS))
def test_outline_from_config_is_what_the_built_modules_say(name):
    config = SMALL_VARIANTS[name]
    outline = outline_from_config(config)
    assert outline is not None
    assert outline == unet_outline(_built(config))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SD15", "SDXL", "SSD_1B", "VEGA", "SD21_LIKE"])
def test_outline_from_config_of_full_size_models(name):
    import test_foundation_fullsize as full

    config = SD21_LIKE if name == "SD21_LIKE" else getattr(full, name)
    assert outline_from_config(config) == unet_outline(_built(config))


@pytest.mark.parametrize(
    "change",
    [
        {"dual_cross_attention": True},
        {"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"},
        {"down_block_types": ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]},
        {"attention_type": "gated"},
        {"cross_attention_dim": None},
        {"_class_name": "UNet2DModel"},
        {"block_out_channels": [32, 64]},  # fewer widths than blocks
    ],
)
def test_outline_from_config_declines_what_it_does_not_read(change):
    assert outline_from_config({**tiny_configs("sd1")["unet"], **change}) is None


def _same_listing(outline, backbone):
    assert (outline.name, outline.family, outline.image_size, outline.latent_scale) == (
        backbone.name, backbone.family, backbone.image_size, backbone.latent_scale,
    )  # fmt: skip
    assert outline.size_multiple == backbone.size_multiple
    assert list_hook_points(outline) == list_hook_points(backbone)
    assert list_hook_points(outline, kind="probs", image_size=96) == list_hook_points(
        backbone, kind="probs", image_size=96
    )
    assert diffcut_layer_name(outline) == diffcut_layer_name(backbone)
    assert resolve_layers(outline, ["diffcut", "attn1"]) == resolve_layers(backbone, ["diffcut", "attn1"])
    assert hook_point_rows(outline) == hook_point_rows(backbone)


def test_model_outline_of_pocket_is_the_weightless_backbone():
    outline = model_outline("pocket")
    _same_listing(outline, load_backbone("pocket", weights=False, device="cpu"))
    assert diffcut_layer_name(outline) == "down_blocks.2.attentions.0.transformer_blocks.0.attn1"
    with pytest.raises(ParameterError, match="multiples of 4"):
        outline.check_image_size(126)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_model_outline_of_a_directory(tmp_path, family):
    root = save_tiny_model(tmp_path / family, family, write_meta=False)
    _same_listing(model_outline(root), load_backbone(root, weights=False, device="cpu"))


def test_model_outline_builds_the_modules_when_the_config_is_not_read(tmp_path):
    root = save_tiny_model(tmp_path / "m", "sd1")
    cfg_path = root / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}))
    assert outline_from_config(json.loads(cfg_path.read_text())) is None
    outline = model_outline(root)
    _same_listing(outline, load_backbone(root, weights=False, device="cpu"))
    assert any(p.stage == "mid" for p in list_hook_points(outline))


@pytest.mark.parametrize("kind", [None, "attn1", ["resnet", "probs"]])
def test_layers_table_and_csv_are_what_pandas_writes(kind):
    outline = model_outline("pocket")
    frame = hook_points_frame(outline, kind=kind).drop(columns=["order"])
    rows = hook_point_rows(outline, kind=kind)
    columns = [c for c in FRAME_COLUMNS if c != "order"]
    shown = frame.copy()
    shown["diffcut"] = shown["diffcut"].map({True: "<- diffcut", False: ""})
    table_rows = [{**r, "diffcut": "<- diffcut" if r["diffcut"] else ""} for r in rows]
    assert format_table(table_rows, columns) == shown.to_string(index=False)


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


HEAVY = ("torch", "diffusers", "transformers", "accelerate", "pandas", "scipy", "plotly")


def test_layers_command_imports_neither_diffusers_nor_pandas():
    code = (
        "import contextlib, io, sys\n"
        "from diffcut_lab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['layers', '--model', 'pocket']) == 0\n"
        "assert '<- diffcut' in out.getvalue()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    assert set(_run(code).split()) <= {"torch"}  # torch comes with diffcut_lab.backbones, nothing else heavy


def test_hook_point_module_imports_without_torch():
    code = f"import sys, diffcut_lab.hook_points; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    assert _run(code).strip() == ""


def test_layers_command_on_a_directory_matches_the_built_backbone(tmp_path, capsys):
    from diffcut_lab import cli

    src = save_tiny_model(tmp_path / "sdxl", "sdxl")
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    assert cli.main(["layers", "--model", str(root), "--format", "csv", "--kind", "attn1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    backbone = load_backbone(root, weights=False, device="cpu")
    assert lines[0] == "name,kind,stage,block,channels,height,width,tokens,diffcut"
    assert [line.split(",")[0] for line in lines[1:]] == [
        p.name for p in list_hook_points(backbone, kind="attn1")
    ]
    assert sum(line.endswith(",True") for line in lines[1:]) == 1


def test_pocket_weights_are_safetensors():
    """The bundled weights are read memory-mapped by safetensors (no pickle, no copy of the file)."""
    unet = Path(pocket_weights_dir()) / "unet"
    assert (unet / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(unet.glob("*.bin"))


def _load_time_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load_time.py"
    spec = importlib.util.spec_from_file_location("benchmark_load_time", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_import_profile_is_summed_by_package():
    text = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |     torch._dynamo.utils\n"
        "import time:       300 |        400 |   torch._dynamo\n"
        "import time:       600 |       1000 | diffusers.models.unets.unet_2d\n"
    )
    prof = _load_time_benchmark().parse_importtime(text)
    assert prof["modules"] == 3 and prof["total_import_s"] == 0.001
    assert prof["heavy_packages_imported"] == ["torch._dynamo"]
    assert [r["package"] for r in prof["by_package"]] == ["diffusers.models.unets", "torch._dynamo"]


def test_load_time_benchmark_runs_the_layers_command(tmp_path):
    out = tmp_path / "load_time.json"
    assert _load_time_benchmark().main(["--repeats", "1", "--commands", "layers", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["commands"]
    assert set(res["this"]["layers"]) == {"exit_s", "cpu_s"}
    assert "diffusers" not in res["import_profile"]["this"]["layers"]["heavy_packages_imported"]
