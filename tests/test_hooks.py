"""Hook points, layer resolution and capture: correctness, early exit, clean-up, probabilities, cache."""

from __future__ import annotations

import pytest
import torch

from diffcut_lab.errors import FeatureError, ParameterError, UnknownLayerError
from diffcut_lab.hooks import (
    KINDS,
    FeatureCache,
    HookPoint,
    capture,
    diffcut_layer_name,
    hook_points_frame,
    list_hook_points,
    memory_estimate,
    resolve_layers,
)
from diffcut_lab.testing import save_tiny_model, tiny_backbone


@pytest.fixture(scope="module")
def sd1():
    return tiny_backbone("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_backbone("sdxl")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g)


def _no_hooks_left(bb) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in bb.unet.modules())


def _processor_types(bb) -> dict:
    return {k: type(v) for k, v in bb.unet.attn_processors.items()}


# -- listing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd1", "sdxl", "pixel"])
def test_listing_order_is_the_forward_order(family):
    bb = tiny_backbone(family)
    points = [p for p in list_hook_points(bb) if p.kind != "probs"]
    fired: list[str] = []
    handles = [
        bb.unet.get_submodule(p.name).register_forward_hook(lambda m, i, o, n=p.name: fired.append(n))
        for p in points
    ]
    try:
        x = torch.rand(1, 3, 64, 64)
        bb.forward(bb.add_noise(bb.encode(x), 10), 10)
    finally:
        for h in handles:
            h.remove()
    assert fired == [p.name for p in points]


def test_every_kind_is_listed_with_shapes_that_match_the_forward(sd1):
    points = list_hook_points(sd1)
    assert {p.kind for p in points} == set(KINDS)
    seen: dict[str, tuple] = {}
    handles = []
    for p in points:
        if p.kind == "probs":
            continue
        mod = sd1.unet.get_submodule(p.name)

        def hook(m, i, o, n=p.name):
            o = o[0] if isinstance(o, tuple) else getattr(o, "sample", o)
            seen[n] = tuple(o.shape)

        handles.append(mod.register_forward_hook(hook))
    try:
        sd1.forward(sd1.add_noise(sd1.encode(torch.rand(1, 3, 64, 64)), 10), 10)
    finally:
        for h in handles:
            h.remove()
    for p in points:
        if p.kind == "probs":
            assert p.channels == p.tokens and p.name.endswith(".attn1.probs")
            continue
        shape = seen[p.name]
        if len(shape) == 3:
            assert shape == (1, p.tokens, p.channels), p
        else:
            assert shape == (1, p.channels, *p.resolution), p


def test_resolution_follows_image_size(sd1):
    name = diffcut_layer_name(sd1)
    at = {s: next(p for p in list_hook_points(sd1, image_size=s) if p.name == name) for s in (64, 128)}
    assert at[64].resolution == (8, 8) and at[128].resolution == (16, 16)
    rect = next(p for p in list_hook_points(sd1, image_size=(64, 128)) if p.name == name)
    assert rect.resolution == (8, 16)


def test_hook_points_frame(sdxl):
    df = hook_points_frame(sdxl, kind="attn1")
    assert list(df.columns) == [
        "name",
        "kind",
        "stage",
        "block",
        "channels",
        "height",
        "width",
        "tokens",
        "order",
        "diffcut",
    ]
    assert (df.kind == "attn1").all() and df.diffcut.sum() == 1
    assert df.loc[df.diffcut, "name"].item() == diffcut_layer_name(sdxl)
    assert HookPoint("a", "attn1", "down", 4, (2, 2)).to_dict()["resolution"] == [2, 2]
    with pytest.raises(ParameterError, match="kind"):
        list_hook_points(sdxl, kind="mlp")


# -- resolving -----------------------------------------------------------------------------------------


