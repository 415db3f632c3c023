"""The pocket model without diffusers (``diffcut_lab.pocket.unet`` and ``.schedule``): the same bits.

``load_backbone("pocket")`` builds the bundled model's UNet and noise schedule in plain torch;
``load_backbone(<the weights directory>)`` builds the same model through diffusers. Weights, outputs,
every captured feature (``.probs`` included), the noise, the cut labels and the model fingerprint must be
equal to the bit, and loading the pocket model must import no diffusers module.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffcut_lab import _assembly
from diffcut_lab.backbones import load_backbone, pocket_weights_dir
from diffcut_lab.feature_cache import model_fingerprint
from diffcut_lab.hooks import capture, list_hook_points
from diffcut_lab.pipeline import DiffCut
from diffcut_lab.pocket import schedule as light_schedule
from diffcut_lab.pocket import unet as light_unet
from diffcut_lab.testing import save_tiny_model, tiny_configs

TIMESTEPS = [50, 400]


@pytest.fixture(scope="module")
def light():
    return load_backbone("pocket", device="cpu")


@pytest.fixture(scope="module")
def reference():
    """The same weights through diffusers: a directory source takes diffusers' path."""
    return load_backbone(pocket_weights_dir(), device="cpu")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=128, mode="bilinear")
    return (0.7 * smooth + 0.3 * torch.rand(2, 3, 128, 128, generator=g)).clamp(0, 1)


def test_the_pocket_model_takes_the_light_path(light, reference):
    assert isinstance(light.unet, light_unet.UNet2DConditionModel)
    assert isinstance(light.scheduler, light_schedule.NoiseSchedule)
    assert type(reference.unet).__module__.startswith("diffusers.")
    assert (light.family, light.image_size, light.latent_scale, light.diffcut_layer) == (
        reference.family, reference.image_size, reference.latent_scale, reference.diffcut_layer,
    )  # fmt: skip


def test_state_dict_loads_strictly_with_diffusers_names_in_diffusers_order(light, reference):
    from safetensors.torch import load_file

    stored = load_file(str(pocket_weights_dir() / "unet" / light_unet.WEIGHTS_FILE))
    fresh = light_unet.new_unet(light_unet.read_config(pocket_weights_dir() / "unet"))
    assert not fresh.load_state_dict(stored, strict=True).missing_keys
    ours, theirs = light.unet.state_dict(), reference.unet.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
    assert [n for n, _ in light.unet.named_modules()] == [n for n, _ in reference.unet.named_modules()]
    assert not light.unet.training and not any(p.requires_grad for p in light.unet.parameters())


def test_config_and_fingerprint_are_diffusers(light, reference):
    assert dict(light.scheduler.config) == dict(reference.scheduler.config)
    ref_cfg = {k: v for k, v in reference.unet.config.items() if not k.startswith("_")}
    ours = {k: light.unet.config[k] for k in ref_cfg}
    norm = json.loads(json.dumps(ours)), json.loads(json.dumps(ref_cfg))  # tuples and lists alike
    assert norm[0] == norm[1]
    assert model_fingerprint(light) == model_fingerprint(reference)  # feature caches stay valid


def test_noise_schedule_is_the_same_bits(light, reference, images):
    assert torch.equal(light.scheduler.alphas_cumprod, reference.scheduler.alphas_cumprod)
    z = light.encode(images)
    for t in (0, 50, 400, 999):
        assert torch.equal(light.add_noise(z, t, seed=7), reference.add_noise(z, t, seed=7))


@pytest.mark.parametrize("t", TIMESTEPS)
def test_unet_output_is_the_same_bits(light, reference, images, t):
    x_t = light.add_noise(light.encode(images), t)
    assert torch.equal(light.forward(x_t, t), reference.forward(x_t, t))
    other = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(t))  # not square, not native
    assert torch.equal(light.forward(other, t), reference.forward(other, t))


