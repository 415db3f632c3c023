"""Helpers shared by the tests of result rows (ablations, Dask)."""

from __future__ import annotations

import pandas as pd

from diffcut_lab.ablation.store import VOLATILE_COLUMNS


def stable(df: pd.DataFrame) -> pd.DataFrame:
    """The columns that must not depend on timing, caching or the executor."""
    out = df.drop(columns=list(VOLATILE_COLUMNS)).reset_index(drop=True)
    for c in ("tp", "fp", "fn"):
        out[c] = out[c].map(lambda v: tuple(int(x) for x in v))
    return out