def test_resolve_specs(sd1):
    attn1 = [p.name for p in list_hook_points(sd1, kind="attn1")]
    dc = diffcut_layer_name(sd1)
    assert dc == "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
    assert resolve_layers(sd1, "diffcut") == [dc]
    assert resolve_layers(sd1, dc) == [dc]
    assert resolve_layers(sd1, "attn1") == attn1
    assert resolve_layers(sd1, "down_blocks.*.attn1") == [n for n in attn1 if n.startswith("down")]
    assert resolve_layers(sd1, ["diffcut", "attn1", dc])[0] == dc and len(
        resolve_layers(sd1, ["diffcut", "attn1"])
    ) == len(attn1)
    everything = resolve_layers(sd1, "all")
    assert not any(n.endswith(".probs") for n in everything)
    assert len(everything) == len([p for p in list_hook_points(sd1) if p.kind != "probs"])
    assert resolve_layers(sd1, lambda n: n.startswith("mid_block.resnets")) == [
        "mid_block.resnets.0",
        "mid_block.resnets.1",
    ]
    assert all(n.endswith(".probs") for n in resolve_layers(sd1, "probs"))


def test_unknown_layers_list_close_names(sd1):
    with pytest.raises(UnknownLayerError) as err:
        resolve_layers(sd1, "down_blocks.1.attentions.0.transformer_blocks.0.atn1")
    assert "'down_blocks.1.attentions.0.transformer_blocks.0.attn1'" in str(err.value)
    with pytest.raises(UnknownLayerError, match="matches no hook point"):
        resolve_layers(sd1, "down_blocks.9.*")
    with pytest.raises(UnknownLayerError, match="closest"):
        resolve_layers(sd1, "diffcat")
    with pytest.raises(ParameterError):
        resolve_layers(sd1, [])


def test_diffcut_override_from_diffcut_lab_json(tmp_path):
    from diffcut_lab.backbones import load_backbone

    first = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    bb = load_backbone(save_tiny_model(tmp_path / "a", "sd1", diffcut_layer=first), device="cpu")
    assert resolve_layers(bb, "diffcut") == [first]
    bad = load_backbone(
        save_tiny_model(tmp_path / "b", "sd1", diffcut_layer="down_blocks.0.attn9"), device="cpu"
    )
    with pytest.raises(UnknownLayerError, match="diffcut_layer"):
        resolve_layers(bad, "diffcut")


# -- capture -------------------------------------------------------------------------------------------


def test_capture_equals_a_manual_forward_hook(sdxl, images):
    name = diffcut_layer_name(sdxl)
    cache = capture(sdxl, images, "diffcut", 50, seed=3)
    manual = {}
    handle = sdxl.unet.get_submodule(name).register_forward_hook(lambda m, i, o: manual.setdefault("x", o))
    try:
        sdxl.forward(sdxl.add_noise(sdxl.encode(images), 50, seed=3), 50)
    finally:
        handle.remove()
    b, _, c = manual["x"].shape
    expected = manual["x"].transpose(1, 2).reshape(b, c, 8, 8)
    got = cache["diffcut", 50]
    assert got.shape == (2, 64, 8, 8) and torch.equal(got, expected)
    assert torch.equal(cache[name], got) and torch.equal(cache.images, images)


def test_early_exit_skips_the_decoder_and_changes_nothing(sd1, images):
    calls = {"up": 0, "mid": 0}
    h1 = sd1.unet.up_blocks[0].register_forward_pre_hook(
        lambda m, i: calls.__setitem__("up", calls["up"] + 1)
    )
    h2 = sd1.unet.mid_block.register_forward_pre_hook(lambda m, i: calls.__setitem__("mid", calls["mid"] + 1))
    try:
        early = capture(sd1, images, ["diffcut", "down_blocks.0.resnets.0"], [10, 50])
        assert calls == {"up": 0, "mid": 0}
        full = capture(sd1, images, ["diffcut", "down_blocks.0.resnets.0"], [10, 50], early_exit=False)
        assert calls == {"up": 2, "mid": 2}  # one full pass per timestep
    finally:
        h1.remove()
        h2.remove()
    for key in early:
        assert torch.equal(early[key], full[key])
    # the exit point is the deepest requested layer, whatever the request order
    calls["up"] = 0
    h = sd1.unet.up_blocks[1].register_forward_pre_hook(lambda m, i: calls.__setitem__("up", calls["up"] + 1))
    try:
        capture(sd1, images, ["up_blocks.1.resnets.0", "diffcut"], 50)
    finally:
        h.remove()
    assert calls["up"] == 1
    assert _no_hooks_left(sd1)


