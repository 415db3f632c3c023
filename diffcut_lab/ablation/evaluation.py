"""The paper's benchmark protocol for one configuration (what ``diffcut-lab eval`` runs).

Same engine as the ablation runner (one configuration, every image): centre crop to
``(min(H, W) - 1)^2``, the model's input size, features, recursive NCut, upsampling to the label size
(128 x 128 by default), two-stage background for VOC / Context / COCO-Object, refinement, per-image
Hungarian matching (the published one by default) with TP/FP/FN accumulated over the dataset. The
settings are one :class:`~diffcut_lab.config.DiffCutConfig`; ``DiffCutConfig.paper()`` is the published
pipeline end to end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..config import PAPER_MASK_SIZE, DiffCutConfig
from ..datasets.base import SegDataset
from ..errors import ParameterError
from ..feature_cache import FeatureStore
from ..progress import Progress
from .engine import compute_unit
from .grid import GRID_OWNED, AblationGrid, tau_text
from .summary import pooled

__all__ = ["PAPER_COLUMNS", "REPORTED", "EvalReport", "evaluate", "format_table", "grid_for"]

#: dataset name -> column title of the paper's Table 1
PAPER_COLUMNS: dict[str, str] = {
    "voc": "VOC",
    "context": "Context",
    "coco-object": "COCO-Object",
    "coco-stuff": "COCO-Stuff",
    "cityscapes": "Cityscapes",
    "ade20k": "ADE20K",
}

#: DiffCut's published mIoU (SSD-1B), as reported by secondary sources (reference section 5), as a
#: fraction like every mIoU here (the paper prints x100: 65.2 for VOC)
REPORTED: dict[str, float] = {
    "voc": 0.652,
    "context": 0.565,
    "coco-object": 0.341,
    "coco-stuff": 0.491,
    "cityscapes": 0.306,
    "ade20k": 0.443,
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


def grid_for(
    dataset: str,
    model: str,
    config: DiffCutConfig,
    *,
    method: str = "diffcut",
    method_kwargs: dict[str, Any] | None = None,
    match: str = "reference",
) -> AblationGrid:
    """The one-point ablation grid of ``config`` on ``dataset`` (labels scored at ``config.mask_size``,
    128 x 128 when it is None, the published size)."""
    label = config.mask_size or (PAPER_MASK_SIZE, PAPER_MASK_SIZE)
    side = config.image_size
    if label[0] != label[1] or (side is not None and side[0] != side[1]):
        raise ParameterError(
            f"the evaluation protocol is square (centre crop): pass a square image_size and mask_size; got "
            f"{side} and {config.mask_size}."
        )
    settings = {k: v for k, v in config.changes().items() if k not in GRID_OWNED}
    kwargs = dict(method_kwargs or {})
    return AblationGrid(
        dataset=dataset, models=(model,), layers=(config.layer,), timesteps=(config.timestep,),
        alphas=(config.alpha,), taus=(config.tau,), refines=(config.refine,), methods=(method,),
        modes=(config.mode,), method_kwargs={method: kwargs} if kwargs else {}, seed=config.seed,
        image_size=None if side is None else side[0], label_size=label[0], settings=settings,
        match=match,
    )  # fmt: skip


def evaluate(
    dataset: SegDataset,
    backbone: Any,
    config: DiffCutConfig | None = None,
    *,
    method: str = "diffcut",
    method_kwargs: dict[str, Any] | None = None,
    match: str = "reference",
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
    config : DiffCutConfig, optional
        The settings (default ``DiffCutConfig()``; ``DiffCutConfig.paper()`` for the published pipeline).
        The geometry is always the evaluation's: the published centre crop, labels at ``mask_size``
        (128 when None).
    method : str
        Another segmenter on the same features (``"kmeans"``, ...); the DiffCut fields then do not apply.
    method_kwargs : dict, optional
        Extra arguments of that method.
    match : {"reference", "present"}
        Hungarian matching (:func:`~diffcut_lab.metrics.hungarian_miou`; the published one by default).
    cache_dir : str, optional
        Feature cache directory (reused by later runs and ablations).
    progress : bool
        A progress bar over images (:class:`~diffcut_lab.progress.Progress`).

    Returns
    -------
    EvalReport
    """
    from ..metrics import MIoUResult

    config = config or DiffCutConfig()
    grid = grid_for(dataset.info.name, str(getattr(backbone, "name", "model")), config, method=method,
                    method_kwargs=method_kwargs, match=match)  # fmt: skip
    configs = grid.configs()
    store = FeatureStore(cache_dir) if cache_dir else None
    frames = []
    t0 = time.perf_counter()
    with Progress(len(dataset), f"eval {dataset.info.name}", quiet=not progress) as bar:
        for i in range(len(dataset)):
            frames.append(compute_unit(backbone, grid, dataset[i], i, dataset.info, configs, store=store))
            bar.advance(str(frames[-1]["image"].iloc[0]) if len(frames[-1]) else "")
    seconds = time.perf_counter() - t0
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    n = dataset.info.num_classes
    if len(rows):
        result = pooled(rows)
    else:
        result = MIoUResult.from_counts([0] * n, [0] * n, [0] * n)
    cfg = configs[0].to_dict()
    cfg["image_size"] = int(grid.image_size or backbone.image_size)
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
    return "-" if value is None or value != value else f"{value:.3f}"


def format_table(reports: list[EvalReport], *, reported: bool = True) -> str:
    """A text table in the layout of the paper's Table 1, one column per benchmark; mIoU as a fraction (0-1)
    like every mIoU the toolkit prints (the paper prints it x100).

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
        extra = f", tau={tau_text(c['tau'])}" if c["method"] == "diffcut" else ""
        label = f"{c['method']} ({r.model}{extra}{', ' + c['refine'] if c['refine'] != 'none' else ''})"
        by_label.setdefault(label, {})[r.dataset] = r
    for label, per in by_label.items():
        cells = [_cell(per[c].result.miou) if c in per else "-" for c in columns]
        n = sum(p.n_images for p in per.values())
        secs = sum(p.seconds for p in per.values())
        body.append([label, *cells, str(n), f"{n / secs:.2f}" if secs > 0 else "-"])
    header = ["Method (mIoU, 0-1)", *titles, "images", "images/s"]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(row) for row in body)])
