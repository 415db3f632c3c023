"""``DiffCutConfig.paper()``: each step of the published evaluation pipeline against a small reference
computation written here from the method's description (reference sections 1-5 and 8), then the whole
chain end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _published_concept import published_concept_assignment
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.ncut import recursive_ncut
from diffcut_lab.refine import concept_assignment, pamr
from diffcut_lab.testing import tiny_backbone

PAPER = dl.DiffCutConfig.paper()


# ---------------------------------------------------------------------------------------------------
# reference computations (what the published code does, written from its description)


def ref_affinity(features: torch.Tensor, alpha: float) -> torch.Tensor:
    """Features L2-normalised when extracted and again at recursion level 0; min-max cosine ** alpha."""
    c = features.shape[0]
    z = F.normalize(F.normalize(features.reshape(1, c, -1), dim=1)[0], p=2, dim=0)
    a = z.T @ z
    a = (a - a.min()) / (a.max() - a.min())
    return a**alpha


def ref_assemble(masks: list[np.ndarray], n: int) -> np.ndarray:
    """``assemble_clusters``: accepted masks summed with weights 1, max + 1, ...; ids by increasing sum
    (Python integers: no float32 overflow)."""
    code = [0] * n
    weight = 1
    for m in masks:
        for i in np.flatnonzero(m):
            code[i] += weight
        weight = max(code) + 1
    order = sorted(set(code))
    return np.array([order.index(v) for v in code], np.int64)


def ref_concept_assignment(labels: np.ndarray, features: torch.Tensor, size: int) -> np.ndarray:
    """Mask pooling of the normalised features, features upsampled bilinearly, argmax of dot products: the
    published arithmetic, frozen (``tests/_published_concept.py``)."""
    return published_concept_assignment(labels, features, size)


def _compact(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


# ---------------------------------------------------------------------------------------------------
# steps


def test_preset_settings_are_the_published_ones():
    assert (PAPER.timestep, PAPER.alpha, PAPER.tau, PAPER.seed, PAPER.layer) == (50, 10.0, 0.5, 42, "diffcut")
    assert (PAPER.policy, PAPER.antialias, PAPER.noise_device) == ("center_crop", False, "model")
    assert (PAPER.mode, PAPER.upsample, PAPER.mask_size) == ("paper", "concept", (128, 128))
    assert (PAPER.refine, PAPER.pamr_iter, PAPER.pamr_dilations, PAPER.median_size) == (
        "pamr",
        10,
        (1, 2, 4, 8),
        3,
    )
    assert PAPER.pamr_guide == "input"
    assert (PAPER.image_size, PAPER.refine_max_side, PAPER.min_size, PAPER.max_depth) == (None, None, 1, None)
    assert (PAPER.solver, PAPER.knn, PAPER.affinity, PAPER.walk_steps) == ("auto", None, "cosine", 1)
    assert (PAPER.partition, PAPER.n_segments, PAPER.auto_rule) == ("recursive", None, "dynamic")
    assert dl.DiffCutConfig.paper(tau=0.2).tau == 0.2  # SD 1.4's tau, by override


def test_preset_differs_from_the_defaults_where_the_config_docstring_says():
    """The defaults are the published values except for these (``diffcut_lab.config``'s docstring says why)."""
    assert PAPER.changes() == {
        "mode": "paper", "policy": "center_crop", "antialias": False, "noise_device": "model",
        "mask_size": [128, 128], "refine_max_side": None, "pamr_guide": "input",
    }  # fmt: skip
    with pytest.raises(dl.ParameterError, match="unknown DiffCut setting"):
        dl.DiffCutConfig.paper(taus=0.2)


def test_crop_and_resize_are_the_published_ones():
    """369 x 492 photo: a 368 px square at left offset 62, bilinear to the model size without antialias."""
    bb = tiny_backbone("pixel")
    img = np.random.default_rng(0).integers(0, 256, (369, 492, 3), dtype=np.uint8)
    region, x = dl.DiffCut(bb, PAPER).inputs(img)[0]
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(region, t[:, 0:368, 62:430], rtol=0, atol=0)
    expected = F.interpolate(t[None, :, 0:368, 62:430], size=(64, 64), mode="bilinear", align_corners=False)[
        0
    ]
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    # the defaults keep the whole image and antialias the shrink: another input
    _, x_default = dl.DiffCut(bb).inputs(img)[0]
    assert x_default.shape == x.shape and not torch.equal(x_default, x)


def test_seeded_noise_comes_from_a_generator_on_the_requested_device():
    bb = tiny_backbone("pixel")
    eps = bb.noise((1, 3, 8, 8), seed=42, device="cpu")
    torch.testing.assert_close(
        eps, torch.randn((1, 3, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
    )
    calls = []
    original = bb.noise

    def spy(shape, **kw):
        calls.append(kw["device"])
        return original(shape, **kw)

    bb.noise = spy
    latents = torch.zeros(1, 3, 8, 8)
    bb.add_noise(latents, 50, seed=42, noise_device="model")
    bb.add_noise(latents, 50, seed=42, noise_device="cpu")
    assert calls == [latents.device, torch.device("cpu")]
    with pytest.raises(dl.ParameterError, match="noise_device"):
        bb.add_noise(latents, 50, noise_device="gpu")


@pytest.mark.gpu
def test_noise_on_a_gpu_follows_the_published_generator():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    bb = tiny_backbone("pixel", device="cuda")
    lat = torch.zeros(1, 3, 8, 8, device="cuda")
    eps = bb.noise(tuple(lat.shape), seed=42, device=lat.device)
    expected = torch.randn((1, 3, 8, 8), generator=torch.Generator("cuda").manual_seed(42), device="cuda")
    torch.testing.assert_close(eps, expected)
    assert not torch.equal(eps.cpu(), bb.noise(tuple(lat.shape), seed=42, device="cpu"))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), tau=st.floats(0.2, 1.2), alpha=st.sampled_from([1.0, 5.0, 10.0]))
def test_cut_and_numbering_are_the_published_ones(seed, tau, alpha):
    """Paper mode on twice-normalised features, numbered as ``assemble_clusters`` numbers them."""
    f = torch.from_numpy(np.random.default_rng(seed).normal(size=(8, 6, 7)).astype(np.float32)) * 3
    tree = core.cut_tree(f, PAPER.replace(tau=tau, alpha=alpha))
    ref = recursive_ncut(ref_affinity(f, alpha), tau=tau, grid=(6, 7), mode="paper")
    assert [s.ncut for s in tree.steps] == [s.ncut for s in ref.steps]
    masks = []
    for s in ref.accepted_steps:
        m = np.zeros(42, bool)
        m[s.positive_members()] = True
        masks.append(m)
    np.testing.assert_array_equal(core.grid_labels(tree).ravel(), ref_assemble(masks, 42))


def test_concept_assignment_in_the_published_order():
    rng = np.random.default_rng(3)
    f = torch.from_numpy(rng.normal(size=(64, 8, 8)).astype(np.float32))
    labels = rng.integers(0, 5, (8, 8))
    ours = core.upsample_labels(labels, f, (128, 128), PAPER)
    np.testing.assert_array_equal(ours, _compact(ref_concept_assignment(labels, f, 128)))


def _nearly_parallel(
    seed: int, channels: int, side: int, k: int, spread: float
) -> tuple[np.ndarray, torch.Tensor]:
    """Segment ids and features that differ little from one common direction (as a real layer's do at
    t = 50): segment scores lie close, and float32 rounding decides some pixels."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(channels, 1, 1, generator=g) + spread * torch.randn(channels, side, side, generator=g)
    return torch.randint(0, k, (side, side), generator=g).numpy(), f


def _pooled_on_the_grid(labels: np.ndarray, f: torch.Tensor, size: int) -> np.ndarray:
    """The same mathematics in another float32 order: contiguous features, every mask pooled by one matrix
    product (what paper mode did before it followed ``MaskPooling``)."""
    c, h, w = f.shape
    fn = F.normalize(f, dim=0).reshape(c, h * w)
    onehot = F.one_hot(torch.from_numpy(np.unique(labels, return_inverse=True)[1].reshape(-1))).float()
    centroids = fn @ (onehot / (onehot.sum(0, keepdim=True) + 1e-8))
    up = F.interpolate(fn.reshape(1, c, h, w), size=(size, size), mode="bilinear", align_corners=False)
    return (up.reshape(c, -1).T @ centroids).argmax(1).reshape(size, size).numpy()


@pytest.mark.parametrize(("seed", "channels", "side", "k"), [(0, 64, 8, 5), (1, 64, 8, 5), (0, 1280, 32, 44)])
def test_concept_assignment_is_the_published_arithmetic_to_the_bit(seed, channels, side, k):
    """Where float32 rounding decides pixels, paper mode's labels are the published ones, bit for bit; the
    fixture is one where another order of the same sums moves pixels (so a change of order fails here)."""
    labels, f = _nearly_parallel(seed, channels, side, k, spread=0.1)
    published = _compact(ref_concept_assignment(labels, f, 128))
    other_order = _compact(_pooled_on_the_grid(labels, f, 128))
    assert (other_order != published).sum() > 0  # the fixture tells the orders apart
    np.testing.assert_array_equal(core.upsample_labels(labels, f, (128, 128), PAPER), published)
    np.testing.assert_array_equal(concept_assignment(labels, f, 128, order="features"), published)
    np.testing.assert_array_equal(concept_assignment(labels, f.numpy(), 128, order="features"), published)


def test_pamr_is_guided_by_the_model_input_downsampled_without_antialias():
    x = torch.rand(3, 256, 256)
    region = torch.rand(3, 300, 300)
    guide = core.guide_image(region, x, (128, 128), PAPER)
    expected = F.interpolate(x[None], size=(128, 128), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(guide, expected, rtol=0, atol=0)
    # the default follows the image itself, antialiased
    ours = core.guide_image(region, x, (128, 128), dl.DiffCutConfig())
    expected = F.interpolate(region[None], size=(128, 128), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("family", "tau"), [("pixel", 0.9), ("sdxl", 0.6)])  # 254 and 16 segments
def test_paper_pipeline_end_to_end(family, tau):
    """``DiffCut(bb, DiffCutConfig.paper(tau=...)).segment(image).labels`` is the published 128 x 128 map."""
    bb = tiny_backbone(family)
    from diffcut_lab.datasets.synthetic import make_scene

    img = make_scene(11, size=(90, 120)).image
    seg = dl.DiffCut(bb, dl.DiffCutConfig.paper(tau=tau)).segment(img)
    # by hand: crop, resize, features, cut, numbering, concept assignment, PAMR, median
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    top, left, side = 0, 16, 89  # min(H, W) - 1; left = round(31 / 2) = 16, as torchvision rounds
    x = F.interpolate(t[None, :, top : top + side, left : left + side], size=(64, 64), mode="bilinear")[0]
    name = dl.resolve_layers(bb, "diffcut")[0]
    f = dl.capture(bb, x[None], layers=[name], timesteps=[50], seed=42)[name, 50][0].float()
    tree = recursive_ncut(ref_affinity(f, 10.0), tau=tau, grid=tuple(f.shape[1:]), mode="paper")
    n = f.shape[1] * f.shape[2]
    masks = []
    for s in tree.accepted_steps:
        m = np.zeros(n, bool)
        m[s.positive_members()] = True
        masks.append(m)
    coarse = ref_assemble(masks, n).reshape(f.shape[1:])
    pred = ref_concept_assignment(coarse, f, 128)
    guide = F.interpolate(x[None], size=(128, 128), mode="bilinear")[0]
    pred = pamr(guide, _compact(pred), num_iter=10, dilations=(1, 2, 4, 8))
    pred = ndimage.median_filter(np.asarray(pred), 3)
    assert seg.labels.shape == (128, 128)
    np.testing.assert_array_equal(seg.labels, _compact(pred))