def test_one_forward_per_timestep_for_all_layers(sd1, images):
    n = {"calls": 0}
    h = sd1.unet.register_forward_pre_hook(lambda m, i: n.__setitem__("calls", n["calls"] + 1))
    try:
        cache = capture(sd1, images, "all", [5, 50, 200])
    finally:
        h.remove()
    assert n["calls"] == 3
    assert len(cache) == 3 * len(cache.layers) and cache.timesteps == [5, 50, 200]
    assert not torch.equal(cache["diffcut", 5], cache["diffcut", 200])


def test_batching_noise_and_seed(sd1, images):
    whole = capture(sd1, images, "diffcut", 50)
    split = capture(sd1, images, "diffcut", 50, batch_size=1)
    assert torch.allclose(whole["diffcut"], split["diffcut"], atol=1e-5)
    twins = capture(sd1, torch.stack([images[0], images[0]]), "diffcut", 50)["diffcut"]
    assert torch.equal(twins[0], twins[1])  # one noise map shared by the batch
    other = capture(sd1, images, "diffcut", 50, seed=43)
    assert not torch.allclose(whole["diffcut"], other["diffcut"])


def test_store_dtype_and_memory_estimate(sd1, images):
    layers = ["diffcut", "resnet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.probs"]
    c32 = capture(sd1, images, layers, [10, 50])
    c16 = capture(sd1, images, layers, [10, 50], store_dtype="float16")
    assert c16["diffcut", 50].dtype == torch.float16
    assert c32.nbytes == memory_estimate(sd1, layers, [10, 50], batch=2)
    assert (
        c16.nbytes
        == memory_estimate(sd1, layers, [10, 50], batch=2, store_dtype=torch.float16)
        == c32.nbytes // 2
    )
    assert torch.allclose(c16["diffcut", 50].float(), c32["diffcut", 50], atol=1e-2)
    with pytest.raises(ParameterError):
        capture(sd1, images, "diffcut", 50, store_dtype=torch.int8)


def test_probs_rows_sum_to_one_and_outputs_unchanged(sdxl, images):
    name = diffcut_layer_name(sdxl)
    before = _processor_types(sdxl)
    later = "up_blocks.0.resnets.0"  # downstream of the swapped processor
    cache = capture(sdxl, images, [name, f"{name}.probs", later], 50)
    plain = capture(sdxl, images, [name, later], 50)
    probs = cache[f"{name}.probs"]
    assert probs.shape == (2, 64, 64)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 64), atol=1e-5)
    assert (probs >= 0).all()
    # keeping the probabilities changes no feature, to the bit (a K-way cut moves on a last-bit change)
    assert torch.equal(cache[name], plain[name]) and torch.equal(cache[later], plain[later])
    assert _processor_types(sdxl) == before and _no_hooks_left(sdxl)


