"""Layer comparison: DiffCut on every captured layer and timestep, scored against ground truth, and how
alike the layers' features are.

:func:`layer_scores` is the table behind the layer views (:func:`diffcut_lab.viz.layer_grid` draws it):
each (layer, timestep, image) is segmented by the segmentation core with one
:class:`~diffcut_lab.config.DiffCutConfig` and scored with the published Hungarian matching;
:func:`layer_ranking` scores each layer at its own tau; :func:`layer_similarity` is the linear CKA
between every pair of captured maps (which layers carry the same information);
:func:`method_comparison` scores several settings on one layer. They share their work: per image, each
graph and each recursion is computed once for every tau (:func:`~diffcut_lab.segmentation.cut_trees`;
the numeric taus and ``"auto"`` share an attention walk's graph), a K-way cut runs once per distinct
starting partition, a label map is upsampled and scored once however many taus give it, and
:func:`method_comparison` reads the rows :func:`layer_scores` already holds. The images are cut side
by side, one per thread of the process, each on one torch and one BLAS thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .config import CUT_FIELDS, LABEL_FIELDS, DiffCutConfig, check_tau, cut_key
from .errors import ParameterError, UnknownLayerError
from .hook_points import forward_order, layer_stage, short_layer_name
from .validation import check_labels

if TYPE_CHECKING:
    import torch

__all__ = [
    "SORT_KEYS",
    "layer_ranking",
    "layer_scores",
    "layer_similarity",
    "linear_cka",
    "method_comparison",
    "sort_scores",
]


#: orders ``layer_grid`` and ``layer_scores`` accept for ``sort_by``
SORT_KEYS = ("stage", "miou", "segments", "resolution", "name")

#: bytes the images cut side by side may hold together: a dense cut of N nodes holds about 24 N^2 bytes
#: (the float32 graph and a float64 copy), so 64 x 64 grids go five at a time, 128 x 128 grids one
SIDE_BY_SIDE_BYTES = 2 * 2**30


def _select(cache: Any, layers: Sequence[str] | None, timesteps: Sequence[int] | None) -> tuple[list, list]:
    all_layers = list(cache.layers)
    chosen = list(layers) if layers is not None else all_layers
    missing = [name for name in chosen if name not in all_layers]
    if missing:
        raise UnknownLayerError(f"layers {missing} are not in this cache; it holds {all_layers}")
    ts = list(timesteps) if timesteps is not None else list(cache.timesteps)
    return chosen, ts


def _batch_features(cache: Any, layer: str, t: int) -> torch.Tensor | None:
    """The ``(B, C, h, w)`` float32 CPU features of one capture, converted once for every image (``None``
    for attention probabilities, which have no spatial layout of channels)."""
    import torch

    x = cache[layer, t]
    x = x.detach() if hasattr(x, "detach") else torch.as_tensor(np.asarray(x))
    if x.ndim != 4:
        return None
    return x.float().cpu()


def _attention(cache: Any, layer: str, t: int, index: int) -> Any:
    key = f"{layer}.probs"
    if key not in cache.layers:
        raise ParameterError(
            f"affinity='attention' cuts the layer's self-attention, and the cache has no {key!r}: capture it "
            f"with the features (layers=[{layer!r}, {key!r}])."
        )
    return cache[key, t][index]


def layer_scores(
    cache: Any,
    gt: Any = None,
    *,
    layers: Sequence[str] | None = None,
    timesteps: Sequence[int] | None = None,
    images: Sequence[int] | None = None,
    config: Any = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    sort_by: str = "stage",
    keep_labels: bool = False,
    taus: Sequence[float] | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """DiffCut on every captured layer and timestep: one row per (layer, timestep, image[, tau]).

    Parameters
    ----------
    cache
        A :class:`~diffcut_lab.FeatureCache` with ``(B, C, h, w)`` features.
    gt
        Optional ground truth: one ``(H, W)`` map per image of the batch (a ``(B, H, W)`` array or a list;
        ``None`` entries leave an image unscored).
        Predictions are made at its size by the segmentation core (upsampling and refinement as
        ``config`` says, guided by ``cache.images``) and scored with :func:`diffcut_lab.hungarian_miou`
        (the published matching).
    layers, timesteps, images
        Subsets of the cache (default: everything; ``images`` are batch indices).
    config : DiffCutConfig, optional
        The settings (default ``DiffCutConfig()``); the layer and timestep come from the cache.
    num_classes : int
        Number of ground-truth classes (needed with ``gt``: the published matching counts the classes
        absent from an image too, so it cannot be guessed from the largest id present).
    **settings
        DiffCutConfig fields that override ``config`` (``alpha=5``, ``tau=0.3``, ``refine="none"``).
    ignore_index
        Ground-truth id left out of the score.
    sort_by
        One of :data:`SORT_KEYS`.
    keep_labels
        Keep the ``(h, w)`` grid labels in a ``labels`` column and the ``(C, h, w)`` features in a
        ``features`` column (what :func:`diffcut_lab.viz.layer_grid` draws).
    taus : sequence of float or "auto", optional
        Score every tau of the list (one row each): one recursion at the largest, pruned for the others
        (:func:`~diffcut_lab.segmentation.cut_trees`); ``"auto"`` (the automatic stopping rule) is cut on
        its own (on the same graph for an attention walk) and its rows hold NaN in the numeric ``tau``
        column. Default: the config's tau only.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, short, stage, resolution, channels, timestep, image, tau, n_segments, miou,
        seconds`` (the cut's, per image: the graph and the recursion shared by the numeric taus, the
        automatic cut alone; an attention walk's graph and both cuts together) and, with ground truth, the image's ``tp, fp, fn`` per class and ``n_pixels``
        (so that scores can be pooled over images, as the published metric does: :func:`layer_ranking`).
        ``affinity="attention"`` reads the layer's ``"<layer>.probs"`` from the cache. ``attrs`` records
        the settings (``config``, as :meth:`~diffcut_lab.config.DiffCutConfig.to_dict`), ``num_classes``
        and ``ignore_index``, so that :func:`method_comparison` and the views can reuse the rows.
    """
    cfg = DiffCutConfig.build(config, **settings)
    chosen, ts = _select(cache, layers, timesteps)
    gts = _ground_truth(gt, num_classes, "layer_scores")
    groups = _cut_groups(cfg, taus if taus is not None else [cfg.tau])
    rows = _score_rows(cache, gts, {None: (cfg, groups)}, chosen, ts, images, num_classes=num_classes,
                       ignore_index=ignore_index, keep_labels=keep_labels)  # fmt: skip
    df = _sort(pd.DataFrame(rows), sort_by)
    df.attrs.update(config=cfg.to_dict(), num_classes=num_classes, ignore_index=ignore_index)
    return df


def _ground_truth(gt: Any, num_classes: int | None, caller: str) -> list[np.ndarray | None] | None:
    """One ``(H, W)`` int64 map (or ``None``) per image, from a ``(B, H, W)`` array, a list or one map."""
    if gt is None:
        return None
    if num_classes is None:
        raise ParameterError(f"{caller} with gt needs num_classes= (e.g. dataset.info.num_classes).")
    many = isinstance(gt, (list, tuple)) or np.ndim(gt) == 3
    return [None if g is None else check_labels(g, "ground truth", ndim=2) for g in (gt if many else [gt])]


def _tau_groups(taus: Sequence[Any]) -> list[list[Any]]:
    """The numeric taus (sorted; one recursion serves them all) and ``["auto"]``, each when asked for."""
    from .options import AUTO

    asked = [check_tau(t, auto=True) for t in taus]
    return [g for g in (sorted({t for t in asked if t != AUTO}), [AUTO] if AUTO in asked else []) if g]


def _cut_groups(cfg: DiffCutConfig, taus: Sequence[Any]) -> list[list[Any]]:
    """The taus of ``cfg`` in the groups that are cut together (one graph each): the numeric taus (one
    recursion) and ``"auto"``. An attention walk's graph, the costly one (a float64 stationary
    distribution: 0.2-1 s at 32 x 32), serves both in one group; a cosine graph takes milliseconds and
    is built for each, so that the automatic rows keep the seconds of their own cut, and a K-way cut
    that starts from the recursive partitions shares its numeric cuts by starting partition."""
    groups = _tau_groups(taus)
    if cfg.affinity != "attention" or (cfg.partition == "kway" and not cfg.n_segments):
        return groups
    return [[t for g in groups for t in g]]


class _ImageCuts:
    """The cut trees of one image's features under several settings, each computed once.

    Each (cut settings, tau group) is one :func:`~diffcut_lab.segmentation.cut_trees` call (one graph, one
    recursion at the largest tau, pruned for the others, and ``"auto"``). A K-way cut that starts from the recursive
    partition runs once per distinct partition: taus whose recursive trees agree share its result (same
    graph, same K, same start).
    """

    def __init__(self, features: torch.Tensor, attention: Callable[[], Any]) -> None:
        self.features = features
        self._attention = attention
        self._memo: dict[tuple, tuple[dict, float]] = {}

    def trees(self, cfg: DiffCutConfig, group: Sequence[Any]) -> tuple[dict, float]:
        """``({tau: CutTree}, seconds)``: the trees of ``group`` and the time their cut took."""
        key = (cut_key(cfg), tuple(group))
        if key not in self._memo:
            self._memo[key] = self._cut(cfg, list(group))
        return self._memo[key]

    def _cut(self, cfg: DiffCutConfig, group: list[Any]) -> tuple[dict, float]:
        from . import segmentation as core
        from .options import AUTO

        attention = self._attention() if cfg.affinity == "attention" else None
        starts = None
        if cfg.partition == "kway" and not cfg.n_segments and AUTO not in group and len(group) > 1:
            recursive, _ = self.trees(cfg.replace(partition="recursive"), group)
            starts = {}  # the recursive partition -> the first tau that gives it
            for tau in group:
                starts.setdefault(recursive[tau].labels.tobytes(), tau)
        t0 = time.perf_counter()
        if starts is None:
            trees = core.cut_trees(self.features, cfg, group, attention=attention)
        else:
            cut = core.cut_trees(self.features, cfg, list(starts.values()), attention=attention)
            trees = {tau: cut[starts[recursive[tau].labels.tobytes()]] for tau in group}
        return trees, time.perf_counter() - t0


class _ImageScores:
    """Pixel labels and Hungarian counts of one image, each distinct grid label map computed once."""

    def __init__(self, features: torch.Tensor, gt: np.ndarray, image: Any, num_classes: int,
                 ignore_index: int) -> None:  # fmt: skip
        self.features, self.gt, self.image = features, gt, image
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._memo: dict[tuple, dict[str, Any]] = {}

    def score(self, labels: np.ndarray, cfg: DiffCutConfig) -> dict[str, Any]:
        """``miou, tp, fp, fn, n_pixels`` of grid ``labels`` made into pixel labels as ``cfg`` says."""
        from . import segmentation as core
        from .metrics import hungarian_miou

        key = (labels.shape, labels.tobytes(), cfg.mode, tuple(getattr(cfg, f) for f in LABEL_FIELDS))
        if key not in self._memo:
            pred = core.pixel_labels(
                labels, self.features, self.gt.shape, cfg, region=self.image, x=self.image
            )
            res = hungarian_miou(pred, self.gt, num_classes=self.num_classes, ignore_index=self.ignore_index)
            self._memo[key] = {"miou": float(res.miou), "tp": res.tp.tolist(), "fp": res.fp.tolist(),
                               "fn": res.fn.tolist(), "n_pixels": int(res.n_pixels)}  # fmt: skip
        return dict(self._memo[key])


def _score_rows(
    cache: Any,
    gts: list[np.ndarray | None] | None,
    settings: dict[Any, tuple[DiffCutConfig, list[list[Any]]]],
    layers: Sequence[str],
    timesteps: Sequence[int],
    images: Sequence[int] | None,
    *,
    num_classes: int | None,
    ignore_index: int,
    keep_labels: bool,
) -> list[dict[str, Any]]:
    """One row per (layer, timestep, image, setting, tau); ``settings`` maps a name (the ``method``
    column, ``None`` for none) to a config and its tau groups. Every setting of an image shares that
    image's cuts and scores (:class:`_ImageCuts`, :class:`_ImageScores`); the images are cut side by
    side (:func:`_each_image`), the rows kept in this order."""
    from functools import partial

    jobs = []
    for layer in layers:
        for t in timesteps:
            batch = _batch_features(cache, layer, t)
            if batch is None:
                continue
            idx = list(images) if images is not None else list(range(batch.shape[0]))
            jobs += [(layer, t, i, batch[i]) for i in idx]

    def image_rows(job: tuple[str, int, int, torch.Tensor]) -> list[dict[str, Any]]:
        layer, t, i, f = job
        scorer = None
        if gts is not None and i < len(gts) and gts[i] is not None:
            img = None if cache.images is None else cache.images[i]
            scorer = _ImageScores(f, gts[i], img, int(num_classes), ignore_index)
        base = {"layer": layer, "short": short_layer_name(layer), "stage": layer_stage(layer),
                "resolution": f"{f.shape[1]}x{f.shape[2]}", "channels": int(f.shape[0]),
                "timestep": int(t), "image": int(i)}  # fmt: skip
        cuts = _ImageCuts(f, partial(_attention, cache, layer, t, i))
        return _image_rows(base, cuts, scorer, settings, keep_labels)

    nodes = max((f.shape[1] * f.shape[2] for *_, f in jobs), default=0)
    return [row for rows in _each_image(image_rows, jobs, nodes) for row in rows]


def _image_rows(base: dict[str, Any], cuts: _ImageCuts, scorer: _ImageScores | None,
                settings: dict[Any, tuple[DiffCutConfig, list[list[Any]]]], keep_labels: bool) -> list[dict[str, Any]]:  # fmt: skip
    """The rows of one image: ``base`` (where it comes from) with each setting's and tau's cut and score."""
    from . import segmentation as core
    from .options import AUTO

    rows = []
    for name, (cfg, groups) in settings.items():
        for group in groups:
            trees, seconds = cuts.trees(cfg, group)
            for tau in group:
                labels = core.grid_labels(trees[tau])
                row = {**base, "tau": float("nan") if tau == AUTO else float(tau),
                       "n_segments": int(labels.max()) + 1, "miou": np.nan, "seconds": seconds}  # fmt: skip
                if name is not None:
                    row["method"] = name
                if scorer is not None:
                    row.update(scorer.score(labels, cfg))
                if keep_labels:
                    row["labels"] = labels
                    row["features"] = cuts.features.numpy()
                rows.append(row)
    return rows


def _side_by_side(threads: int, jobs: int, nodes: int) -> int:
    """How many images to cut at once: the process's threads, as many as the jobs, and as many cuts of
    ``nodes`` nodes as :data:`SIDE_BY_SIDE_BYTES` holds (at least one)."""
    return max(1, min(threads, jobs, SIDE_BY_SIDE_BYTES // max(1, 24 * nodes**2)))


def _each_image(work: Callable[[Any], Any], jobs: list[Any], nodes: int) -> list[Any]:
    """``work`` of every job, in order, one job per thread on the process's threads (at most
    :func:`_side_by_side` at once, for graphs of ``nodes`` nodes).

    A cut is many small operations (sub-graphs, Lanczos, sweeps): split over threads inside each one, the
    threads mostly wait for each other (:mod:`diffcut_lab.threads`). Here each of the process's
    ``torch.get_num_threads()`` threads cuts whole images instead, on one torch and one BLAS thread
    (restored afterwards), so the machine runs as many threads as before, each on work of its own. Jobs
    run one at a time (one image, or graphs too large to cut side by side) are on one thread too: some
    operations (concept assignment's products) round differently on two threads, and the rows must not
    depend on how many images ran at once. An error (or an interrupt) cancels the jobs not yet started.
    """
    import torch

    from .threads import one_thread

    workers = _side_by_side(torch.get_num_threads(), len(jobs), nodes)
    with one_thread():  # one job at a time too: the rows must not depend on how many run side by side
        if workers <= 1:
            return [work(job) for job in jobs]
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="diffcut-layers")
        try:
            futures = [pool.submit(work, job) for job in jobs]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def sort_scores(df: pd.DataFrame, sort_by: str) -> pd.DataFrame:
    """:func:`layer_scores` rows in one of the :data:`SORT_KEYS` orders (layers in forward order within
    ties): ``"stage"`` (the UNet's forward order), ``"miou"`` (best mean first), ``"segments"`` (most
    first), ``"resolution"`` (coarsest first) or ``"name"``."""
    return _sort(df, sort_by)


def _sort(df: pd.DataFrame, sort_by: str) -> pd.DataFrame:
    if sort_by not in SORT_KEYS:
        raise ParameterError(f"sort_by={sort_by!r}; expected one of {SORT_KEYS}")
    if df.empty:
        return df
    order = {name: i for i, name in enumerate(sorted(df["layer"].unique(), key=forward_order))}
    df = df.assign(_forward=df["layer"].map(order))
    if sort_by == "stage":
        keys, asc = ["_forward", "timestep", "image", "tau"], [True, True, True, True]
    elif sort_by == "miou":
        mean = df.groupby("layer")["miou"].transform("mean")
        df = df.assign(_key=mean)
        keys, asc = ["_key", "_forward", "timestep", "image"], [False, True, True, True]
    elif sort_by == "segments":
        df = df.assign(_key=df.groupby("layer")["n_segments"].transform("mean"))
        keys, asc = ["_key", "_forward", "timestep", "image"], [False, True, True, True]
    elif sort_by == "resolution":
        px = df["resolution"].str.split("x").map(lambda p: int(p[0]) * int(p[1]))
        df = df.assign(_key=px)
        keys, asc = ["_key", "_forward", "timestep", "image"], [True, True, True, True]
    else:
        keys, asc = ["layer", "timestep", "image"], [True, True, True]
    present = [k in df.columns for k in keys]
    keys = [k for k, ok in zip(keys, present) if ok]
    asc = [a for a, ok in zip(asc, present) if ok]
    df = df.sort_values(keys, ascending=asc, kind="stable")
    return df.drop(columns=[c for c in ("_forward", "_key") if c in df.columns]).reset_index(drop=True)


def layer_ranking(scores: pd.DataFrame, *, select: Sequence[int], test: Sequence[int]) -> pd.DataFrame:
    """Each (layer, timestep) at its own best tau, chosen on some images and scored on others.

    With one fixed tau a layer's rank measures the tau as much as the layer (a layer whose cuts all cost
    more than tau is never cut). Here tau is chosen per layer and timestep as the one with the best
    pooled mIoU on the ``select`` images, and reported on the ``test`` images (no image serves both).

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`layer_scores` with ground truth and several ``taus``.
    select, test : sequence of int
        Batch indices of the images that choose tau and of the images that score it.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, timestep) in forward order: ``layer, short, stage, resolution, timestep, tau``
        (chosen), ``miou`` (pooled over the test images at that tau, the published metric),
        ``miou_min, miou_max`` (the test mIoU's range over every tau tried), ``n_segments`` (mean on the
        test images at that tau).
    """
    from .selection import tuned  # (scipy, through the metrics: when scores are pooled)

    if "tp" not in scores.columns:
        raise ParameterError("layer_ranking needs scores computed with ground truth (layer_scores(gt=...)).")
    best = tuned(scores, ["layer", "timestep"], select=list(select), test=list(test))
    best = best[best["stopping"] == "tau chosen"]
    first = scores.drop_duplicates("layer").set_index("layer")
    out = best.assign(
        short=best["layer"].map(first["short"]), stage=best["layer"].map(first["stage"]),
        resolution=best["layer"].map(first["resolution"]), timestep=best["timestep"].astype(int),
    )  # fmt: skip
    cols = [
        "layer",
        "short",
        "stage",
        "resolution",
        "timestep",
        "tau",
        "miou",
        "miou_min",
        "miou_max",
        "n_segments",
    ]
    return _sort(out[cols].reset_index(drop=True), "stage")


def method_comparison(
    cache: Any,
    gt: Any,
    methods: Any,
    *,
    select: Sequence[int],
    test: Sequence[int],
    taus: Sequence[float],
    num_classes: int,
    layer: str | None = None,
    timestep: int | None = None,
    ignore_index: int = 255,
    scores: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Partitioners and affinities on the same captured features, each at its best tau and automatically.

    Every method of an image shares that image's work: a graph and a recursion serve every tau of a
    setting (an attention walk's serves ``"auto"`` too), a K-way cut that starts from the recursive partition runs once per distinct partition, and
    rows that ``scores`` already holds are read, not cut again.

    Parameters
    ----------
    cache : FeatureCache
        Features of one layer (and, for ``affinity="attention"``, its ``"<layer>.probs"``).
    gt : array_like
        Ground truth, one map per image (as :func:`layer_scores`).
    methods : mapping of str to DiffCutConfig
        The methods by name, e.g. ``{"DiffCut": DiffCutConfig(), "walk k=2": DiffCutConfig(affinity=
        "attention", walk_steps=2), "K-way": DiffCutConfig(partition="kway")}``.
    select, test : sequence of int
        Images (batch indices) that choose tau, and images that score it (disjoint); only these are cut.
    taus : sequence of float
        The taus tried on ``select``; ``"auto"`` is always scored too.
    num_classes, ignore_index
        As :func:`layer_scores`.
    layer, timestep : optional
        Which captured map (default: the cache's only feature layer and timestep).
    scores : pandas.DataFrame, optional
        :func:`layer_scores` rows with ground truth (e.g. the layer ranking's, from the same cache): a
        method whose cut and label settings equal their ``attrs["config"]`` (same ``num_classes`` and
        ``ignore_index``) reads its rows of this layer and timestep from them; only the taus they lack
        (typically ``"auto"``) are cut.

    Returns
    -------
    pandas.DataFrame
        :func:`~diffcut_lab.selection.tuned` per method: ``method, stopping`` ("tau chosen" or
        "auto"), ``tau, miou`` (pooled over the test images, the published metric), ``miou_min,
        miou_max, n_segments, seconds`` (the cut, per image).
    """
    from .selection import tuned

    layers = [n for n in cache.layers if not n.endswith(".probs")] if layer is None else [layer]
    steps = list(cache.timesteps) if timestep is None else [timestep]
    if len(layers) != 1 or len(steps) != 1:
        raise ParameterError(f"pass layer= and timestep=: the cache holds {layers} at {steps}.")
    gts = _ground_truth(gt, num_classes, "method_comparison")
    wanted = [t for g in _tau_groups([*taus, "auto"]) for t in g]
    used = sorted({int(i) for i in (*select, *test)})
    frames, settings = [], {}
    for name, given in dict(methods).items():
        cfg = DiffCutConfig.build(given)
        known = _reusable(scores, cfg, layers[0], int(steps[0]), used, num_classes, ignore_index)
        have = [t for t in wanted if _covers(known, t, used)]
        if have:
            frames.append(known[known["tau"].map(lambda v, h=have: _tau_of(v) in h)].assign(method=name))
        missing = [t for t in wanted if t not in have]
        if missing:
            settings[name] = (cfg, _cut_groups(cfg, missing))
    rows = _score_rows(cache, gts, settings, layers, steps, used, num_classes=num_classes,
                       ignore_index=ignore_index, keep_labels=False)  # fmt: skip
    frames.append(pd.DataFrame(rows))
    table = tuned(pd.concat(frames, ignore_index=True), ["method"], select=list(select), test=list(test))
    order = {name: i for i, name in enumerate(dict(methods))}
    rank = {"method": order, "stopping": {"tau chosen": 0, "auto": 1}}
    return table.sort_values(
        ["method", "stopping"], key=lambda c: c.map(rank[c.name]), kind="stable"
    ).reset_index(drop=True)


