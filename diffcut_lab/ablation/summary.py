"""From per-image rows to dataset-level scores per configuration.

The pooling and the selection rule (:func:`pooled`, :func:`choose`, :func:`tuned`) live in
:mod:`diffcut_lab.selection`, beside the metrics, where the layer comparison reads them too; they are
re-exported here.
"""

from __future__ import annotations

import pandas as pd

from ..errors import ParameterError
from ..selection import ROW_KEY, choose, pooled, tuned
from .grid import CONFIG_COLUMNS

__all__ = ["choose", "pooled", "summarize", "tuned"]

#: columns a summary row is keyed by
SUMMARY_KEYS = ("dataset", *CONFIG_COLUMNS)


def summarize(df: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Dataset-level Hungarian mIoU per configuration (TP/FP/FN accumulated over images).

    Parameters
    ----------
    df : pandas.DataFrame
        Rows of :func:`~diffcut_lab.ablation.run_ablation` (one per image x configuration).
    by : list of str, optional
        Columns to group by; default every configuration column (one summary row per configuration).
        Pass fewer to pool configurations (e.g. ``["layer", "timestep"]``).

    Returns
    -------
    pandas.DataFrame
        One row per group: the keys, ``miou`` (``nanmean`` of per-class ``TP / (TP + FP + FN)``),
        ``accuracy`` (matched pixels / labelled pixels), ``n_images``, ``image_miou`` (mean of per-image
        mIoU), ``n_segments`` (mean), ``seconds`` (mean per image) and ``iou`` (per-class array), sorted by
        the keys.
    """
    if set(ROW_KEY) <= set(df.columns):  # one row per (model, image, configuration), even if read twice
        df = df.drop_duplicates(ROW_KEY, keep="first")
    keys = list(by) if by is not None else [k for k in SUMMARY_KEYS if k in df.columns]
    out_cols = [*keys, "miou", "accuracy", "n_images", "image_miou", "n_segments", "seconds", "iou"]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    records = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        res = pooled(g, what=f"rows of group {key}")
        records.append({
            **dict(zip(keys, key)), "miou": res.miou, "accuracy": res.accuracy, "n_images": res.n_images,
            "image_miou": float(g["miou_image"].mean()), "n_segments": float(g["n_segments"].mean()),
            "seconds": float(g["seconds"].mean()), "iou": res.iou,
        })  # fmt: skip
    return pd.DataFrame.from_records(records, columns=out_cols)


#: how :func:`cells` reduces the configurations of a cell
REDUCERS = ("max", "tuned", "mean")


def cells(
    rows: pd.DataFrame,
    keys: list[str],
    *,
    reduce: str = "max",
    select: list | None = None,
    test: list | None = None,
) -> pd.DataFrame:
    """The score of each cell of ``keys`` (a heatmap's, a curve's points) over the configurations it holds:
    what the ablation views draw.

    Parameters
    ----------
    rows : pandas.DataFrame
        Per-image rows of :func:`~diffcut_lab.ablation.run_ablation`, or :func:`summarize` rows.
    keys : list of str
        The cell's columns (e.g. ``["layer", "timestep"]``).
    reduce : {"max", "tuned", "mean"}
        ``"tuned"``: the configuration chosen on the ``select`` images, scored on the ``test`` images
        (:func:`choose`); ``"max"``: the same rule on every image at once (the in-sample best,
        optimistic); ``"mean"``: the mean over the cell's configurations of their pooled mIoU.
    select, test : list, optional
        Images (values of ``image``) that choose and that score, for ``"tuned"``.

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``keys``, the chosen configuration's other columns (``"max"``, ``"tuned"``),
        ``miou`` and ``n_choices`` (configurations in the cell); ``in_sample`` says whether the images
        that chose also scored.
    """
    if reduce not in REDUCERS:
        raise ParameterError(f"reduce must be one of {REDUCERS}, got {reduce!r}")
    keys = list(keys)
    over = [c for c in SUMMARY_KEYS if c in rows.columns and c not in keys and rows[c].notna().any()]
    if reduce == "mean":
        table = summarize(rows) if "tp" in rows.columns else rows
        g = table.groupby(keys, dropna=False, sort=True)["miou"]
        return (
            pd.concat([g.mean(), g.size().rename("n_choices")], axis=1).reset_index().assign(in_sample=True)
        )
    if reduce == "tuned":
        if select is None or test is None:
            raise ParameterError(
                "reduce='tuned' needs the images that choose (select=) and those that score (test=)."
            )
        return choose(rows, keys, over, select=select, test=test)
    if select is not None or test is not None:
        raise ParameterError(
            "reduce='max' chooses and scores on every image; pass reduce='tuned' with select/test."
        )
    return choose(rows, keys, over)