def test_probs_match_a_direct_softmax(sd1, images, monkeypatch):
    from diffcut_lab import _diffusers

    monkeypatch.setattr(_diffusers, "PROBS_CHUNK_BYTES", 4 * 2 * 4 * 256 * 7)  # force several chunks
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    inputs = {}
    attn = sd1.unet.get_submodule(name)
    h = attn.register_forward_pre_hook(lambda m, a: inputs.setdefault("x", a[0]))
    try:
        cache = capture(sd1, images[:1], f"{name}.probs", 50)
    finally:
        h.remove()
    x = inputs["x"]
    q = attn.to_q(x).view(1, -1, attn.heads, 32 // attn.heads).transpose(1, 2)
    k = attn.to_k(x).view(1, -1, attn.heads, 32 // attn.heads).transpose(1, 2)
    expected = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1).mean(1)
    assert torch.allclose(cache[f"{name}.probs"], expected, atol=1e-6)


def test_hooks_removed_after_errors(sd1, images):
    before = _processor_types(sd1)
    boom = sd1.unet.down_blocks[0].register_forward_hook(
        lambda m, i, o: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    try:
        with pytest.raises(RuntimeError, match="boom"):
            capture(sd1, images, ["diffcut", "probs"], 50)
    finally:
        boom.remove()
    assert _no_hooks_left(sd1) and _processor_types(sd1) == before
    # and a capture afterwards works normally
    assert capture(sd1, images, "diffcut", 50)["diffcut"].shape == (2, 64, 8, 8)


def test_nan_features_raise_feature_error_naming_the_layer(images):
    bb = tiny_backbone("sd1")
    name = diffcut_layer_name(bb)
    with torch.no_grad():
        bb.unet.get_submodule(name).to_out[0].bias.fill_(float("nan"))
    with pytest.raises(FeatureError, match=name.replace(".", r"\.")):
        capture(bb, images, "diffcut", 50)
    assert _no_hooks_left(bb)


def test_capture_defaults_are_the_settings_defaults(sd1, images):
    """capture() and Backbone.add_noise without settings run DiffCutConfig's defaults (said once there)."""
    from diffcut_lab.config import DiffCutConfig

    cfg = DiffCutConfig()
    meta = capture(sd1, images).meta
    assert meta["layers"] == resolve_layers(sd1, cfg.layer) and meta["timesteps"] == [cfg.timestep]
    said = {k: meta[k] for k in ("seed", "policy", "antialias", "noise_device")}
    assert said == {
        "seed": cfg.seed,
        "policy": cfg.policy,
        "antialias": cfg.antialias,
        "noise_device": cfg.noise_device,
    }
    latents = sd1.encode(images)
    explicit = sd1.add_noise(latents, cfg.timestep, seed=cfg.seed, noise_device=cfg.noise_device)
    assert torch.equal(sd1.add_noise(latents, cfg.timestep), explicit)


def test_input_validation(sd1, images):
    with pytest.raises(ParameterError, match="multiples of 16"):
        capture(sd1, images, "diffcut", 50, image_size=60)
    with pytest.raises(ParameterError, match="timestep"):
        capture(sd1, images, "diffcut", 1000)
    with pytest.raises(ParameterError):
        capture(sd1, images, "diffcut", [])
    with pytest.raises(ParameterError, match="keep_text_encoders"):
        capture(sd1, images, "diffcut", 50, prompt="a cat")
    big = capture(sd1, images, "diffcut", 50, image_size=128, policy="center_crop")
    assert big["diffcut"].shape == (2, 64, 16, 16) and big.images.shape == (2, 3, 128, 128)


def test_pixel_backbone_capture_defaults_to_native_size():
    bb = tiny_backbone("pixel")
    cache = capture(bb, torch.rand(1, 3, 40, 50), progress=True)
    assert cache["diffcut"].shape == (1, 64, 16, 16)
    assert cache.meta["image_size"] == [64, 64]


# -- capture stores exactly what the UNet computed (one copy at most, none where none is needed) ------


def _output_of(o):
    return o[0] if isinstance(o, tuple) else getattr(o, "sample", o)


def _reference_features(bb, images, names, t, *, seed=42, store_dtype=torch.float32, probs_of=None):
    """Features from a fresh forward whose hooks clone every output on the spot (nothing the model does
    afterwards can reach them), laid out as capture promises: (B, C, h, w), contiguous, store dtype.

    ``probs_of``: an attn1 whose probabilities are kept too (under ``"<name>.probs"``), by the same
    probability-keeping processor capture swaps in (so the forward computes what capture's does)."""
    from diffcut_lab._diffusers import ProbsProcessor

    points = {p.name: p for p in list_hook_points(bb)}
    raw = {}
    handles = [
        bb.unet.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: raw.__setitem__(n, _output_of(o).detach().clone())
        )
        for n in names
    ]
    attn = original = None
    if probs_of is not None:
        attn = bb.unet.get_submodule(probs_of)
        original = attn.processor
        keep = lambda probs: raw.__setitem__(f"{probs_of}.probs", probs.clone())  # noqa: E731
        attn.set_processor(ProbsProcessor(original, keep, store_dtype))
    try:
        bb.forward(bb.add_noise(bb.encode(images), t, seed=seed), t)
    finally:
        for h in handles:
            h.remove()
        if attn is not None:
            attn.set_processor(original)
    out = {}
    for n in raw:
        x = raw[n]
        if x.ndim == 3 and not n.endswith(".probs"):
            b, _, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, *points[n].resolution)
        out[n] = x.to(store_dtype).contiguous()
    return out


