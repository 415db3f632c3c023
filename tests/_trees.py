"""Trees of every kind and how to compare them, shared by the pipeline, stepper and view tests."""

from __future__ import annotations

import numpy as np
import torch


def attention_of(f: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``(N, N)`` self-attention-like probabilities of ``(C, h, w)`` features (rows sum to 1)."""
    z = torch.nn.functional.normalize(f.reshape(f.shape[0], -1), dim=0)
    return torch.softmax(z.T @ z / temperature, dim=1)


#: one configuration of every kind of tree: (name, cut settings, the kind's marks in tree.params)
TREE_KINDS = [
    (
        "attention",
        {"affinity": "attention", "walk_steps": 2, "tau": 0.6},
        {"affinity": "attention", "walk_steps": 2},
    ),
    ("auto", {"tau": "auto"}, {"tau": "auto", "auto_rule": "dynamic"}),
    ("auto-stable", {"tau": "auto", "auto_rule": "stable"}, {"tau": "auto", "auto_rule": "stable"}),
    ("kway", {"partition": "kway", "n_segments": 3}, {"partition": "kway", "n_segments": 3}),
    ("kway-auto", {"partition": "kway", "tau": "auto"}, {"partition": "kway", "tau": "auto"}),
    ("knn", {"knn": 8, "tau": 0.7}, {"knn": 8}),
]


def kind_features(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, 12, 12)`` features of four regions and their ``(144, 144)`` attention probabilities."""
    from _reference_ncut import clustered_features

    f = clustered_features(seed, 12, 12, channels=32, k=4, noise=0.5)
    return f, attention_of(f)


def assert_same_tree(a, b) -> None:
    """Two trees are the same cut: labels, tau, mode, recorded settings and every step."""
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.tau, a.mode, a.params) == (b.tau, b.mode, b.params)
    assert [(s.node, s.accepted) for s in a.steps] == [(s.node, s.accepted) for s in b.steps]
    np.testing.assert_allclose([s.ncut for s in a.steps], [s.ncut for s in b.steps], rtol=0, atol=0)
