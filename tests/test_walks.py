"""Random walks on attention: transition matrix, k-step walk, and the symmetric graph the cut runs on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffcut_lab.errors import FeatureError, ParameterError
from diffcut_lab.ncut import recursive_ncut
from diffcut_lab.walks import (
    stationary_distribution,
    symmetrize,
    transition_matrix,
    walk_affinity,
    walk_matrix,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _attention(n: int, seed: int = 0, temp: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(temp * torch.randn(n, n, generator=g), dim=1)


# non-negative matrices with positive row sums (a few exact zeros included), as attention might look
_matrices = st.integers(2, 10).flatmap(
    lambda n: arrays(
        np.float64,
        (n, n),
        elements=st.one_of(st.just(0.0), st.floats(1e-3, 10.0, allow_nan=False, allow_infinity=False)),
    ).map(lambda a: a + np.eye(a.shape[0]) * 1e-3)
)


@settings(max_examples=40, deadline=None)
@given(a=_matrices, steps=st.integers(1, 6))
def test_walk_matrix_is_row_stochastic_and_equals_k_products(a, steps):
    P = transition_matrix(a)
    assert P.dtype == torch.float64
    assert bool((P >= 0).all())
    assert torch.allclose(P.sum(1), torch.ones(a.shape[0], dtype=torch.float64), atol=1e-12)
    Pk = walk_matrix(a, steps)
    product = P.clone()
    for _ in range(steps - 1):
        product = product @ P
    assert torch.allclose(Pk, product, atol=1e-12, rtol=1e-10)
    assert torch.allclose(Pk.sum(1), torch.ones(a.shape[0], dtype=torch.float64), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(a=_matrices, steps=st.integers(1, 5), method=st.sampled_from(["stationary", "mean"]))
def test_walk_affinity_is_symmetric_nonnegative_finite_unit_scale(a, steps, method):
    W = walk_affinity(a, steps, symmetrize=method)
    assert W.dtype == torch.float32 and W.shape == a.shape
    assert torch.equal(W, W.T)
    assert bool(torch.isfinite(W).all()) and bool((W >= 0).all())
    assert float(W.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_stay_on_the_input_device(device):
    probs = _attention(24).to(device)
    assert transition_matrix(probs).device.type == device
    assert walk_matrix(probs, 3).device.type == device
    W = walk_affinity(probs, 3)
    assert W.device.type == device and W.dtype == torch.float32


def test_float32_input_gives_float32_and_leading_axis_is_dropped():
    probs = _attention(16)
    assert transition_matrix(probs).dtype == torch.float32
    assert transition_matrix(probs.half()).dtype == torch.float32
    assert torch.equal(transition_matrix(probs[None]), transition_matrix(probs))
    assert transition_matrix(probs.numpy()).dtype == torch.float32


def test_rows_that_drift_from_one_are_renormalised():
    probs = _attention(12).double()
    drifted = probs * (1 + 1e-4 * torch.arange(12, dtype=torch.float64))[:, None]
    assert torch.allclose(transition_matrix(drifted), probs, atol=1e-12)


def test_steps_one_equals_the_symmetrised_transition_matrix():
    probs = _attention(30, seed=1).double()
    P = transition_matrix(probs)
    for method in ("stationary", "mean"):
        expected = symmetrize(P, method=method)
        expected = (expected / expected.max()).float()
        assert torch.allclose(walk_affinity(probs, 1, symmetrize=method), expected, atol=1e-6)


def test_stationary_flow_graph_has_the_random_walk_ncut():
    """Degrees are pi, and the graph's NCut is Pr(A -> B | A) + Pr(B -> A | B) of the k-step walk at
    equilibrium, for a non-reversible chain (attention is not symmetric)."""
    probs = _attention(40, seed=2).double()
    P = transition_matrix(probs)
    pi = stationary_distribution(P)
    assert torch.allclose(pi @ P, pi, atol=1e-12) and float(pi.sum()) == pytest.approx(1.0)
    Pk = walk_matrix(probs, 3)
    F = symmetrize(Pk, pi=pi)
    assert torch.allclose(F.sum(1), pi, atol=1e-12)
    a = torch.zeros(40, dtype=torch.bool)
    a[:15] = True
    cut = F[a][:, ~a].sum()
    ncut = cut / F[a].sum() + cut / F[~a].sum()
    leave_a = (pi[a, None] * Pk[a][:, ~a]).sum() / pi[a].sum()
    leave_b = (pi[~a, None] * Pk[~a][:, a]).sum() / pi[~a].sum()
    assert float(ncut) == pytest.approx(float(leave_a + leave_b), rel=1e-10)


def test_stationary_distribution_of_reducible_and_periodic_chains():
    two_cycles = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    pi = stationary_distribution(transition_matrix(two_cycles))
    assert torch.allclose(pi, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-9)
    transient = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    pi = stationary_distribution(transition_matrix(transient))
    assert torch.allclose(pi, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert bool((pi >= 0).all())


def test_diagonal_conventions():
    probs = _attention(20, seed=3)
    walk = walk_affinity(probs, 2)
    unit = walk_affinity(probs, 2, diagonal="unit")
    zero = walk_affinity(probs, 2, diagonal="zero")
    assert torch.equal(unit.diagonal(), torch.ones(20)) and torch.equal(zero.diagonal(), torch.zeros(20))
    off = ~torch.eye(20, dtype=torch.bool)
    assert torch.allclose(unit[off], zero[off]) and float(zero.max()) == pytest.approx(1.0)
    # the walk convention scales by the largest weight, self-loops included: same graph up to scale
    ratio = walk[off] / zero[off]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    # the fixed-mode cut ignores self-loops, so every convention gives the same partition
    labels = [recursive_ncut(w, tau=0.9).labels for w in (walk, unit, zero)]
    assert all(np.array_equal(labels[0], lab) for lab in labels[1:])


def test_longer_walks_blur_weak_links_into_fewer_segments():
    """Two groups that attend mostly within themselves: the walk separates them, and more steps raise the
    NCut of the separating cut (crossing becomes likelier)."""
    n = 16
    probs = torch.full((n, n), 0.01)
    probs[:8, :8] = probs[8:, 8:] = 1.0
    values = [recursive_ncut(walk_affinity(probs, k), tau=0.5).steps[0].ncut for k in (1, 4, 16)]
    assert values[0] < values[1] < values[2]
    assert recursive_ncut(walk_affinity(probs, 1), tau=0.5).n_segments == 2


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.ones((3, 4)), ParameterError),
        (np.ones((2, 3, 3)), ParameterError),
        (-np.ones((3, 3)), ParameterError),
        (np.array([[1.0, np.nan], [0.5, 0.5]]), FeatureError),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), FeatureError),
        (np.zeros((0, 0)), FeatureError),
    ],
)
def test_bad_input_raises(bad, error):
    with pytest.raises(error):
        transition_matrix(bad)
    with pytest.raises(error):
        walk_affinity(bad, 2)


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"steps": 1.5}, {"steps": True}, {"symmetrize": "max"}, {"diagonal": "one"}]
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ParameterError):
        walk_affinity(_attention(4), **kwargs)


def _clustered_attention(n: int, seed: int = 0) -> torch.Tensor:
    """Attention that stays mostly within two groups: a slowly mixing, strictly positive chain."""
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(n, n, generator=g)
    half = torch.arange(n) < n // 3
    logits += 8.0 * (half[:, None] == half[None, :])
    return torch.softmax(logits, dim=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_iterative_stationary_distribution_matches_the_direct_solve(monkeypatch, dtype):
    from diffcut_lab import walks

    P = transition_matrix(_clustered_attention(300, seed=4).to(dtype))
    direct = stationary_distribution(P.double())
    monkeypatch.setattr(walks, "DIRECT_MAX", 64)

    def no_solve(*args, **kwargs):
        raise AssertionError("the direct solve ran above DIRECT_MAX")

    monkeypatch.setattr(torch.linalg, "solve", no_solve)
    pi = stationary_distribution(P)
    assert pi.dtype == dtype and float(pi.sum()) == pytest.approx(1.0) and bool((pi >= 0).all())
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert torch.allclose(pi.double(), direct, rtol=tol, atol=tol * float(direct.max()))


def test_float32_attention_is_solved_directly_not_by_squaring(monkeypatch):
    """Rows of float32 attention sum to 1 only within float32 rounding: the direct solve normalises them in
    float64, so the equation it drops holds and its answer passes the residual check, instead of falling
    back on repeated squaring (an N^3 product per squaring: 20x slower at 1,024 states)."""
    P = transition_matrix(_clustered_attention(400, seed=5).float())
    assert float((P.double().sum(1) - 1).abs().max()) > 1e-9  # not stochastic in float64

    matmul = torch.Tensor.__matmul__

    def no_squaring(x, y):
        assert not (x.dim() == 2 and y.dim() == 2), "fell back on repeated squaring"
        return matmul(x, y)

    monkeypatch.setattr(torch.Tensor, "__matmul__", no_squaring)
    pi = stationary_distribution(P)
    monkeypatch.undo()
    p64 = P.double()
    assert pi.dtype == torch.float32 and float(pi.sum()) == pytest.approx(1.0) and bool((pi > 0).all())
    assert float((pi.double() @ p64 - pi.double()).abs().max()) <= 1e-6 * float(pi.max())


def test_iterative_path_leaves_reducible_chains_to_the_direct_solve(monkeypatch):
    from diffcut_lab import walks

    monkeypatch.setattr(walks, "DIRECT_MAX", 2)
    two_cycles = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    pi = stationary_distribution(transition_matrix(two_cycles))  # exact zeros: not strictly positive
    assert torch.allclose(pi, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("method", ["stationary", "mean"])
def test_in_place_symmetrisation_gives_the_same_graph(method, monkeypatch):
    from diffcut_lab import walks

    probs = _attention(70, seed=5).double()
    P = transition_matrix(probs)
    pi = stationary_distribution(P)
    g = pi[:, None] * P if method == "stationary" else P
    expected = 0.5 * (g + g.T)
    monkeypatch.setattr(walks, "_BLOCK", 16)  # tiles that do not divide N
    out = walks._symmetric(P.clone(), method, pi, inplace=True)
    assert torch.equal(out, expected)
    assert torch.equal(symmetrize(P, method=method, pi=pi), expected) and torch.equal(
        P, transition_matrix(probs)
    )


def test_long_walks_on_large_grids_are_refused_up_front(monkeypatch):
    from diffcut_lab import walks

    monkeypatch.setattr(walks, "PRODUCT_FREE_MAX", 32)
    assert walks.max_walk_steps(32) > 1000 and walks.max_walk_steps(33) == 2
    probs = _attention(48, seed=6)
    for steps in (1, 2):
        assert walk_affinity(probs, steps).shape == (48, 48)
    calls = []
    monkeypatch.setattr(walks, "transition_matrix", lambda *a: calls.append(a))
    with pytest.raises(ParameterError, match=r"walk_steps <= 2.*64 x 64"):
        walk_affinity(probs, 3)
    with pytest.raises(ParameterError, match="walk_steps=4"):
        walk_matrix(probs, 4)
    assert not calls  # refused before any work on the matrix