def _assert_identical(got, expected, key):
    assert got.dtype == expected.dtype and got.shape == expected.shape, key
    assert got.is_contiguous() and got.device == expected.device, key
    assert torch.equal(got, expected), key


@pytest.mark.parametrize(
    ("family", "unet_dtype", "store_dtype"),
    [
        ("sd1", torch.float32, torch.float32),  # same dtype: 4-D maps kept without a copy
        ("sdxl", torch.float32, torch.float16),  # narrowing conversion
        ("pixel", torch.bfloat16, torch.float32),  # widening conversion (the CPU benchmark's case)
        ("sd1", torch.bfloat16, torch.bfloat16),
    ],
)
def test_every_kind_is_bit_identical_to_cloning_hooks(family, unet_dtype, store_dtype):
    bb = tiny_backbone(family, dtype=unet_dtype)
    images = torch.rand(2, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(1))
    names = resolve_layers(bb, "all")
    assert {p.kind for p in list_hook_points(bb) if p.name in names} == set(KINDS) - {"probs"}
    probs = f"{diffcut_layer_name(bb)}.probs"
    cache = capture(bb, images, [*names, probs], [10, 50], store_dtype=store_dtype)
    kept = {key: cache[key].clone() for key in cache}
    for t in (10, 50):
        expected = _reference_features(
            bb, images, names, t, store_dtype=store_dtype, probs_of=probs[: -len(".probs")]
        )
        assert set(expected) == {*names, probs}
        for n in expected:
            _assert_identical(cache[n, t], expected[n], (n, t))
    # later forwards (the reference ones above, and one more) leave the stored features alone
    bb.forward(bb.add_noise(bb.encode(images), 200), 200)
    for key in cache:
        assert torch.equal(cache[key], kept[key]), key
    # no two features share memory
    storages = [cache[key].untyped_storage().data_ptr() for key in cache]
    assert len(set(storages)) == len(storages)


def test_attn1_features_equal_a_fresh_reference_forward(sdxl, images):
    names = resolve_layers(sdxl, "attn1")
    cache = capture(sdxl, images, "attn1", 50, seed=7)
    expected = _reference_features(sdxl, images, names, 50, seed=7)
    for n in names:
        _assert_identical(cache[n, 50], expected[n], n)


