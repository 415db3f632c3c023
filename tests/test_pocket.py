"""The pocket model: architecture, training steps, checkpoint/resume, export, and the shipped weights."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

from diffcut_lab.errors import ParameterError
from diffcut_lab.pocket import WEIGHTS_DIR
from diffcut_lab.pocket.model import PocketConfig, PocketDenoiser, diffcut_layer_name, export_weights
from diffcut_lab.pocket.train import TrainConfig, lr_at, main, make_batch, train

TINY = PocketConfig.tiny()


def test_config_roundtrip_and_validation():
    cfg = PocketConfig()
    assert PocketConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert diffcut_layer_name(cfg) == "down_blocks.2.attentions.0.transformer_blocks.0.attn1"
    with pytest.raises(ParameterError):
        PocketConfig(block_out_channels=(30, 64, 128))
    with pytest.raises(ParameterError):
        PocketConfig.from_dict({"image_size": 64, "bogus": 1})
    with pytest.raises(ParameterError):
        TrainConfig(photo_fraction=1.5)


def test_default_architecture_size_and_grid():
    model = PocketDenoiser(PocketConfig())
    n = sum(p.numel() for p in model.parameters())
    assert 2e6 < n < 5e6  # a few million parameters: <= 20 MB even in float32
    grids = {}

    def keep(name):
        return lambda m, i, o: grids.__setitem__(name, o.shape)

    hooks = [
        model.unet.get_submodule(n).register_forward_hook(keep(n)) for n in [diffcut_layer_name(model.config)]
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 128, 128), torch.tensor([50]))
    for h in hooks:
        h.remove()
    assert grids[diffcut_layer_name(model.config)][1] == 32 * 32  # the paper's 32 x 32 grid


def test_batches_are_a_pure_function_of_seed_and_step():
    cfg = TrainConfig(batch_size=3, photo_fraction=0.5)
    a, na = make_batch(7, cfg, 32)
    b, nb = make_batch(7, cfg, 32)
    c, _ = make_batch(8, cfg, 32)
    assert torch.equal(a, b) and torch.equal(na, nb) and not torch.equal(a, c)
    assert a.shape == (3, 3, 32, 32) and -1 <= a.min() and a.max() <= 1


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1e-3)
    assert all(lrs[i] >= lrs[i + 1] for i in range(10, 99))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


@pytest.mark.slow
def test_few_steps_reduce_the_loss():
    cfg = TrainConfig(steps=40, batch_size=4, lr=2e-3, warmup=5, photo_fraction=0.25, seed=3)
    res = train(cfg, TINY, out=None, progress=False)
    assert len(res.losses) == 40 and all(np.isfinite(res.losses))
    assert np.mean(res.losses[-8:]) < 0.8 * np.mean(res.losses[:4])


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=2, checkpoint_every=2, seed=5)
    full = train(cfg, TINY, out=tmp_path / "full", progress=False, export=False)
    part = train(cfg, TINY, out=tmp_path / "split", progress=False, export=False, max_steps_this_run=3)
    assert part.step == 3 and (tmp_path / "split" / "checkpoint.pt").exists()
    assert not list((tmp_path / "split").glob("*.tmp"))  # written to a temp file, then renamed
    resumed = train(cfg, TINY, out=tmp_path / "split", progress=False, export=False)
    assert resumed.step == 6 and resumed.losses == full.losses
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    other = TrainConfig(steps=6, batch_size=2, checkpoint_every=2, seed=6)
    with pytest.raises(ParameterError):
        train(other, TINY, out=tmp_path / "split", progress=False)


def test_cli_trains_and_exports_a_loadable_directory(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--tiny", "--steps", "3", "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3
    w = out / "weights"
    meta = json.loads((w / "diffcut_lab.json").read_text())
    assert meta["family"] == "pocket" and meta["image_size"] == 32
    assert meta["diffcut_layer"] == diffcut_layer_name(TINY)
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(w / "unet")
    assert DDPMScheduler.from_pretrained(w / "scheduler").config.num_train_timesteps == 1000
    emb = load_file(str(w / "conditioning.safetensors"))["prompt_embeds"]
    assert emb.shape == (1, TINY.prompt_length, TINY.cross_attention_dim)
    assert sum(p.numel() for p in unet.parameters()) > 0
    with pytest.raises(SystemExit):
        main(["--help"])


def test_export_matches_the_model(tmp_path):
    model = PocketDenoiser(TINY, seed=1).eval()
    export_weights(model, tmp_path / "w", dtype=torch.float32)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tmp_path / "w" / "unet").eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 500])
    with torch.no_grad():
        ref = model(x, t)
        got = unet(x, t, encoder_hidden_states=model.prompt_embeds.expand(2, -1, -1)).sample
    assert torch.allclose(ref, got, atol=1e-5)


def test_shipped_weights_layout_and_size():
    assert (WEIGHTS_DIR / "unet" / "config.json").is_file()
    assert (WEIGHTS_DIR / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (WEIGHTS_DIR / "scheduler" / "scheduler_config.json").is_file()
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert total <= 20 * 2**20
    meta = json.loads((WEIGHTS_DIR / "diffcut_lab.json").read_text())
    assert meta["family"] == "pocket" and meta["image_size"] == 128
    info = json.loads((WEIGHTS_DIR / "training.json").read_text())
    assert info["final_loss_mean_last_50"] < 0.1  # a trained denoiser (an untrained one is near 1.0)


def test_load_backbone_pocket_works_offline():
    from diffcut_lab.backbones import load_backbone

    bb = load_backbone("pocket")
    assert bb.family == "pocket" and bb.vae is None and bb.image_size == 128 and bb.latent_scale == 1
    assert tuple(bb.prompt_embeds.shape) == (1, 8, 64)
    from diffcut_lab.hooks import capture, resolve_layers

    assert resolve_layers(bb, "diffcut") == ["down_blocks.2.attentions.0.transformer_blocks.0.attn1"]
    from diffcut_lab.datasets.synthetic import make_scene

    scene = make_scene(2_000_001, 128)
    cache = capture(bb, scene.image, layers="diffcut", timesteps=50)
    f = cache[cache.layers[0], 50]
    assert tuple(f.shape) == (1, 128, 32, 32) and torch.isfinite(f).all()
    # the features are more alike inside a segment than across segments
    fn = torch.nn.functional.normalize(f[0].flatten(1), dim=0)
    sim = (fn.T @ fn).numpy()
    seg = scene.mask[2::4, 2::4].ravel()
    same = seg[:, None] == seg[None, :]
    assert sim[same].mean() > sim[~same].mean() + 0.05


class _Planted:
    """An object whose unpickling would run code (it records that it ran)."""

    def __reduce__(self):
        return (os.makedirs, (os.environ["DIFFCUT_PLANTED_MARKER"],))


def test_a_planted_checkpoint_is_refused_not_run(tmp_path, monkeypatch):
    from diffcut_lab.errors import ModelLoadError

    marker = tmp_path / "ran"
    monkeypatch.setenv("DIFFCUT_PLANTED_MARKER", str(marker))
    cfg = TrainConfig(steps=2, batch_size=2, checkpoint_every=1, seed=5)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": _Planted(), "step": 0}, run / "checkpoint.pt")
    with pytest.raises(ModelLoadError, match="not loaded"):
        train(cfg, TINY, out=run, progress=False, export=False)
    assert not marker.exists()


def _good_checkpoint(run) -> dict:
    cfg = TrainConfig(steps=2, batch_size=2, checkpoint_every=1, seed=5)
    train(cfg, TINY, out=run, progress=False, export=False, max_steps_this_run=1)
    return torch.load(run / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [("truncated", "cannot be read"), ("garbage", "damaged or not a checkpoint"), ("number", "holds a value of type .int."),
     ("missing", "missing or wrong: optimizer"), ("shapes", "does not fit the model"), ("directory", "cannot be read")],
)  # fmt: skip
def test_bad_checkpoints_are_one_line_errors_naming_the_file(tmp_path, capsys, damage, message):
    from diffcut_lab.errors import ModelLoadError

    run = tmp_path / "run"
    state = _good_checkpoint(run)
    ckpt = run / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all")
    elif damage == "number":
        torch.save(5, ckpt)
    elif damage == "missing":
        torch.save({k: v for k, v in state.items() if k != "optimizer"}, ckpt)
    elif damage == "shapes":
        first = next(iter(state["model"]))
        state["model"][first] = torch.zeros(3)
        torch.save(state, ckpt)
    else:
        ckpt.unlink()
        ckpt.mkdir()
    cfg = TrainConfig(steps=2, batch_size=2, checkpoint_every=1, seed=5)
    with pytest.raises(ModelLoadError, match=message) as info:
        train(cfg, TINY, out=run, progress=False, export=False)
    assert str(ckpt) in str(info.value)
    rc = main(["--tiny", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "1", "--seed", "5",
               "--out", str(run), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "checkpoint.pt" in err and re.search(message, err)


def test_bad_training_settings_are_one_line_errors(capsys, tmp_path):
    assert main(["--tiny", "--steps", "-3", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steps >= 0" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--device", "nonsense"], "--device 'nonsense' cannot be used"),
    ],
)
def test_bad_devices_and_thread_counts_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["--tiny", "--steps", "1", "--out", str(tmp_path / "r"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
