"""The paper's benchmark protocol for one configuration (what ``diffcut-lab eval`` runs).

Same engine as the ablation runner (one configuration, every image): centre crop to
``(min(H, W) - 1)^2``, the model's input size, features at the DiffCut layer and t = 50, recursive NCut,
concept assignment to 128 x 128, two-stage background for VOC / Context / COCO-Object, optional PAMR,
per-image Hungarian matching with TP/FP/FN accumulated over the dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..datasets.base import SegDataset
from .cache import FeatureStore
from .engine import compute_unit
from .grid import AblationGrid

__all__ = ["PAPER_COLUMNS", "REPORTED", "EvalReport", "evaluate", "format_table"]

#: dataset name -> column title of the paper's Table 1
PAPER_COLUMNS: dict[str, str] = {
    "voc": "VOC",
    "context": "Context",
    "coco-object": "COCO-Object",
    "coco-stuff": "COCO-Stuff",
    "cityscapes": "Cityscapes",
    "ade20k": "ADE20K",
}

#: DiffCut's published mIoU (SSD-1B), as reported by secondary sources (reference section 5)
REPORTED: dict[str, float] = {
    "voc": 65.2,
    "context": 56.5,
    "coco-object": 34.1,
    "coco-stuff": 49.1,
    "cityscapes": 30.6,
    "ade20k": 44.3,
}


@dataclass(frozen=True)
class EvalReport:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    dataset, model : str
    config : dict
        The configuration evaluated (layer, timestep, alpha, tau, mode, refine, method, sizes, seed).
    result : MIoUResult
        Dataset-level scores (``.miou``, ``.iou``, ``.accuracy``, ``.tp`` ...).
    n_images : int
    seconds : float
        Wall time of the whole evaluation (reading, features, segmentation, scoring).
    rows : pandas.DataFrame
        One row per image (as the ablation runner's).
    notes : str
        What differs from the published protocol (from the dataset).
    device, dtype : str
    """

    dataset: str
    model: str
    config: dict[str, Any]
    result: Any
    n_images: int
    seconds: float
    rows: pd.DataFrame = field(repr=False)
    notes: str = ""
    device: str = ""
    dtype: str = ""

    @property
    def images_per_second(self) -> float:
        """Throughput over the whole evaluation."""
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no per-image rows)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "config": self.config,
            "miou": self.result.miou,
            "accuracy": self.result.accuracy,
            "iou": [float(v) for v in self.result.iou],
            "n_images": self.n_images,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "notes": self.notes,
            "device": self.device,
            "dtype": self.dtype,
        }


def evaluate(
    dataset: SegDataset,
    backbone: Any,
    *,
    layer: str = "diffcut",
    timestep: int = 50,
    alpha: float = 10.0,
    tau: float = 0.5,
    mode: str = "fixed",
    refine: str = "none",
    method: str = "diffcut",
    method_kwargs: dict[str, Any] | None = None,
    seed: int = 42,
    image_size: int | None = None,
    label_size: int = 128,
    cache_dir: str | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate one configuration on a dataset with the paper's protocol.

    Parameters
    ----------
    dataset : SegDataset
        From :func:`~diffcut_lab.datasets.load_dataset` (use ``limit=`` there for a quick run).
    backbone : Backbone
        From :func:`~diffcut_lab.backbones.load_backbone` (fp16 on a GPU by default).
    layer, timestep, alpha, tau, mode, refine, method, seed
        The configuration (paper: "diffcut", 50, 10, 0.5, refine "none" or "pamr").
    method_kwargs : dict, optional
        Extra arguments of a baseline method.
    image_size : int, optional
        Model input side; default the backbone's (1024 for SSD-1B).
    label_size : int
        Evaluation side (128 in the paper).
    cache_dir : str, optional
        Feature cache directory (reused by later runs and ablations).
    progress : bool
        tqdm.auto progress bar.

    Returns
    -------
    EvalReport
    """
    from ..metrics import MIoUResult

    grid = AblationGrid(
        dataset=dataset.info.name,
        models=(str(getattr(backbone, "name", "model")),),
        layers=(layer,),
        timesteps=(timestep,),
        alphas=(alpha,),
        taus=(tau,),
        refines=(refine,),
        methods=(method,),
        modes=(mode,),
        method_kwargs={method: method_kwargs} if method_kwargs else {},
        seed=seed,
        image_size=image_size,
        label_size=label_size,
    )
    configs = grid.configs()
    store = FeatureStore(cache_dir) if cache_dir else None
    iterator: Any = range(len(dataset))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"eval {dataset.info.name}", unit="img")
    frames = []
    t0 = time.perf_counter()
    for i in iterator:
        frames.append(compute_unit(backbone, grid, dataset[i], i, dataset.info, configs, store=store))
    seconds = time.perf_counter() - t0
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    n = dataset.info.num_classes
    if len(rows):
        import numpy as np

        tp, fp, fn = (np.sum(np.stack(rows[c].map(np.asarray).to_list()), axis=0) for c in ("tp", "fp", "fn"))
        result = MIoUResult.from_counts(tp, fp, fn, n_pixels=int(rows["n_pixels"].sum()), n_images=len(rows))
    else:
        result = MIoUResult.from_counts([0] * n, [0] * n, [0] * n)
    cfg = configs[0].to_dict()
    cfg["image_size"] = int(image_size or backbone.image_size)
    return EvalReport(
        dataset=dataset.info.name,
        model=str(getattr(backbone, "name", "")),
        config=cfg,
        result=result,
        n_images=len(rows),
        seconds=seconds,
        rows=rows,
        notes=dataset.info.notes,
        device=str(getattr(backbone, "device", "")),
        dtype=str(getattr(backbone, "dtype", "")).replace("torch.", ""),
    )


def _cell(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def format_table(reports: list[EvalReport], *, reported: bool = True) -> str:
    """A text table in the layout of the paper's Table 1 (mIoU in %, one column per benchmark).

    Datasets that are not benchmarks (synthetic, voc-photo) get their own column. A row with DiffCut's
    published numbers is added for comparison when ``reported`` is true.
    """
    columns = list(PAPER_COLUMNS)
    for r in reports:
        if r.dataset not in columns:
            columns.append(r.dataset)
    titles = [PAPER_COLUMNS.get(c, c) for c in columns]
    body: list[list[str]] = []
    if reported:
        body.append(["DiffCut (paper, reported)", *(_cell(REPORTED.get(c)) for c in columns), "", ""])
    by_label: dict[str, dict[str, EvalReport]] = {}
    for r in reports:
        c = r.config
        extra = f", tau={c['tau']:g}" if c["method"] == "diffcut" else ""
        label = f"{c['method']} ({r.model}{extra}{', ' + c['refine'] if c['refine'] != 'none' else ''})"
        by_label.setdefault(label, {})[r.dataset] = r
    for label, per in by_label.items():
        cells = [_cell(100 * per[c].result.miou) if c in per else "-" for c in columns]
        n = sum(p.n_images for p in per.values())
        secs = sum(p.seconds for p in per.values())
        body.append([label, *cells, str(n), f"{n / secs:.2f}" if secs > 0 else "-"])
    header = ["Method", *titles, "images", "images/s"]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(row) for row in body)])