def _tau_of(value: float) -> float | str:
    """A row's tau as :func:`_tau_groups` spells it (NaN is ``"auto"``)."""
    from .options import AUTO

    return AUTO if np.isnan(value) else float(value)


def _reusable(scores: pd.DataFrame | None, cfg: DiffCutConfig, layer: str, t: int, images: list[int],
              num_classes: int, ignore_index: int) -> pd.DataFrame | None:  # fmt: skip
    """The rows of ``scores`` that are this setting's on ``layer`` at ``t`` for ``images`` (``None`` when
    ``scores`` was made with other settings or another scoring)."""
    if scores is None or scores.empty or "tp" not in scores.columns:
        return None
    made = scores.attrs.get("config")
    if (
        made is None
        or scores.attrs.get("num_classes") != num_classes
        or scores.attrs.get("ignore_index") != ignore_index
    ):
        return None
    fields = (*CUT_FIELDS, *LABEL_FIELDS)
    if any(made.get(f) != v for f, v in cfg.to_dict().items() if f in fields and f != "tau"):
        return None
    rows = scores[(scores["layer"] == layer) & (scores["timestep"] == t) & scores["image"].isin(images)]
    keep = [c for c in rows.columns if c not in ("labels", "features")]
    return rows[keep]


def _covers(rows: pd.DataFrame | None, tau: float | str, images: list[int]) -> bool:
    """Whether ``rows`` hold ``tau`` for every one of ``images``."""
    if rows is None or rows.empty:
        return False
    at = rows[rows["tau"].map(_tau_of) == tau]
    return set(images) <= set(at["image"].astype(int))