def test_maps_that_need_no_conversion_are_kept_without_a_copy(sd1, images):
    from diffcut_lab import capturing

    point = next(p for p in list_hook_points(sd1) if p.name == "down_blocks.0.resnets.0")
    tokens = next(p for p in list_hook_points(sd1) if p.name == diffcut_layer_name(sd1))
    keeper = capturing._Keeper(sd1.unet, torch.float32, "cpu")
    x = torch.randn(2, point.channels, *point.resolution)
    kept = keeper.keep(x, point)
    assert kept.value is x and kept.stream is None and bool(kept.finite)
    again = keeper.keep(x, point)  # the same tensor twice: the second is a copy
    assert again.value is not x and torch.equal(again.value, x)
    part = torch.randn(4, point.channels, *point.resolution)[:2]  # a view into a larger tensor: copied
    assert keeper.keep(part, point).value.untyped_storage().data_ptr() != part.untyped_storage().data_ptr()
    half = capturing._Keeper(sd1.unet, torch.float16, "cpu").keep(x, point).value
    assert half.dtype == torch.float16 and torch.equal(half, x.half())
    t = torch.randn(2, tokens.tokens, tokens.channels)
    m = keeper.keep(t, tokens).value
    assert m.shape == (2, tokens.channels, *tokens.resolution) and m.is_contiguous()
    assert torch.equal(m, t.transpose(1, 2).reshape(m.shape))
    assert not m.is_pinned()
    # and through capture: a contiguous map is the module's own output tensor, not a copy of it; a
    # channels-last one (the CPU convolutions of the first block return those) is made contiguous
    seen = {}

    def record(m, i, o, name):  # a forward hook that returns None (anything else would replace the output)
        seen[name] = (o.data_ptr(), o.is_contiguous())

    names = ["down_blocks.0.resnets.0", "mid_block.resnets.1"]
    handles = [
        sd1.unet.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: record(m, i, o, n))
        for n in names
    ]
    try:
        cache = capture(sd1, images, names, 50)
    finally:
        for h in handles:
            h.remove()
    assert seen["mid_block.resnets.1"][1] and not seen["down_blocks.0.resnets.0"][1]
    assert cache["mid_block.resnets.1"].data_ptr() == seen["mid_block.resnets.1"][0]
    first = cache["down_blocks.0.resnets.0"]
    assert first.is_contiguous() and first.data_ptr() != seen["down_blocks.0.resnets.0"][0]


def test_copied_features_are_ordinary_tensors(sd1, images):
    """The hooks run inside the forward's inference mode, but what they copy is made outside it: token
    features (and converted maps) can be changed in place, as when capture copied them after the forward."""
    name = diffcut_layer_name(sd1)
    cache = capture(sd1, images, [name, "mid_block.resnets.1"], 50, store_dtype=torch.float64)
    for key in cache:
        feat = cache[key]
        assert not feat.is_inference(), key
        before = feat.clone()
        feat.mul_(2)
        assert torch.equal(feat, 2 * before)


def test_freeu_writes_into_outputs_so_they_are_copied(images, monkeypatch):
    """FreeU scales half the channels of each up block's input in place (here the mid block's last
    resnet output): with it on, capture copies every output, and the features still equal the
    reference; without that guard the mid block's features would come out scaled."""
    from diffcut_lab import capturing

    bb = tiny_backbone("sd1")
    bb.unet.enable_freeu(s1=0.9, s2=0.2, b1=1.5, b2=1.6)
    names = resolve_layers(bb, "all")
    expected = _reference_features(bb, images, names, 50)
    cache = capture(bb, images, "all", 50)
    for n in names:
        _assert_identical(cache[n], expected[n], n)
    monkeypatch.setattr(capturing._diffusers, "outputs_modified_in_place", lambda unet: False)
    unguarded = capture(bb, images, "all", 50)
    assert not torch.equal(unguarded["mid_block.resnets.1"], expected["mid_block.resnets.1"])
    bb.unet.disable_freeu()
    assert not capturing._diffusers.outputs_modified_in_place(bb.unet)


def test_overflow_of_a_narrower_store_dtype_raises(images):
    bb = tiny_backbone("sd1")
    name = diffcut_layer_name(bb)
    with torch.no_grad():
        bb.unet.get_submodule(name).to_out[0].bias.fill_(1e6)  # finite in float32, Inf in float16
    assert capture(bb, images, "diffcut", 50)["diffcut"].isfinite().all()
    with pytest.raises(FeatureError, match="NaN or Inf values"):
        capture(bb, images, "diffcut", 50, store_dtype=torch.float16)


