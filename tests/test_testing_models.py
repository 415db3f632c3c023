"""The tiny test backbones everyone's tests use: small, fast, deterministic, same code paths."""

from __future__ import annotations

import pytest
import torch

from diffcut_lab.hooks import diffcut_layer_name, list_hook_points
from diffcut_lab.testing import TINY_FAMILIES, save_tiny_model, tiny_backbone, tiny_configs


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_backbone_is_small_and_runs(family):
    """Small enough for every test to build; speed is measured in benchmarks/responsiveness.py."""
    bb = tiny_backbone(family)
    assert sum(p.numel() for p in bb.unet.parameters()) < 3_000_000
    x = torch.rand(2, 3, bb.image_size, bb.image_size)
    z = bb.encode(x)
    assert z.shape == (2, bb.in_channels, bb.image_size // bb.latent_scale, bb.image_size // bb.latent_scale)
    out = bb.forward(bb.add_noise(z, 50), 50)
    assert out.shape == z.shape and torch.isfinite(out).all()


def test_families_have_the_expected_structure():
    sd1, sdxl, pixel = (tiny_backbone(f) for f in TINY_FAMILIES)
    assert (sd1.family, sd1.latent_scale, sd1.vae is not None) == ("sd1", 4, True)
    assert sd1.added_cond_kwargs is None
    assert (sdxl.family, sdxl.unet.config.addition_embed_type) == ("sdxl", "text_time")
    assert set(sdxl.added_cond_kwargs) == {"text_embeds", "time_ids"}
    assert (pixel.family, pixel.latent_scale, pixel.vae) == ("pocket", 1, None)
    for bb in (sd1, sdxl, pixel):
        stages = {p.name.split(".")[1] for p in list_hook_points(bb, kind="attn1") if p.stage == "down"}
        assert len(stages) >= 2, "attention in at least two encoder stages"
        assert 8 <= bb.image_size // bb.latent_scale <= 64
    # the SDXL-like model has several transformer blocks in its deepest attention stage
    assert diffcut_layer_name(sdxl).endswith("transformer_blocks.1.attn1")


def test_same_seed_same_model_different_seed_different():
    a, b, c = tiny_backbone("sd1", seed=3), tiny_backbone("sd1", seed=3), tiny_backbone("sd1", seed=4)
    wa = dict(a.unet.named_parameters())
    wb = dict(b.unet.named_parameters())
    wc = dict(c.unet.named_parameters())
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds)


def test_image_size_and_dtype_options():
    bb = tiny_backbone("pixel", image_size=32, dtype=torch.bfloat16)
    assert bb.image_size == 32 and bb.dtype == torch.bfloat16
    assert bb.prompt_embeds.dtype == torch.bfloat16
    assert tiny_configs("sd1", 128)["unet"]["sample_size"] == 32
    with pytest.raises(ValueError):
        tiny_configs("dit")


@pytest.mark.parametrize("family", ["sd1", "pixel"])
def test_save_tiny_model_layout(tmp_path, family):
    root = save_tiny_model(tmp_path / family, family)
    assert (root / "unet" / "config.json").exists()
    assert (root / "scheduler" / "scheduler_config.json").exists()
    assert (root / "conditioning.safetensors").exists()
    assert (root / "diffcut_lab.json").exists()
    assert (root / "vae").is_dir() is (family != "pixel")


def test_building_tiny_models_leaves_global_torch_state_alone():
    import torch

    from diffcut_lab.testing import tiny_backbone

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_backbone("sd1", dtype=torch.bfloat16)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert torch.get_default_dtype() == torch.float32
