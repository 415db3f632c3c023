"""Full-size UNet configs (SD 1.5, SDXL base, SSD-1B, Segmind-Vega) built on the meta device: naming,
channels, resolutions and the "diffcut" alias, without any weights.

The configs are the public ``unet/config.json`` values of those models (defaults of
``UNet2DConditionModel`` omitted). SSD-1B and Vega are SDXL with transformer blocks removed; their
per-attention depths follow ComfyUI's model-detection table (SSD-1B: encoder [0,0,2,2,4,4], decoder
[4,4,10 | 2,1,1 | 0,0,0], mid block a single resnet; Vega: encoder [0,0,1,1,2,2], decoder [2,2,2 | 1,1,1]).
"""

from __future__ import annotations

import pytest

from diffcut_lab.backbones import backbone_from_config, detect_family
from diffcut_lab.hooks import diffcut_layer_name, list_hook_points, memory_estimate, resolve_layers

pytestmark = pytest.mark.slow  # building the module trees takes a few seconds

SD15 = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SDXL = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

SSD_1B = {
    **SDXL,
    "mid_block_type": "UNetMidBlock2D",
    "transformer_layers_per_block": [[1], [2, 2], [4, 4]],
    "reverse_transformer_layers_per_block": [[4, 4, 10], [2, 1, 1], 1],
}

VEGA = {
    **SDXL,
    "mid_block_type": "UNetMidBlock2D",
    "transformer_layers_per_block": [[1], [1, 1], [2, 2]],
    "reverse_transformer_layers_per_block": [[2, 2, 2], [1, 1, 1], 1],
}


@pytest.fixture(scope="module")
def models():
    return {
        name: backbone_from_config(cfg, name=name)
        for name, cfg in (("sd15", SD15), ("sdxl", SDXL), ("ssd-1b", SSD_1B), ("vega", VEGA))
    }


def test_family_detection():
    assert detect_family(SD15) == "sd1"
    assert (
        detect_family({**SD15, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20]}) == "sd2"
    )
    assert detect_family(SDXL) == "sdxl"
    assert detect_family(SSD_1B) == "ssd-1b"
    assert detect_family(VEGA) == "vega"


def test_meta_device_and_native_sizes(models):
    for bb in models.values():
        assert bb.device.type == "meta" and bb.latent_scale == 8
    assert models["sd15"].image_size == 512
    assert {models[k].image_size for k in ("sdxl", "ssd-1b", "vega")} == {1024}


def test_ssd1b_diffcut_layer(models):
    bb = models["ssd-1b"]
    name = diffcut_layer_name(bb)
    assert name == "down_blocks.2.attentions.1.transformer_blocks.3.attn1"
    assert resolve_layers(bb, "diffcut") == [name]
    point = next(p for p in list_hook_points(bb, image_size=1024) if p.name == name)
    assert point.channels == 1280 and point.resolution == (32, 32) and point.stage == "down"
    # the mid block of SSD-1B is a single resnet: no mid-block attention
    assert not any(p.stage == "mid" and p.kind != "resnet" for p in list_hook_points(bb))
    assert [p.name for p in list_hook_points(bb, kind="resnet") if p.stage == "mid"] == [
        "mid_block.resnets.0"
    ]
    # 4 MiB-ish per image: 1280 x 32 x 32 float32
    assert memory_estimate(bb, "diffcut", 50, batch=1) == 1280 * 32 * 32 * 4


def test_counts_and_decoder_depths(models):
    def attn1(bb):
        return list_hook_points(bb, kind="attn1")

    assert len(attn1(models["sd15"])) == 16  # 6 down, 1 mid, 9 up
    assert len(attn1(models["sdxl"])) == 70  # 24 down, 10 mid, 36 up
    assert len(attn1(models["ssd-1b"])) == 12 + 18 + 4
    assert len(attn1(models["vega"])) == 6 + 6 + 3
    ssd_up = [p.name for p in attn1(models["ssd-1b"]) if p.name.startswith("up_blocks.0.attentions.2.")]
    assert ssd_up[-1] == "up_blocks.0.attentions.2.transformer_blocks.9.attn1"


def test_sd15_and_sdxl_aliases_and_shapes(models):
    sd = models["sd15"]
    assert diffcut_layer_name(sd) == "down_blocks.2.attentions.1.transformer_blocks.0.attn1"
    p = next(p for p in list_hook_points(sd) if p.name == diffcut_layer_name(sd))
    assert (p.channels, p.resolution) == (1280, (16, 16))
    xl = models["sdxl"]
    assert diffcut_layer_name(xl) == "down_blocks.2.attentions.1.transformer_blocks.9.attn1"
    assert diffcut_layer_name(models["vega"]) == "down_blocks.2.attentions.1.transformer_blocks.1.attn1"
    res = {p.name.rsplit(".resnets", 1)[0]: p.resolution for p in list_hook_points(xl, kind="resnet")}
    assert res["down_blocks.0"] == (128, 128) and res["mid_block"] == (32, 32)
    assert (
        res["up_blocks.0"] == (32, 32) and res["up_blocks.1"] == (64, 64) and res["up_blocks.2"] == (128, 128)
    )
    chans = {
        p.name.split(".")[0] + p.name.split(".")[1]: p.channels for p in list_hook_points(sd, kind="resnet")
    }
    assert chans["down_blocks0"] == 320 and chans["up_blocks3"] == 320


def test_every_name_is_a_module(models):
    for bb in models.values():
        modules = dict(bb.unet.named_modules())
        for p in list_hook_points(bb):
            assert p.module_name in modules
