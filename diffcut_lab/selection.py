"""Scores of many images pooled, and the one rule that chooses a configuration on some images and scores
it on others.

Both the ablation tables (:mod:`diffcut_lab.ablation.summary`) and the layer comparison
(:func:`~diffcut_lab.layer_comparison.layer_ranking`, :func:`~diffcut_lab.layer_comparison.method_comparison`)
read per-image rows with ``tp, fp, fn`` per class and ``n_pixels`` (what
:func:`~diffcut_lab.metrics.hungarian_miou` counts) and pool them as the published metric does. This module
sits beside :mod:`~diffcut_lab.metrics` and imports neither the ablation package nor its Parquet store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import ParameterError
from .metrics import MIoUResult

__all__ = ["ROW_KEY", "choose", "pooled", "tuned"]

#: what identifies a result row of an ablation: one result per (model, image, configuration)
ROW_KEY = ["model", "image", "config_id"]


def pooled(rows: pd.DataFrame, *, what: str = "rows") -> MIoUResult:
    """Dataset-level scores of result rows: their TP, FP and FN summed over images (the published pooling)."""
    lengths = {len(v) for v in rows["tp"]}
    if len(lengths) != 1:
        raise ParameterError(f"{what} have different class counts {sorted(lengths)}; group by dataset")
    tp, fp, fn = (np.sum(np.stack(rows[c].map(np.asarray).to_list()), axis=0) for c in ("tp", "fp", "fn"))
    n_images = int(rows["image"].nunique()) if "image" in rows else len(rows)
    return MIoUResult.from_counts(tp, fp, fn, n_pixels=int(rows["n_pixels"].sum()), n_images=n_images)


def _scores(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per configuration (``keys``): pooled ``miou`` (per-image rows) or the summary's, with the
    mean ``n_segments`` and ``seconds`` where the rows have them."""
    if "tp" not in rows.columns:  # summarize() rows: one per configuration already
        cols = [c for c in ("miou", "n_segments", "seconds") if c in rows.columns]
        return rows[[*keys, *cols]].reset_index(drop=True)
    if set(ROW_KEY) <= set(rows.columns):
        rows = rows.drop_duplicates(ROW_KEY, keep="first")
    records = []
    for key, g in rows.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rec = {**dict(zip(keys, key)), "miou": pooled(g, what=f"rows of {dict(zip(keys, key))}").miou}
        rec["n_segments"] = float(g["n_segments"].mean()) if "n_segments" in g else float("nan")
        if "seconds" in g:
            rec["seconds"] = float(g["seconds"].mean())
        records.append(rec)
    return pd.DataFrame.from_records(
        records, columns=[*keys, "miou", "n_segments", *(["seconds"] if "seconds" in rows else [])]
    )


