"""Shared test set-up: quiet, deterministic, and sized for a 2-core machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return REPO


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """A git-ignored folder where tests leave things worth looking at (screenshots, reports)."""
    path = REPO / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
