"""From per-image rows to dataset-level scores per configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..metrics import MIoUResult
from .grid import CONFIG_COLUMNS
from .store import ROW_KEY

__all__ = ["pooled", "summarize", "tuned"]

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


def tuned(rows: pd.DataFrame, by: list[str], *, select: list, test: list) -> pd.DataFrame:
    """Each group of ``by`` at its own tau, chosen on some images and scored on others; ``tau="auto"``
    rows (NaN in the numeric ``tau`` column) scored on the same test images as they are.

    With one fixed tau a comparison measures the tau as much as the method (or layer). Here tau is chosen
    per group as the one with the best pooled mIoU on the ``select`` images (values of the ``image``
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
    overlap = set(select) & set(test)
    if overlap or not len(select) or not len(test):
        raise ParameterError(f"select and test must be non-empty and disjoint; both hold {sorted(overlap)}.")
    keys = [*by, "tau"]

    def score(g: pd.DataFrame) -> pd.Series:
        out = {"miou": pooled(g).miou, "n_segments": g["n_segments"].mean()}
        if "seconds" in g:
            out["seconds"] = g["seconds"].mean()
        return pd.Series(out)

    split = {
        name: rows[rows["image"].isin(list(ids))].groupby(keys, sort=False, dropna=False).apply(score).sort_index()
        for name, ids in (("select", select), ("test", test))
    }
    out = []
    for group, sel in split["select"].groupby(level=list(range(len(by))), sort=False, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        tst = split["test"].loc[group]
        tst = tst if isinstance(tst, pd.DataFrame) else tst.to_frame().T
        taus = sel.index.get_level_values("tau")
        numeric = sel[~np.isnan(taus.to_numpy(dtype=float))]
        base = dict(zip(by, group))
        finite = tst[~np.isnan(tst.index.to_numpy(dtype=float))]
        if len(numeric):
            tau = float(numeric["miou"].idxmax()[-1])
            row = tst.loc[tau]
            out.append({**base, "stopping": "tau chosen", "tau": tau, **row.to_dict(),
                        "miou_min": float(finite["miou"].min()), "miou_max": float(finite["miou"].max())})  # fmt: skip
        auto = tst[np.isnan(tst.index.to_numpy(dtype=float))]
        if len(auto):
            out.append({**base, "stopping": "auto", "tau": float("nan"), **auto.iloc[0].to_dict(),
                        "miou_min": float("nan"), "miou_max": float("nan")})  # fmt: skip
    cols = [*by, "stopping", "tau", "miou", "miou_min", "miou_max", "n_segments"]
    cols += ["seconds"] if "seconds" in rows else []
    return pd.DataFrame(out, columns=cols)
