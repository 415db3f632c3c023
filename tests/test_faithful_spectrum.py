"""Every spectrum panel shows the graph the cut partitions: the eigenvector view's y1 is the first cut's
Fiedler vector for the default, paper, kNN and attention-walk configurations, its affinity row is the
cut's edges (self-loops as the mode counts them), and the eigengap rule counts from one cluster."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from _reference_ncut import clustered_features

from diffcut_lab import segmentation as core
from diffcut_lab import viz
from diffcut_lab.config import DiffCutConfig
from diffcut_lab.errors import ParameterError
from diffcut_lab.spectrum import eigengap, laplacian_spectrum

CONFIGS = {
    "default": DiffCutConfig(),
    "paper": DiffCutConfig.paper(),
    "knn16": DiffCutConfig(knn=16),
    "attention": DiffCutConfig(affinity="attention", walk_steps=2),
}


def _attention(f: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` query x key probabilities of the features: a softmax of their scaled cosines."""
    x = torch.nn.functional.normalize(f.reshape(f.shape[0], -1).T.double(), dim=1)
    return torch.softmax(10.0 * x @ x.T, dim=1).float()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return abs(float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1]))


def _case(name: str, seed: int, noise: float) -> tuple[torch.Tensor, DiffCutConfig, torch.Tensor | None]:
    f = clustered_features(seed, 24, 24, k=3, noise=noise)  # noisy three-region 24 x 24 features
    cfg = CONFIGS[name].replace(max_depth=1)  # the first cut is all that is compared (same graph)
    return f, cfg, _attention(f) if cfg.affinity == "attention" else None


# seeds and noise levels where the old view (cosine affinity with self-loops, whatever the config) was
# off: correlations from 0.03 (default, noise 2) to 0.99 (paper, noise 0.6), 0.23 with kNN
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize(("seed", "noise"), [(0, 0.6), (3, 2.0)])
def test_view_y1_is_the_first_cuts_fiedler_vector(name, seed, noise):
    f, cfg, attn = _case(name, seed, noise)
    fiedler = core.cut_tree(f, cfg, attention=attn).steps[0].fiedler
    spec = laplacian_spectrum(f, config=cfg, attention=attn)
    assert _corr(spec.vectors[:, 1], fiedler) >= 0.999
    fig = viz.eigenvectors(f, k=2, config=cfg, attention=attn)
    y1 = next(t for t in fig.data if isinstance(t, go.Heatmap) and t.name == "y1")
    assert _corr(np.asarray(y1.customdata).ravel(), fiedler) >= 0.999
    assert spec.graph in fig.layout.title.text


def test_disconnected_knn_graph_shows_the_component_the_cut_splits_off():
    """A kNN graph of well separated regions falls apart; eigenvalue 0 then repeats and y1 is chosen as
    the fixed-mode cut splits (the component of largest volume against the rest)."""
    f, cfg, _ = _case("knn16", 0, 0.6)
    step = core.cut_tree(f, cfg).steps[0]
    assert step.solver == "components"
    spec = laplacian_spectrum(f, config=cfg)
    assert spec.values[1] == 0.0
    assert _corr(spec.vectors[:, 1], step.fiedler) >= 0.999


def test_explorer_follows_the_config_and_its_alpha():
    f, cfg, _ = _case("default", 3, 2.0)
    app = viz.eigenvector_explorer(f, k=2, config=cfg)
    assert "no self-loops" in app.figure.layout.title.text
    app.set_alpha(5.0)
    fiedler = core.cut_tree(f, cfg.replace(alpha=5.0)).steps[0].fiedler
    assert app.config.alpha == 5.0 and "alpha 5" in app.figure.layout.title.text
    assert _corr(app.spectrum.vectors[:, 1], fiedler) >= 0.999
    # the attention walk does not depend on alpha: no slider
    f, cfg, attn = _case("attention", 0, 0.6)
    assert viz.eigenvector_explorer(f, k=2, config=cfg, attention=attn).alpha_slider is None


@pytest.mark.parametrize("name", ["default", "paper"])
def test_affinity_row_is_the_cuts_edges(name):
    f, cfg, _ = _case(name, 0, 0.6)
    W = core.affinity_graph(f, cfg).numpy().astype(np.float64)
    if cfg.mode == "fixed":
        np.fill_diagonal(W, 0.0)  # the fixed-mode cut ignores self-loops
    spec = laplacian_spectrum(f, config=cfg)
    np.testing.assert_array_equal(spec.dense_W(), W)
    fig = viz.eigenvectors(f, k=2, config=cfg, pixel=(3, 5))
    row = next(t for t in fig.data if t.name == "affinity row")
    np.testing.assert_allclose(np.asarray(row.z).ravel(), W[3 * 24 + 5], atol=1e-5)


def test_alpha_shortcut_and_config_agree():
    f, _, _ = _case("default", 0, 0.6)
    a = laplacian_spectrum(f, 6, alpha=5.0)
    b = laplacian_spectrum(f, 6, config=DiffCutConfig(alpha=5.0))
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(ParameterError, match="attention"):
        laplacian_spectrum(f, config=CONFIGS["attention"])
    with pytest.raises(ParameterError, match="config"):
        laplacian_spectrum(f, config={"alpha": 5.0})


def test_eigengap_rule_counts_from_one():
    assert eigengap([0.0, 0.9, 0.95, 1.0]) == 1
    assert eigengap([0.0, 0.01, 0.02, 0.9, 0.95]) == 3
    assert eigengap([0.0, 0.9, 0.95, 1.0], min_clusters=2) == 3


def test_large_graphs_use_lanczos_with_the_same_pairs(monkeypatch):
    """Above the dense limit the eigenpairs come from ARPACK on the same weights (dense or kNN)."""
    import diffcut_lab.spectrum as spectrum

    f = clustered_features(1, 12, 12, k=3, noise=1.0, channels=32)
    for cfg in (DiffCutConfig(), DiffCutConfig(knn=8)):
        dense = laplacian_spectrum(f, 6, config=cfg)
        monkeypatch.setattr(spectrum, "_DENSE_MAX", 50)
        lanczos = laplacian_spectrum(f, 6, config=cfg)
        monkeypatch.undo()
        np.testing.assert_allclose(lanczos.values, dense.values, atol=1e-8)
        for j in range(1, 3):
            assert _corr(lanczos.vectors[:, j], dense.vectors[:, j]) >= 0.9999
