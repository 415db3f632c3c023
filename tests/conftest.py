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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny pixel-space model saved as a diffusers directory (64 px input), shared by the suite."""
    from diffcut_lab.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", family="pixel", image_size=64)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread and one BLAS thread for the whole suite.

    The tests use small tensors and graphs, where thread hand-offs cost more than they save, and on a
    shared 2-core machine torch's and OpenBLAS's spinning threads slow each other down 4-10x. It also
    makes results independent of the machine's core count.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving tmp_path (the browser tests); yields (url, token)."""
    from _browser import running_lab

    with running_lab(tmp_path) as server:
        yield server
