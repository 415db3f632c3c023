"""Linear CKA between captured layers: the measure's invariances, and the labelled matrix of a cache; what
the layer comparison loads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diffcut_lab as dl
from diffcut_lab.errors import ParameterError
from diffcut_lab.layer_comparison import linear_cka
from diffcut_lab.testing import tiny_backbone


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0), shift=st.floats(-5, 5))
def test_cka_ignores_rotation_isotropic_scale_and_offset(seed, scale, shift):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, scale * x @ q + shift) == pytest.approx(1.0, abs=1e-9)
    y = rng.normal(size=(60, 5))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert 0.0 <= linear_cka(x, y) <= 1.0 + 1e-12


def test_cka_sees_an_anisotropic_change_and_refuses_mismatched_examples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6))
    assert linear_cka(x, x * np.array([10.0, 1, 1, 1, 1, 0.1])) < 0.99
    with pytest.raises(ParameterError):
        linear_cka(x, x[:-1])


def test_layer_similarity_of_a_cache():
    bb = tiny_backbone("sd1")
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    cache = dl.capture(bb, images, layers="attn1", timesteps=[10, 500])
    sim = dl.layer_similarity(cache)
    keys = [f"{layer}@{t}" for layer in cache.layers for t in (10, 500)]
    assert sorted(sim.index) == sorted(keys) and list(sim.index) == list(sim.columns)
    z = sim.to_numpy()
    np.testing.assert_allclose(np.diag(z), 1.0)
    np.testing.assert_allclose(z, z.T)
    assert ((z >= 0) & (z <= 1 + 1e-9)).all() and (z < 0.999).any()
    from diffcut_lab import viz

    fig = viz.layer_similarity_figure(sim)
    assert fig.layout.xaxis.type == "category" and len(fig.data[0].x) == len(keys)


def test_layer_ranking_chooses_without_loading_the_ablation_package():
    """The layer comparison reads the pooling and the selection rule from ``diffcut_lab.selection``: ranking
    layers loads neither the ablation package nor its Parquet store (pandas itself may load pyarrow)."""
    code = (
        "import sys\n"
        "import pandas as pd\n"
        "import diffcut_lab as dl\n"
        "layer = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1'\n"
        "rows = pd.DataFrame({'layer': [layer] * 4, 'short': ['d1'] * 4, 'stage': ['down'] * 4,\n"
        "    'resolution': ['2x2'] * 4, 'timestep': [50] * 4, 'image': [0, 0, 1, 1], 'tau': [0.3, 0.5, 0.3, 0.5],\n"
        "    'n_segments': [1, 2, 1, 2], 'tp': [[1, 0], [1, 1], [1, 0], [1, 1]], 'fp': [[0, 1], [0, 0]] * 2,\n"
        "    'fn': [[0, 1], [0, 0]] * 2, 'n_pixels': [2] * 4})\n"
        "best = dl.layer_ranking(rows, select=[0], test=[1])\n"
        "assert best['tau'].tolist() == [0.5] and best['miou'].tolist() == [1.0], best\n"
        "print(' '.join(m for m in ('diffcut_lab.ablation', 'pyarrow.parquet') if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