def test_nan_is_caught_when_the_check_reads_the_narrower_model_output(images):
    bb = tiny_backbone("sd1", dtype=torch.bfloat16)
    with torch.no_grad():
        bb.unet.get_submodule("down_blocks.0.resnets.0").conv2.bias[3] = float("inf")
    with pytest.raises(FeatureError, match=r"down_blocks\.0\.resnets\.0.*NaN or Inf"):
        capture(bb, images, "down_blocks.0.resnets.0", 50, store_dtype=torch.float32)
    assert _no_hooks_left(bb)


def test_transfer_mode_is_pinned_and_asynchronous_only_from_cuda_to_the_cpu():
    from diffcut_lab.capturing import _transfer

    cpu, gpu0, gpu1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)
    assert _transfer(gpu0, cpu) == "pinned"
    assert _transfer(cpu, cpu) == "none" and _transfer(gpu0, gpu0) == "none"
    assert _transfer(cpu, gpu0) == "copy" and _transfer(gpu0, gpu1) == "copy"
    assert _transfer(torch.device("mps", 0), torch.device("mps")) == "none"


def test_cpu_capture_never_pins_or_uses_streams(sd1, images, monkeypatch):
    from diffcut_lab import capturing

    real_empty = torch.empty

    def empty(*args, **kwargs):
        assert not kwargs.get("pin_memory"), "pinned memory asked for on a CPU-only capture"
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(capturing.torch, "empty", empty)
    monkeypatch.setattr(capturing.torch.cuda, "Stream", lambda *a, **k: pytest.fail("a CUDA stream was made"))
    cache = capture(
        sd1, images, ["attn1", "resnet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.probs"], 50
    )
    assert all(not cache[key].is_pinned() for key in cache)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_capture_to_the_cpu_is_pinned_and_equals_a_gpu_store(images):
    from diffcut_lab import capturing

    bb = tiny_backbone("sdxl", device="cuda")
    name = diffcut_layer_name(bb)
    layers = ["all", f"{name}.probs"]
    on_gpu = capture(bb, images, layers, [10, 50], store_device="cuda")
    on_cpu = capture(bb, images, layers, [10, 50])  # default store_device="cpu": pinned, asynchronous
    for key in on_gpu:
        a, b = on_gpu[key], on_cpu[key]
        assert a.device.type == "cuda" and b.device.type == "cpu" and b.is_pinned(), key
        assert b.dtype == a.dtype and b.is_contiguous(), key
        assert torch.allclose(b, a.cpu(), rtol=0, atol=1e-6), key  # two forwards: kernels may differ
    half = capture(bb, images, "attn1", 50, store_dtype=torch.float16)
    assert all(half[key].dtype == torch.float16 and half[key].is_pinned() for key in half)
    point = next(p for p in list_hook_points(bb) if p.name == name)
    kept = capturing._Keeper(bb.unet, torch.float32, "cpu").keep(
        torch.randn(2, point.tokens, point.channels, device="cuda"), point
    )
    assert kept.stream is not None and kept.value.is_pinned() and kept.finite.device.type == "cuda"
    assert _no_hooks_left(bb)


# -- the cache -----------------------------------------------------------------------------------------


def test_feature_cache_access_save_load(tmp_path, sd1, images):
    name = diffcut_layer_name(sd1)
    cache = capture(sd1, images, ["diffcut", f"{name}.probs", "mid_block.resnets.0"], [10, 50], seed=5)
    assert cache.layers == [name, f"{name}.probs", "mid_block.resnets.0"]
    assert ("diffcut", 10) in cache and "diffcut" in cache and ("diffcut", 11) not in cache
    with pytest.raises(ParameterError, match="cache\\[layer, t\\]"):
        cache["diffcut"]
    with pytest.raises(ParameterError, match="not captured"):
        cache["diffcut", 11]
    with pytest.raises(UnknownLayerError, match=r"mid_block\.resnets\.0"):
        cache["mid_block.resnets.9", 10]
    assert cache.stack("diffcut").shape == (2, 2, 64, 8, 8)
    path = cache.save(tmp_path / "feats")
    assert path.suffix == ".safetensors" and (tmp_path / "feats.json").exists()
    back = FeatureCache.load(tmp_path / "feats.json")
    assert back.layers == cache.layers and back.timesteps == cache.timesteps
    for key in cache:
        assert torch.equal(back[key], cache[key])
    assert torch.equal(back.images, cache.images)
    for field in ("model", "family", "seed", "image_size", "prompt", "layers", "timesteps"):
        assert back.meta[field] == cache.meta[field], field
    assert back.meta["seed"] == 5 and back.meta["model"] == "tiny-sd1"
    assert torch.equal(back["diffcut", 50], cache[name, 50])
    half = back.to(dtype=torch.float16)
    assert half["diffcut", 50].dtype == torch.float16 and half.nbytes == back.nbytes // 2
    assert "FeatureCache(" in repr(cache)
    with pytest.raises(FeatureError, match="no feature cache"):
        FeatureCache.load(tmp_path / "missing")


