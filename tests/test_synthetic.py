"""Synthetic scenes: deterministic, exact masks consistent with the drawing, disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcut_lab.datasets.synthetic import (
    SPLITS,
    TEXTURES,
    SceneConfig,
    make_scene,
    scene_batch,
    split_seeds,
    synthetic_scenes,
)
from diffcut_lab.errors import ParameterError


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b = make_scene(123), make_scene(123)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    c = make_scene(124)
    assert not np.array_equal(a.image, c.image)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([16, 48, 128, (40, 72)]))
def test_mask_is_exact_and_compact(seed, size):
    s = make_scene(seed, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (h, w) and s.mask.dtype == np.int64
    labels = np.unique(s.mask)
    assert labels.tolist() == list(range(s.n_segments))  # 0..K-1, none empty
    assert 2 <= s.n_segments <= SceneConfig().max_objects + 1
    assert len(s.textures) == len(s.shapes) == len(s.palettes) == s.n_segments
    assert set(s.textures) <= set(TEXTURES)


def test_masks_are_consistent_with_the_drawing():
    """Without lighting and noise, every segment's mean colour is exactly its palette's base colour, and
    segments that share a palette have the same mean colour: the mask is what was painted."""
    cfg = SceneConfig(noise=(0.0, 0.0), lighting=0.0)
    checked = 0
    for seed in range(40):
        s = make_scene(seed, 128, cfg)
        img = s.image.astype(float) / 255
        means = np.stack([img[s.mask == k].mean(0) for k in range(s.n_segments)])
        for i in range(s.n_segments):
            for j in range(i + 1, s.n_segments):
                same = s.palettes[i] == s.palettes[j]
                d = np.abs(means[i] - means[j]).max()
                if same:  # equal up to clipping and rounding to uint8
                    assert d < 0.03, (seed, i, j, d)
                    checked += 1
        # a segment's pixels are not all one colour unless its texture is flat
        for k in range(s.n_segments):
            std = img[s.mask == k].std(0).max()
            if s.textures[k] == "flat":
                assert std < 0.01
            elif (s.mask == k).sum() > 200 and s.textures[k] != "gradient":
                assert std > 0.02, (seed, k, s.textures[k])
    assert checked > 10  # palette reuse (same colour, different texture) really happens


def test_no_two_flat_segments_share_a_colour():
    for seed in range(60):
        s = make_scene(seed)
        pairs = {(p, t) for p, t in zip(s.palettes, s.textures) if t == "flat"}
        assert len(pairs) == sum(t == "flat" for t in s.textures)  # never two flat segments of one colour


def test_layout_is_independent_of_size():
    small, big = make_scene(77, 64), make_scene(77, 256)
    agree = (big.mask[2::4, 2::4] == small.mask).mean()
    assert agree > 0.97


def test_splits_are_disjoint_and_fixed():
    ranges = sorted(SPLITS.values())
    for i in range(len(ranges) - 1):
        assert ranges[i][1] <= ranges[i + 1][0]
    assert split_seeds("test", 3) == range(2_000_000, 2_000_003)
    scenes = list(synthetic_scenes("val", n=3, size=32, start=5))
    assert [s.seed for s in scenes] == [1_000_005, 1_000_006, 1_000_007]
    with pytest.raises(ParameterError):
        split_seeds("holdout", 1)
    with pytest.raises(ParameterError):
        split_seeds("val", n=SPLITS["val"][1] - SPLITS["val"][0] + 1)


def test_batch_and_bad_arguments():
    b = scene_batch([1, 2, 3], size=32)
    assert b.shape == (3, 3, 32, 32) and b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1
    with pytest.raises(ParameterError):
        make_scene(-1)
    with pytest.raises(ParameterError):
        make_scene(1, size=4)
    with pytest.raises(ParameterError):
        make_scene(1, config=SceneConfig(min_objects=3, max_objects=2))
