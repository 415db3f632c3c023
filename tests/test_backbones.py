"""Backbone loading (local directories, the Hub path, pocket), encoding, noising and conditioning."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
import torch

from diffcut_lab import backbones
from diffcut_lab.backbones import Backbone, detect_family, load_backbone
from diffcut_lab.errors import ModelLoadError, ParameterError, UnsupportedModelError
from diffcut_lab.testing import save_tiny_model, tiny_backbone


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {f: save_tiny_model(base / f, f) for f in ("sd1", "sdxl", "pixel")}


def _same_weights(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k].float(), pb[k].float()) for k in pa)


@pytest.mark.parametrize("family", ["sd1", "sdxl", "pixel"])
def test_local_directory_roundtrip(tiny_dirs, family):
    ref = tiny_backbone(family)
    bb = load_backbone(tiny_dirs[family], device="cpu")
    assert isinstance(bb, Backbone)
    assert bb.family == ref.family and bb.image_size == ref.image_size == 64
    assert bb.latent_scale == ref.latent_scale and bb.dtype == torch.float32
    assert _same_weights(bb.unet, ref.unet)
    assert torch.equal(bb.prompt_embeds, ref.prompt_embeds)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out_ref = ref.forward(ref.add_noise(ref.encode(x), 50), 50)
    out = bb.forward(bb.add_noise(bb.encode(x), 50), 50)
    assert torch.allclose(out, out_ref, atol=1e-6)


def test_sdxl_conditioning_time_ids(tiny_dirs):
    bb = load_backbone(tiny_dirs["sdxl"], device="cpu")
    assert bb.added_cond_kwargs["text_embeds"].shape == (1, 16)
    assert bb.added_cond_kwargs["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]]
    big = load_backbone(tiny_dirs["sdxl"], device="cpu", image_size=128)
    assert big.added_cond_kwargs["time_ids"].tolist() == [[128, 128, 0, 0, 128, 128]]
    # the added conditioning really reaches the UNet
    x_t = bb.add_noise(bb.encode(torch.rand(1, 3, 64, 64)), 50)
    assert not torch.allclose(bb.forward(x_t, 50), big.forward(x_t, 50))


def test_family_detection_without_metadata(tmp_path):
    root = save_tiny_model(tmp_path / "m", "sd1", write_meta=False)
    cfg_path = root / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert load_backbone(root, device="cpu").family == "unknown"  # 32-d cross-attention: no known family
    assert detect_family({**cfg, "cross_attention_dim": 768}) == "sd1"
    assert detect_family({**cfg, "cross_attention_dim": 1024}) == "sd2"
    assert detect_family({"addition_embed_type": "text_time", "cross_attention_dim": 64}) == "sdxl"


def test_dtype_is_applied_at_load(tiny_dirs):
    bb = load_backbone(tiny_dirs["sd1"], device="cpu", dtype=torch.bfloat16)
    assert bb.dtype == torch.bfloat16 and bb.unet.dtype == torch.bfloat16
    assert bb.vae_dtype == torch.float32  # the VAE stays in float32
    z = bb.encode(torch.rand(1, 3, 64, 64))
    assert z.dtype == torch.bfloat16
    assert bb.prompt_embeds.dtype == torch.bfloat16


def test_defaults_on_cpu():
    assert backbones.default_dtype("cpu") == torch.float32
    assert backbones.default_dtype("cuda") == torch.float16


def test_encode_pixel_space_is_2x_minus_1():
    bb = tiny_backbone("pixel")
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(bb.encode(x), 2 * x - 1)


def test_encode_vae_mean_times_scaling_factor():
    bb = tiny_backbone("sd1")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = bb.vae.encode(2 * x - 1).latent_dist.mean * bb.vae.config.scaling_factor
    assert torch.allclose(bb.encode(x), expected, atol=1e-6)
    with pytest.raises(ParameterError):
        bb.encode(torch.rand(3, 64, 64))


def test_add_noise_matches_formula_and_is_shared_across_batch():
    bb = tiny_backbone("sd1")
    z = torch.randn(3, 4, 16, 16)
    t = 50
    x_t = bb.add_noise(z, t, seed=7)
    eps = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    abar = bb.scheduler.alphas_cumprod[t]
    assert torch.allclose(x_t, abar.sqrt() * z + (1 - abar).sqrt() * eps, atol=1e-5)
    # one noise map for the whole batch: identical latents stay identical
    same = bb.add_noise(z[:1].expand(3, -1, -1, -1), t, seed=7)
    assert torch.equal(same[0], same[2])
    assert not torch.allclose(bb.add_noise(z, t, seed=8), x_t)
    g = torch.Generator().manual_seed(7)
    assert torch.allclose(bb.add_noise(z, t, generator=g), x_t)
    # the paper's constant: abar_50 ~ 0.9516 for the SD/SDXL scaled-linear schedule
    assert abs(float(abar) - 0.9516) < 1e-3
    for bad in (-1, 1000, 2.5):
        with pytest.raises(ParameterError):
            bb.add_noise(z, bad)


def test_text_encoders_encode_the_empty_prompt_then_go(tmp_path):
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    root = save_tiny_model(tmp_path / "xl", "sdxl", text_encoders=True)
    assert not (root / "conditioning.safetensors").exists()
    bb = load_backbone(root, device="cpu")
    assert bb.prompt_embeds.shape == (1, 16, 32)
    # reference: penultimate hidden states of both encoders, concatenated; pooled from encoder 2
    states = []
    for sub, cls in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
        tok = AutoTokenizer.from_pretrained(root / f"tokenizer{sub}")
        enc = cls.from_pretrained(root / f"text_encoder{sub}")
        ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
    assert torch.allclose(bb.prompt_embeds, torch.cat(states, -1), atol=1e-6)
    assert torch.allclose(bb.added_cond_kwargs["text_embeds"], out.text_embeds, atol=1e-6)
    with pytest.raises(ParameterError, match="keep_text_encoders"):
        bb.conditioning("a photo")


def test_sd1_text_encoder_last_hidden_state_and_kept_encoders(tmp_path):
    from transformers import AutoTokenizer, CLIPTextModel

    root = save_tiny_model(tmp_path / "sd", "sd1", text_encoders=True)
    bb = load_backbone(root, device="cpu", keep_text_encoders=True)
    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    enc = CLIPTextModel.from_pretrained(root / "text_encoder")
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = enc(ids).last_hidden_state
    assert torch.allclose(bb.prompt_embeds, ref, atol=1e-6)
    emb, added = bb.conditioning("a photo")
    assert emb.shape == ref.shape and added is None
    assert not torch.allclose(emb, bb.prompt_embeds)


def test_prompt_embeds_passed_in(tmp_path, tiny_dirs):
    root = tmp_path / "nocond"
    shutil.copytree(tiny_dirs["sd1"], root)
    (root / "conditioning.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="prompt_embeds"):
        load_backbone(root, device="cpu")
    emb = torch.randn(1, 5, 32)
    bb = load_backbone(root, device="cpu", prompt_embeds=emb)
    assert torch.equal(bb.prompt_embeds, emb)
    with pytest.raises(ModelLoadError, match=r"\(1, L, 32\)"):
        load_backbone(root, device="cpu", prompt_embeds=torch.randn(1, 5, 7))


def test_sdxl_needs_pooled_embeds(tmp_path, tiny_dirs):
    root = tmp_path / "xl"
    shutil.copytree(tiny_dirs["sdxl"], root)
    (root / "conditioning.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="pooled"):
        load_backbone(root, device="cpu", prompt_embeds=torch.randn(1, 5, 32))
    bb = load_backbone(
        root, device="cpu", prompt_embeds=torch.randn(1, 5, 32), pooled_prompt_embeds=torch.randn(1, 16)
    )
    assert bb.added_cond_kwargs["text_embeds"].shape == (1, 16)


# -- the Hub path, offline -------------------------------------------------------------------------------


def _fake_snapshot(source: Path, calls: list):
    """A stand-in for huggingface_hub.snapshot_download that copies the files a real one would fetch."""

    def fake(
        repo_id, *, revision=None, allow_patterns=None, ignore_patterns=None, local_files_only=False, **kw
    ):
        calls.append(
            {"repo_id": repo_id, "allow": list(allow_patterns or []), "ignore": list(ignore_patterns or [])}
        )
        dest = source.parent / f"cache-{source.name}"
        for f in source.rglob("*"):
            rel = f.relative_to(source).as_posix()
            if f.is_dir() or not any(fnmatch.fnmatch(rel, p) for p in allow_patterns or ["*"]):
                continue
            if any(fnmatch.fnmatch(rel, p) for p in ignore_patterns or []):
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / rel)
        return str(dest)

    return fake


def test_hub_id_goes_through_snapshot_download(monkeypatch, tmp_path):
    import huggingface_hub

    src = save_tiny_model(tmp_path / "sdxl", "sdxl")
    calls: list = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(src, calls))
    bb = load_backbone("someone/tiny-sdxl", device="cpu")
    assert bb.name == "someone/tiny-sdxl" and bb.family == "sdxl"
    assert _same_weights(bb.unet, tiny_backbone("sdxl").unet)
    # configs first, then only safetensors weights of the components feature extraction needs
    assert calls[0]["repo_id"] == "someone/tiny-sdxl"
    assert all(
        not p.endswith((".bin", ".safetensors")) or p == "conditioning.safetensors" for p in calls[0]["allow"]
    )
    weights = calls[-1]["allow"]
    assert "unet/*.safetensors" in weights and "vae/*.safetensors" in weights
    assert not any(p.endswith(".bin") for p in weights)


def test_hub_skips_text_encoder_weights_when_embeddings_are_given(monkeypatch, tmp_path):
    import huggingface_hub

    src = save_tiny_model(tmp_path / "sd1", "sd1", text_encoders=True)
    calls: list = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(src, calls))
    load_backbone("someone/tiny-te", device="cpu")
    assert "text_encoder/*.safetensors" in calls[-1]["allow"]
    calls.clear()
    load_backbone("someone/tiny-te", device="cpu", prompt_embeds=torch.randn(1, 4, 32))
    assert not any(p.startswith("text_encoder") for p in calls[-1]["allow"])


def test_hub_fp16_variant_preferred_then_fallback(monkeypatch, tmp_path):
    import huggingface_hub

    src = save_tiny_model(tmp_path / "sd1", "sd1")
    calls: list = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(src, calls))
    bb = load_backbone("someone/tiny", device="cpu", dtype=torch.float16)
    assert bb.dtype == torch.float16
    assert any("unet/*.fp16.safetensors" in c["allow"] for c in calls)  # asked for the fp16 files first
    assert "*.fp16*" in calls[-1]["ignore"]  # then fell back to the full-precision files

    # a repository that has the fp16 variant gets it
    src16 = tmp_path / "sd1-16"
    shutil.copytree(src, src16)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        cls.from_pretrained(src, subfolder=sub).save_pretrained(src16 / sub, variant="fp16")
        (src16 / sub / "diffusion_pytorch_model.safetensors").unlink()
    calls.clear()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(src16, calls))
    bb16 = load_backbone("someone/tiny16", device="cpu", dtype=torch.float16)
    assert bb16.dtype == torch.float16 and len(calls) == 2  # configs, then the fp16 weights; no fallback
    assert bb16.vae_dtype == torch.float32  # the fp16 VAE file is loaded into a float32 VAE
    # a local directory with the variant is read the same way
    assert load_backbone(src16, device="cpu", dtype=torch.float16).dtype == torch.float16


def test_missing_hub_weights_say_what_to_do():
    with pytest.raises(ModelLoadError) as err:
        load_backbone("diffcut-lab-tests/does-not-exist", device="cpu", local_files_only=True)
    msg = str(err.value)
    assert "diffcut-lab-tests/does-not-exist" in msg and "pocket" in msg


def test_missing_local_weights(tmp_path, tiny_dirs):
    root = tmp_path / "broken"
    shutil.copytree(tiny_dirs["sd1"], root)
    for f in (root / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="unet/"):
        load_backbone(root, device="cpu")


def test_bad_sources():
    with pytest.raises(ModelLoadError, match="neither"):
        load_backbone("./no/such/dir/here", device="cpu")


def test_pocket_not_installed_names_the_training_command(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "pocket_weights_dir", lambda: tmp_path / "weights")
    with pytest.raises(ModelLoadError, match=r"python -m diffcut_lab\.pocket\.train"):
        load_backbone("pocket")


def test_pocket_loads_from_its_weights_dir(monkeypatch, tmp_path):
    root = save_tiny_model(tmp_path / "weights", "pixel")
    monkeypatch.setattr(backbones, "pocket_weights_dir", lambda: root)
    bb = load_backbone("pocket", device="cpu")
    assert bb.name == "pocket" and bb.family == "pocket" and bb.vae is None and bb.latent_scale == 1


# -- unsupported models --------------------------------------------------------------------------------


def test_transformer_pipeline_is_unsupported(tmp_path):
    root = tmp_path / "dit"
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    with pytest.raises(UnsupportedModelError, match="PixArtAlphaPipeline"):
        load_backbone(root, device="cpu")


def test_no_unet_is_unsupported(tmp_path):
    (tmp_path / "empty" / "vae").mkdir(parents=True)
    with pytest.raises(UnsupportedModelError, match="no unet/"):
        load_backbone(tmp_path / "empty", device="cpu")


def test_unet2dmodel_without_cross_attention_is_unsupported(tmp_path):
    from diffusers import UNet2DModel

    root = tmp_path / "ddpm"
    UNet2DModel(
        sample_size=8,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        layers_per_block=1,
    ).save_pretrained(root / "unet")
    with pytest.raises(UnsupportedModelError, match="UNet2DModel"):
        load_backbone(root, device="cpu")


def test_latent_unet_without_vae(tmp_path, tiny_dirs):
    root = tmp_path / "novae"
    shutil.copytree(tiny_dirs["sd1"], root)
    shutil.rmtree(root / "vae")
    with pytest.raises(ModelLoadError, match="no vae/"):
        load_backbone(root, device="cpu")


def test_image_size_checks_and_repr():
    bb = tiny_backbone("sd1")
    assert bb.size_multiple == 16
    assert bb.check_image_size(128) == (128, 128)
    with pytest.raises(ParameterError, match="multiples of 16"):
        bb.check_image_size(100)
    assert "tiny-sd1" in repr(bb) and "sd1" in repr(bb)


def test_weightless_backbone_from_a_directory(tiny_dirs):
    bb = load_backbone(tiny_dirs["sdxl"], weights=False)
    assert bb.device.type == "meta" and bb.family == "sdxl" and bb.latent_scale == 4
