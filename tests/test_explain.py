"""One line that says why a result has a single segment, and what to try."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference_ncut import clustered_features

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.explain import one_segment_reason


def test_a_tau_below_the_first_cut_is_named_with_a_tau_that_splits():
    f = clustered_features(2, 12, 12, channels=16, k=3, noise=1.5)
    tree = core.cut_tree(f, dl.DiffCutConfig(tau=0.01, refine="none"))
    assert tree.n_segments == 1
    why = one_segment_reason(tree)
    assert f"{tree.steps[0].ncut:.2f}" in why and "tau 0.01" in why
    suggested = float(why.split("a tau of ")[1].split()[0])
    assert suggested > tree.steps[0].ncut
    assert core.cut_tree(f, dl.DiffCutConfig(tau=suggested, refine="none")).n_segments > 1  # the advice works
    assert one_segment_reason(core.cut_tree(f, dl.DiffCutConfig(tau=suggested))) is None


def test_automatic_rule_uniform_attention_and_kway_each_say_why():
    blob = clustered_features(4, 12, 12, channels=16, k=1, noise=0.5)
    auto = core.cut_tree(blob, dl.DiffCutConfig(tau="auto", refine="none"))
    assert auto.n_segments == 1 and "automatic rule" in one_segment_reason(auto)
    uniform = torch.full((144, 144), 1 / 144)
    walk = core.cut_tree(blob, dl.DiffCutConfig(affinity="attention"), attention=uniform)
    assert "nearly uniform" in one_segment_reason(walk)
    kw = core.cut_tree(blob, dl.DiffCutConfig(partition="kway", n_segments=1))
    assert "n_segments" in one_segment_reason(kw)


@pytest.mark.parametrize("grid", [(1, 1)])
def test_a_single_cell(grid):
    tree = dl.recursive_ncut(np.ones((1, 1)), tau=0.5, grid=grid)
    assert "single cell" in one_segment_reason(tree)