def test_every_feature_and_probs_are_the_same_bits(light, reference, images):
    names = [p.name for p in list_hook_points(light)]
    assert names == [p.name for p in list_hook_points(reference)]
    assert list_hook_points(light) == list_hook_points(reference)
    kw = dict(layers=names, timesteps=TIMESTEPS, early_exit=False)
    ours, theirs = capture(light, images, **kw), capture(reference, images, **kw)
    attn1 = [n for n in names if n.endswith(".attn1")]
    assert attn1 and all(f"{n}.probs" in names for n in attn1)
    for t in TIMESTEPS:
        for n in names:
            assert torch.equal(ours[n, t], theirs[n, t]), (n, t)
    # the processors were put back
    assert {type(p) for p in light.unet.attn_processors.values()} == {light_unet.AttnProcessor2_0}


def test_early_exit_stops_at_the_deepest_layer(light, reference, images):
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
    kw = dict(layers=[layer, f"{layer}.probs"], timesteps=50)
    ours, theirs = capture(light, images[:1], **kw), capture(reference, images[:1], **kw)
    assert torch.equal(ours[layer, 50], theirs[layer, 50])
    assert torch.equal(ours[f"{layer}.probs", 50], theirs[f"{layer}.probs", 50])


def test_segment_gives_the_same_labels(light, reference):
    img = np.full((96, 112, 3), 30, np.uint8)
    img[:, 56:] = (220, 210, 40)
    img[20:50, 10:40] = (200, 30, 30)
    a, b = DiffCut(light).segment(img), DiffCut(reference).segment(img)
    assert np.array_equal(a.labels, b.labels)
    assert torch.equal(torch.as_tensor(a.features), torch.as_tensor(b.features))


def test_loading_the_pocket_model_imports_no_diffusers():
    code = "import diffcut_lab; from diffcut_lab.backbones import load_backbone; load_backbone('pocket')"
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line]
    assert "torch" in imported
    assert not [m for m in imported if m.split(".")[0] in ("diffusers", "transformers", "accelerate", "peft")]


def test_weightless_pocket_is_light_and_lists_the_same_points(reference):
    bb = load_backbone("pocket", weights=False, device="cpu")
    assert isinstance(bb.unet, light_unet.UNet2DConditionModel)
    assert next(bb.unet.parameters()).device.type == "meta"
    assert list_hook_points(bb, image_size=96) == list_hook_points(reference, image_size=96)


def test_a_retrained_pocket_model_with_other_shapes_is_the_same_bits(tmp_path, monkeypatch):
    """Random weights and another layout (two cross-attention up blocks, 8 groups): still the same bits."""
    root = save_tiny_model(tmp_path / "weights", "pixel")
    monkeypatch.setattr("diffcut_lab.backbones.pocket_weights_dir", lambda: root)
    ours, theirs = load_backbone("pocket", device="cpu"), load_backbone(root, device="cpu")
    assert isinstance(ours.unet, light_unet.UNet2DConditionModel)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    names = [p.name for p in list_hook_points(ours)]
    kw = dict(layers=names, timesteps=[10, 700], early_exit=False)
    a, b = capture(ours, x, **kw), capture(theirs, x, **kw)
    assert all(torch.equal(a[n, t], b[n, t]) for n in names for t in (10, 700))
    x_t = ours.add_noise(ours.encode(x), 700)
    assert torch.equal(ours.forward(x_t, 700), theirs.forward(x_t, 700))


@pytest.mark.parametrize(
    "change",
    [
        {"addition_embed_type": "text_time"},
        {"down_block_types": ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]},
        {"mid_block_type": None},
        {"attention_type": "gated"},
        {"resnet_time_scale_shift": "scale_shift"},
        {"transformer_layers_per_block": [[1, 2], 1, 1]},
        {"_class_name": "UNet2DModel"},
    ],
)
def test_configs_it_does_not_build_go_through_diffusers(change):
    config = {**tiny_configs("pixel")["unet"], **change}
    assert light_unet.supports(tiny_configs("pixel")["unet"]) and not light_unet.supports(config)
    with pytest.raises(ValueError):
        light_unet.UNet2DConditionModel(config)


def test_only_the_pocket_source_is_light(tmp_path):
    from diffcut_lab._checkpoints import read_layout

    root = save_tiny_model(tmp_path / "m", "pixel")
    layout = read_layout(root, str(root))
    assert _assembly.builds_light(layout, "pocket")
    assert not _assembly.builds_light(layout, str(root))
    assert not _assembly.builds_light(layout, "pocket", use_safetensors=False)
