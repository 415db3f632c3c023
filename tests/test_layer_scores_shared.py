"""The layer table, the ranking and the methods table share their work and give the numbers of the
straightforward path: every (layer, timestep, image, setting, tau) cut alone by the core
(``segmentation.cut_tree``), made into pixel labels (``segmentation.pixel_labels``) and scored
(``hungarian_miou``) on one thread, whether the table's images are cut one after the other or side by
side on two threads (each image on one thread)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _contracts import small_study

import diffcut_lab as dl
from diffcut_lab import segmentation as core
from diffcut_lab.metrics import hungarian_miou
from diffcut_lab.selection import tuned

TAUS = [0.3, 0.5, 0.9]
N_CLASSES = 6


@pytest.fixture(scope="module")
def study():
    cache, scenes, layer = small_study()
    return cache, [s.mask for s in scenes], layer


@pytest.fixture()
def two_threads():
    """The process's threads as a user's notebook has them: the images are cut on two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _alone(cache, gts, layer, t, image, cfg, tau) -> dict:
    """One row the straightforward way: one cut, one labelling, one score, on one thread (as the suite
    runs; concept assignment's float sums may round otherwise on two torch threads beside one BLAS
    thread, and a near tie of an upsampled pixel go the other way)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _one_row(cache, gts, layer, t, image, cfg, tau)
    finally:
        torch.set_num_threads(before)


def _one_row(cache, gts, layer, t, image, cfg, tau) -> dict:
    f = cache[layer, t][image]
    attention = cache[f"{layer}.probs", t][image] if cfg.affinity == "attention" else None
    tree = core.cut_tree(f, cfg, tau=tau, attention=attention)
    labels = core.grid_labels(tree)
    img = cache.images[image]
    pred = core.pixel_labels(labels, f, gts[image].shape, cfg, region=img, x=img)
    res = hungarian_miou(pred, gts[image], num_classes=N_CLASSES)
    return {"layer": layer, "timestep": t, "image": image, "tau": float("nan") if tau == "auto" else tau,
            "n_segments": int(labels.max()) + 1, "miou": float(res.miou), "tp": res.tp.tolist(),
            "fp": res.fp.tolist(), "fn": res.fn.tolist(), "n_pixels": int(res.n_pixels), "labels": labels}  # fmt: skip


def _same_rows(shared: pd.DataFrame, reference: list[dict]) -> None:
    ref = pd.DataFrame(reference)
    keys = ["layer", "timestep", "image", "tau"]
    got = shared.sort_values(keys, kind="stable").reset_index(drop=True)
    ref = ref.sort_values(keys, kind="stable").reset_index(drop=True)
    assert len(got) == len(ref)
    cols = ["layer", "timestep", "image", "tau", "n_segments", "miou", "tp", "fp", "fn", "n_pixels"]
    pd.testing.assert_frame_equal(got[cols], ref[cols], check_dtype=False, check_exact=True)
    for a, b in zip(got["labels"], ref["labels"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "cfg",
    [
        dl.DiffCutConfig(refine="none"),
        dl.DiffCutConfig(refine="none", partition="kway"),
        dl.DiffCutConfig(refine="none", affinity="attention", walk_steps=2),
    ],
    ids=["cosine", "kway", "walk"],
)
def test_every_row_is_the_cut_of_its_own_settings(study, two_threads, cfg):
    cache, gts, layer = study
    layers = [layer] if cfg.affinity == "attention" else None  # the walk reads the paper layer's attention
    taus = [*TAUS, "auto"]
    shared = dl.layer_scores(cache, gts, num_classes=N_CLASSES, layers=layers, taus=taus, config=cfg,
                             keep_labels=True)  # fmt: skip
    assert torch.get_num_threads() == 2  # the threads are given back
    reference = [
        _alone(cache, gts, name, t, i, cfg, tau)
        for name in (layers or [n for n in cache.layers if not n.endswith(".probs")])
        for t in cache.timesteps
        for i in range(len(gts))
        for tau in taus
    ]
    _same_rows(shared, reference)
    # on one thread: the same table, row for row
    torch.set_num_threads(1)
    alone = dl.layer_scores(cache, gts, num_classes=N_CLASSES, layers=layers, taus=taus, config=cfg)
    pd.testing.assert_frame_equal(shared.drop(columns=["seconds", "labels", "features"]),
                                  alone.drop(columns="seconds"))  # fmt: skip


def test_ranking_and_methods_table_are_those_of_the_straightforward_rows(study, two_threads):
    cache, gts, layer = study
    cfg = dl.DiffCutConfig(refine="none")
    select, test = [0, 1], [2, 3]
    scores = dl.layer_scores(cache, gts, num_classes=N_CLASSES, taus=TAUS, config=cfg, keep_labels=True)
    names = [n for n in cache.layers if not n.endswith(".probs")]
    straight = pd.DataFrame([_alone(cache, gts, n, t, i, cfg, tau) for n in names for t in cache.timesteps
                             for i in range(4) for tau in TAUS])  # fmt: skip
    ranking = dl.layer_ranking(scores, select=select, test=test)
    ref = tuned(straight, ["layer", "timestep"], select=select, test=test)
    ref = ref[ref["stopping"] == "tau chosen"]
    got = ranking.sort_values(["layer", "timestep"]).reset_index(drop=True)
    ref = ref.sort_values(["layer", "timestep"]).reset_index(drop=True)
    for col in ("tau", "miou", "miou_min", "miou_max", "n_segments"):
        np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy())

    methods = {
        "cosine": cfg,
        "walk 1": dl.DiffCutConfig(affinity="attention", walk_steps=1, refine="none"),
        "walk 2": dl.DiffCutConfig(affinity="attention", walk_steps=2, refine="none"),
        "kway": cfg.replace(partition="kway"),
    }
    kw = dict(select=select, test=test, taus=TAUS, num_classes=N_CLASSES, layer=layer, timestep=50)
    table = dl.method_comparison(cache, gts, methods, scores=scores, **kw)
    rows = pd.DataFrame([{**_alone(cache, gts, layer, 50, i, c, tau), "method": name}
                         for name, c in methods.items() for i in range(4) for tau in [*TAUS, "auto"]])  # fmt: skip
    ref = tuned(rows, ["method"], select=select, test=test)
    ref = ref.sort_values("method", key=lambda c: c.map(list(methods).index), kind="stable").reset_index(
        drop=True
    )
    cols = ["method", "stopping", "tau", "miou", "miou_min", "miou_max", "n_segments"]
    pd.testing.assert_frame_equal(table[cols], ref[cols], check_exact=True)


def test_one_walk_graph_per_image_and_setting_for_every_tau_and_auto(study, monkeypatch):
    """An attention walk (the costly graph) is built once per image for its numeric taus and "auto"."""
    cache, gts, layer = study
    built = []
    affinity_graph = core.affinity_graph

    def counting(features, config, attention=None):
        built.append((config.affinity, config.walk_steps))
        return affinity_graph(features, config, attention)

    monkeypatch.setattr(core, "affinity_graph", counting)
    methods = {
        f"walk {k}": dl.DiffCutConfig(affinity="attention", walk_steps=k, refine="none") for k in (1, 2)
    }
    dl.method_comparison(cache, gts, methods, select=[0, 1], test=[2, 3], taus=TAUS, num_classes=N_CLASSES,
                         layer=layer, timestep=50)  # fmt: skip
    assert sorted(built) == sorted([("attention", 1)] * 4 + [("attention", 2)] * 4)


def test_an_error_in_one_image_stops_the_rest_and_gives_the_threads_back(study, two_threads, monkeypatch):
    cache, gts, _ = study
    cut_trees, seen = core.cut_trees, []

    def failing(features, config, taus, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise dl.ParameterError("no cut here")
        return cut_trees(features, config, taus, **kwargs)

    monkeypatch.setattr(core, "cut_trees", failing)
    with pytest.raises(dl.ParameterError, match="no cut here"):
        dl.layer_scores(cache, taus=TAUS)
    assert torch.get_num_threads() == 2
    assert len(seen) < len(cache.layers) * len(cache.timesteps) * len(gts)  # the jobs not started are dropped


def test_large_grids_are_cut_one_at_a_time():
    from diffcut_lab.layer_comparison import _side_by_side

    assert _side_by_side(2, 90, 32 * 32) == 2  # the notebook's grids: one per thread
    assert _side_by_side(16, 90, 64 * 64) == 5  # memory, not threads, bounds 64 x 64 cuts
    assert _side_by_side(16, 90, 128 * 128) == 1  # the largest grid: as before, one after the other
    assert _side_by_side(8, 3, 16 * 16) == 3 and _side_by_side(1, 90, 16 * 16) == 1


def test_every_image_is_cut_on_one_thread_however_many_run_at_once(two_threads):
    """Side by side or one at a time (one image, or grids too large to cut side by side), every job runs on
    one torch thread: some operations (concept assignment's products) round differently on two, so the rows
    must not depend on how many images ran at once. The process's threads are given back."""
    from diffcut_lab.layer_comparison import _each_image

    def threads_seen(job: int) -> tuple[int, int]:
        return job, torch.get_num_threads()

    side_by_side = _each_image(threads_seen, list(range(4)), 32 * 32)
    one_at_a_time = _each_image(threads_seen, list(range(4)), 128 * 128)
    alone = _each_image(threads_seen, [0], 32 * 32)
    assert side_by_side == one_at_a_time == [(j, 1) for j in range(4)] and alone == [(0, 1)]
    assert torch.get_num_threads() == 2