def choose(
    rows: pd.DataFrame,
    by: list[str],
    over: list[str],
    *,
    select: list | None = None,
    test: list | None = None,
) -> pd.DataFrame:
    """The toolkit's one selection rule: per group of ``by``, the configuration (the values of ``over``)
    with the best pooled mIoU on the ``select`` images, reported on the ``test`` images.

    No image serves both choosing and scoring, unless neither ``select`` nor ``test`` is given: then every
    image does both, which gives the in-sample best (optimistic; the ``in_sample`` column says so, and
    the views' titles say it too). Ties go to the first configuration in sorted order.

    Parameters
    ----------
    rows : pandas.DataFrame
        Per-image rows with ``image, tp, fp, fn, n_pixels`` (:func:`~diffcut_lab.ablation.run_ablation`,
        :func:`~diffcut_lab.layer_comparison.layer_scores`), or
        :func:`~diffcut_lab.ablation.summarize` rows (in-sample only).
    by : list of str
        The groups (e.g. ``["layer", "timestep"]``: one cell of a heatmap each).
    over : list of str
        The settings chosen per group (e.g. ``["tau"]``, or every other configuration column).
    select, test : list, optional
        Values of the ``image`` column that choose and that score (disjoint, both non-empty).

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` keys, the chosen ``over`` values, ``miou`` (pooled over the test
        images), ``miou_min`` / ``miou_max`` (the test mIoU's range over every configuration of the
        group), ``n_segments`` (mean on the test images), ``seconds`` (when the rows have it),
        ``n_choices`` (configurations compared) and ``in_sample``.
    """
    by, over = list(by), list(over)
    in_sample = select is None and test is None
    if not in_sample:
        select, test = list(select or []), list(test or [])
        overlap = set(select) & set(test)
        if overlap or not select or not test:
            raise ParameterError(
                f"select and test must be non-empty and disjoint; both hold {sorted(overlap)}."
            )
        if "tp" not in rows.columns:
            raise ParameterError("choosing on some images and scoring on others needs per-image rows (tp, fp, fn), "
                                 "not summarize() output.")  # fmt: skip
    keys = [*by, *over]
    sel = _scores(rows if in_sample else rows[rows["image"].isin(select)], keys)
    tst = sel if in_sample else _scores(rows[rows["image"].isin(test)], keys)
    cols = [*keys, "miou", "miou_min", "miou_max", "n_segments", *(["seconds"] if "seconds" in tst else []),
            "n_choices", "in_sample"]  # fmt: skip
    if sel.empty:
        return pd.DataFrame(columns=cols)
    ranked = sel.assign(_rank=sel["miou"].fillna(-np.inf))
    if by:
        best = ranked.loc[ranked.groupby(by, dropna=False, sort=True)["_rank"].idxmax().to_numpy(), keys]
        spread = (
            tst.groupby(by, dropna=False, sort=True)["miou"].agg(miou_min="min", miou_max="max").reset_index()
        )
        counts = sel.groupby(by, dropna=False, sort=True).size().rename("n_choices").reset_index()
    else:
        best = ranked.loc[[ranked["_rank"].idxmax()], keys]
        spread = pd.DataFrame({"miou_min": [tst["miou"].min()], "miou_max": [tst["miou"].max()]})
        counts = pd.DataFrame({"n_choices": [len(sel)]})
    out = best.merge(tst, on=keys, how="left")
    out = out.merge(spread, on=by, how="left").merge(counts, on=by, how="left") if by else pd.concat(
        [out.reset_index(drop=True), spread, counts], axis=1)  # fmt: skip
    return out.assign(in_sample=in_sample)[cols].reset_index(drop=True)


def tuned(rows: pd.DataFrame, by: list[str], *, select: list, test: list) -> pd.DataFrame:
    """Each group of ``by`` at its own tau, chosen on some images and scored on others; ``tau="auto"``
    rows (NaN in the numeric ``tau`` column) scored on the same test images as they are.

    With one fixed tau a comparison measures the tau as much as the method (or layer). Here tau is chosen
    per group by :func:`choose` (the best pooled mIoU on the ``select`` images, values of the ``image``
    column), and reported on the ``test`` images; no image serves both.

    Returns
    -------
    pandas.DataFrame
        One row per group and stopping rule: the ``by`` keys, ``stopping`` (``"tau chosen"`` or
        ``"auto"``), ``tau`` (the chosen one; NaN for auto), ``miou`` (pooled over the test images, the
        published metric), ``miou_min`` / ``miou_max`` (the test mIoU's range over every tau tried),
        ``n_segments`` (mean on the test images) and ``seconds`` (mean per test image, when the rows have
        it).
    """
    by = list(by)
    numeric = rows[rows["tau"].notna()]
    automatic = rows[rows["tau"].isna()]
    parts = []
    if len(numeric):
        parts.append(choose(numeric, by, ["tau"], select=select, test=test).assign(stopping="tau chosen"))
    if len(automatic):
        auto = choose(automatic.drop(columns=["tau"]), by, [], select=select, test=test)
        parts.append(
            auto.assign(stopping="auto", tau=float("nan"), miou_min=float("nan"), miou_max=float("nan"))
        )
    cols = [*by, "stopping", "tau", "miou", "miou_min", "miou_max", "n_segments"]
    cols += ["seconds"] if "seconds" in rows else []
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    order = {"tau chosen": 0, "auto": 1}
    out = out.assign(_stop=out["stopping"].map(order))
    return out.sort_values([*by, "_stop"], kind="stable").reset_index(drop=True)[cols]