def linear_cka(x: Any, y: Any) -> float:
    """Linear centred kernel alignment of two representations of the same ``n`` examples.

    ``x`` is ``(n, p)``, ``y`` is ``(n, q)``; columns are centred, then
    ``CKA = ||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F)`` (Kornblith et al., ICML 2019): 1 for
    representations equal up to rotation and isotropic scaling, near 0 for unrelated ones.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ParameterError(f"linear_cka needs (n, p) and (n, q) arrays; got {a.shape} and {b.shape}.")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    cross = np.linalg.norm(b.T @ a) ** 2
    norm = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norm) if norm > 0 else float("nan")


def layer_similarity(
    cache: Any, *, layers: Sequence[str] | None = None, timesteps: Sequence[int] | None = None
) -> pd.DataFrame:
    """Linear CKA between every pair of captured (layer, timestep) feature maps of a cache.

    The examples are the patches of every image of the batch. Maps of different resolutions are compared
    on the coarsest grid among them (area-averaged), so that rows are the same image regions.

    Returns
    -------
    pandas.DataFrame
        Square, symmetric, indexed and columned by ``"layer@timestep"`` (forward order, then timestep);
        1 on the diagonal.
    """
    import torch.nn.functional as F

    chosen, ts = _select(cache, layers, timesteps)
    chosen = sorted(chosen, key=forward_order)
    maps = {}
    for layer in chosen:
        for t in ts:
            x = cache[layer, t]
            if x.ndim == 4:  # (B, C, h, w); attention probabilities have no channels to compare
                maps[f"{layer}@{t}"] = x.detach().float().cpu()
    if not maps:
        raise ParameterError("layer_similarity needs (B, C, h, w) feature maps in the cache.")
    h = min(m.shape[2] for m in maps.values())
    w = min(m.shape[3] for m in maps.values())
    reps = {
        key: F.adaptive_avg_pool2d(m, (h, w)).permute(0, 2, 3, 1).reshape(-1, m.shape[1]).numpy()
        for key, m in maps.items()
    }
    keys = list(reps)
    return pd.DataFrame(_cka_matrix([reps[k] for k in keys]), index=keys, columns=keys)


def _cka_matrix(reps: list[np.ndarray]) -> np.ndarray:
    """:func:`linear_cka` of every pair of ``(n, p_i)`` representations from one product: the centred
    representations side by side, ``Z^T Z`` holds every ``x^T y`` block at once; 1 on the diagonal."""
    z = np.concatenate([np.asarray(r, dtype=np.float64) for r in reps], axis=1)
    z -= z.mean(axis=0)
    gram = z.T @ z
    edges = np.cumsum([0, *(np.shape(r)[1] for r in reps)])
    blocks = [slice(edges[i], edges[i + 1]) for i in range(len(reps))]
    norms = [np.linalg.norm(gram[b, b]) for b in blocks]
    out = np.eye(len(reps))
    for i in range(len(reps)):
        for j in range(i + 1, len(reps)):
            norm = norms[i] * norms[j]
            cross = np.linalg.norm(gram[blocks[j], blocks[i]]) ** 2
            out[i, j] = out[j, i] = float(cross / norm) if norm > 0 else float("nan")
    return out
