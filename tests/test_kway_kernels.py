"""The compiled loops of the K-way descent (diffcut_lab._kway_kernels) against the array formulas they
fuse and against the objective recomputed from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcut_lab import _kway_kernels as kernels
from diffcut_lab import _kway_moves, kway


def _problem(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random symmetric graph without self-loops or isolated nodes (the gains are exact while every
    segment keeps a positive volume), its degrees, and a labelling using all K segments."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.01, 1, (n, n)) * np.where(rng.uniform(0, 1, (n, n)) < 0.6, 1.0, 0.01)
    w = np.triu(w, 1) + np.triu(w, 1).T
    lab = rng.permutation(np.arange(n) % k).astype(np.int64)
    return w, w.sum(1), lab


def _state(w: np.ndarray, d: np.ndarray, lab: np.ndarray, k: int):
    st_ = np.zeros((k, w.shape[0]))
    np.add.at(st_, lab, w)
    vol = np.bincount(lab, weights=d, minlength=k)
    assoc = np.array([st_[j, lab == j].sum() for j in range(k)])
    return st_, vol, assoc


def _ncut(w: np.ndarray, d: np.ndarray, lab: np.ndarray, k: int) -> float:
    _, vol, assoc = _state(w, d, lab, k)
    pos = vol > 0
    return float(((vol - assoc)[pos] / vol[pos]).sum())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(4, 40), st.integers(2, 6))
def test_exact_gains_are_the_ncut_changes_of_single_moves(seed, n, k) -> None:
    k = min(k, n)
    w, d, lab = _problem(seed, n, k)
    st_, vol, assoc = _state(w, d, lab, k)
    gain, target = kernels.exact_gains(st_, d, np.zeros(n), lab, vol, assoc)
    before = _ncut(w, d, lab, k)
    sizes = np.bincount(lab, minlength=k)
    for i in range(n):
        if sizes[lab[i]] == 1:  # moving the last node would empty its segment
            assert gain[i] == -np.inf
            continue
        changes = []
        for j in range(k):
            if j != lab[i]:
                moved = lab.copy()
                moved[i] = j
                changes.append((before - _ncut(w, d, moved, k), j))
        best = max(changes, key=lambda c: c[0])
        assert gain[i] == pytest.approx(best[0], rel=1e-9, abs=1e-12)
        moved = np.where(np.arange(n) == i, target[i], lab)
        assert before - _ncut(w, d, moved, k) == pytest.approx(best[0], rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 40), st.integers(2, 6), st.floats(0.0, 4.0))
def test_proposal_is_the_array_formula(seed, n, k, lam) -> None:
    k = min(k, n)
    w, d, lab = _problem(seed, n, k)
    st_, vol, assoc = _state(w, d, lab, k)
    inv = np.where(vol > 0, 1.0 / np.where(vol > 0, vol, 1.0), 0.0)
    rho = np.where(vol > 0, assoc / np.where(vol > 0, vol, 1.0), 0.0)
    score = (2.0 * st_ - (rho + lam)[:, None] * d[None, :]) * inv[:, None]
    own = score[lab, np.arange(n)] + 2.0 * lam * d * inv[lab]
    best = score.argmax(0)
    top = score[best, np.arange(n)]
    move = (top > own + 1e-12 * (np.abs(top) + np.abs(own))) & (best != lab)
    np.testing.assert_array_equal(kernels.propose(st_, d, lab, vol, assoc, lam), np.where(move, best, lab))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 40), st.integers(2, 6))
def test_moves_update_the_state_as_a_fresh_one(seed, n, k) -> None:
    k = min(k, n)
    w, d, lab = _problem(seed, n, k)
    new = np.random.default_rng(seed + 1).permutation(np.arange(n) % k).astype(np.int64)
    st_, _, _ = _state(w, d, lab, k)
    ok, st_new = kernels.apply_moves(w, st_, lab, new, k)
    assert ok
    fresh, vol, assoc = _state(w, d, new, k)
    np.testing.assert_allclose(st_new, fresh, rtol=1e-12, atol=1e-12)
    vol_k, assoc_k = kernels.vol_assoc(st_new, d, new, k)
    np.testing.assert_allclose(vol_k, vol, rtol=1e-12)
    np.testing.assert_allclose(assoc_k, assoc, rtol=1e-12, atol=1e-12)
    assert kernels.ncut_value(vol_k, assoc_k) == pytest.approx(_ncut(w, d, new, k), rel=1e-9)
    emptied = np.zeros(n, np.int64)  # every node in segment 0: the others empty
    ok, same = kernels.apply_moves(w, st_, lab, emptied, k)
    assert not ok and same is st_


def test_module_state_and_value_go_through_the_kernels() -> None:
    """``state`` / ``ncut_of`` (torch tensors) and ``kway_ncut_value`` agree with the loops."""
    w, d, lab = _problem(3, 30, 4)
    a, dd = kway._graph(w, False)
    st_, vol, assoc = _kway_moves.state(a, dd, torch.from_numpy(lab), 4)
    ref = _state(w, d, lab, 4)
    np.testing.assert_allclose(st_.numpy(), ref[0], rtol=1e-12, atol=1e-12)
    assert _kway_moves.ncut_of(vol, assoc) == pytest.approx(_ncut(w, d, lab, 4), rel=1e-9)
    assert kway.kway_ncut_value(w, lab) == pytest.approx(_ncut(w, d, lab, 4), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 60))
def test_sweep_takes_the_best_cut_point_of_the_sorted_vector(seed, n) -> None:
    w, d, _ = _problem(seed, n, 2)
    d = d * np.random.default_rng(seed).uniform(1.0, 2.0, n)  # a segment's nodes also link outside it
    y = np.random.default_rng(seed + 1).standard_normal(n)
    order = np.argsort(-y, kind="stable")
    scores = []
    for p in range(1, n):
        lab = np.ones(n, np.int64)
        lab[order[:p]] = 0
        _, vol, assoc = _state(w, d, lab, 2)
        scores.append((assoc / vol).sum())
    best = int(np.argmax(scores)) + 1
    got = kernels.sweep(w, d, y)
    assert (got == 0).sum() == best and set(np.flatnonzero(got == 0)) == set(order[:best].tolist())


def test_kernels_compile_without_a_writable_cache(monkeypatch) -> None:
    """Where numba finds no cache directory it refuses ``cache=True``; the loops then compile per process."""
    import numba

    real = numba.njit

    def njit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x.py'")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)

    def double(x: float) -> float:
        return 2.0 * x

    assert kernels._jit(double)(1.5) == 3.0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 30), st.integers(3, 5))
def test_best_segment_move_is_the_best_of_every_move_recomputed(seed, n, k) -> None:
    w, d, lab = _problem(seed, n, k)
    rng = np.random.default_rng(seed + 2)
    st_, vol, assoc = _state(w, d, lab, k)
    order = np.argsort(lab, kind="stable")
    sizes = np.bincount(lab, minlength=k)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    halves = np.zeros(n, np.int64)
    half_vol, half_assoc = np.zeros((k, 2)), np.zeros((k, 2))
    for c in range(k):
        members = order[bounds[c] : bounds[c + 1]]
        cut = rng.permutation(np.arange(members.size) % 2)  # both halves non-empty
        halves[bounds[c] : bounds[c + 1]] = cut
        for h in range(2):
            part = members[cut == h]
            half_vol[c, h] = d[part].sum()
            half_assoc[c, h] = w[np.ix_(part, part)].sum()
    gain, kind, c, i, j = kernels.best_segment_move(
        st_, vol, assoc, lab, order, bounds, halves, half_vol, half_assoc
    )
    before = _ncut(w, d, lab, k)
    moves = []
    for cc in range(k):
        if sizes[cc] < 2:  # a single node is not cut
            continue
        members = order[bounds[cc] : bounds[cc + 1]]
        cut = halves[bounds[cc] : bounds[cc + 1]]
        for a_ in range(k):
            for b in range(k):
                if len({a_, b, cc}) == 3:  # merge a_ and b, half 1 of cc takes the freed label
                    new = np.where(lab == b, a_, lab)
                    new[members[cut == 1]] = b
                    moves.append((before - _ncut(w, d, new, k), 1, cc, a_, b))
        for h in range(2):
            for b in range(k):
                if b != cc:
                    new = lab.copy()
                    new[members[cut == h]] = b
                    moves.append((before - _ncut(w, d, new, k), 2, cc, h, b))
    top = max(m[0] for m in moves)
    if top <= 1e-9:
        assert kind == 0 or gain == pytest.approx(top, abs=1e-9)
    else:
        assert gain == pytest.approx(top, rel=1e-9, abs=1e-12)
        assert (before - _ncut(w, d, _apply(lab, order, bounds, halves, kind, c, i, j), k)) == pytest.approx(
            top
        )


def _apply(lab, order, bounds, halves, kind, c, i, j) -> np.ndarray:
    """The labels after the move ``(kind, c, i, j)`` of :func:`kernels.best_segment_move`."""
    members = order[bounds[c] : bounds[c + 1]]
    cut = halves[bounds[c] : bounds[c + 1]]
    new = lab.copy()
    if kind == 1:
        new[lab == j] = i
        new[members[cut == 1]] = j
    else:
        new[members[cut == i]] = j
    return new