def test_concurrent_capture_on_one_backbone_is_refused(sd1, images):
    from diffcut_lab import capturing

    with capturing._hooks(sd1, [], store={}, store_dtype=torch.float32, early_exit=False):
        with pytest.raises(ParameterError, match="already running"):
            capture(sd1, images, "diffcut", 50)
    assert capture(sd1, images, "diffcut", 50)["diffcut"].shape[0] == 2


def test_layers_command(tmp_path, capsys):
    from diffcut_lab.cli import main

    root = save_tiny_model(tmp_path / "m", "sdxl")
    assert main(["layers", "--model", str(root), "--kind", "attn1"]) == 0
    out = capsys.readouterr().out
    assert "<- diffcut" in out and "down_blocks.1.attentions.1.transformer_blocks.1.attn1" in out
    assert (
        main(["layers", "--model", str(root), "--format", "csv", "--image-size", "128", "--kind", "resnet"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        lines[0].startswith("name,kind,stage")
        and "down_blocks.0.resnets.0,resnet,down,down_blocks.0,32,32,32" in lines[1]
    )
    assert main(["layers", "--model", str(root), "--image-size", "100"]) == 2
    assert "multiples" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_capture_matches_cpu_float32(tmp_path, images):
    from diffcut_lab.backbones import load_backbone

    root = save_tiny_model(tmp_path / "xl", "sdxl")
    gpu = load_backbone(root)  # defaults on a GPU: CUDA, float16 UNet, float32 VAE
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float16 and gpu.vae_dtype == torch.float32
    cpu = load_backbone(root, device="cpu")
    name = diffcut_layer_name(cpu)
    layers = ["diffcut", f"{name}.probs", "mid_block.resnets.0"]
    ref = capture(cpu, images, layers, [10, 50])
    got = capture(gpu, images, layers, [10, 50], store_dtype=torch.float16)
    for key in ref:
        a, b = ref[key], got[key]
        assert b.device.type == "cpu" and b.dtype == torch.float16 and b.shape == a.shape
        assert float((a - b.float()).norm() / a.norm()) < 2e-2, key
    assert torch.allclose(got[f"{name}.probs", 50].float().sum(-1), torch.ones(2, 64), atol=1e-2)
    assert _no_hooks_left(gpu)


def test_capture_guard_is_atomic_across_threads(monkeypatch):
    """Two threads entering a capture on one UNet at once: exactly one gets in (the check and the mark
    are one step; a slow membership test widens the window a race would need)."""
    import threading
    import time
    import weakref

    from diffcut_lab import capturing
    from diffcut_lab.testing import tiny_backbone

    class SlowSet(weakref.WeakSet):
        def __contains__(self, item):
            found = super().__contains__(item)
            time.sleep(0.05)
            return found

    monkeypatch.setattr(capturing, "_ACTIVE", SlowSet())
    bb = tiny_backbone("pixel")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def enter():
        barrier.wait()
        try:
            with capturing._hooks(bb, [], store={}, store_dtype=torch.float32, early_exit=False):
                results.append("in")
                time.sleep(0.2)
        except capturing.ParameterError:
            results.append("refused")

    threads = [threading.Thread(target=enter) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["in", "refused"]
