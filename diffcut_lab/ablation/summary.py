"""From per-image rows to dataset-level scores per configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..metrics import MIoUResult
from .grid import CONFIG_COLUMNS
from .store import ROW_KEY

__all__ = ["pooled", "summarize"]

#: columns a summary row is keyed by
SUMMARY_KEYS = ("dataset", *CONFIG_COLUMNS)


def pooled(rows: pd.DataFrame, *, what: str = "rows") -> MIoUResult:
    """Dataset-level scores of result rows: their TP, FP and FN summed over images (the published pooling)."""
    lengths = {len(v) for v in rows["tp"]}
    if len(lengths) != 1:
        raise ParameterError(f"{what} have different class counts {sorted(lengths)}; group by dataset")
    tp, fp, fn = (np.sum(np.stack(rows[c].map(np.asarray).to_list()), axis=0) for c in ("tp", "fp", "fn"))
    n_images = int(rows["image"].nunique()) if "image" in rows else len(rows)
    return MIoUResult.from_counts(tp, fp, fn, n_pixels=int(rows["n_pixels"].sum()), n_images=n_images)


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
