"""The choices DiffCut's settings accept, in one place that imports nothing heavy.

The library validates against them and the command line offers them (``argparse`` ``choices``), so a new
option is added here once.
"""

__all__ = [
    "AFFINITIES",
    "AUTO",
    "AUTO_RULES",
    "AUTO_TAU",
    "BENCHMARKS",
    "EXECUTORS",
    "KINDS",
    "MATCHES",
    "METHODS",
    "MODES",
    "NOISE_DEVICES",
    "PAMR_GUIDES",
    "PARTITIONS",
    "POLICIES",
    "QUIRKS",
    "REFINES",
    "SCORED_DATASETS",
    "SOLVERS",
    "TAU_MAX",
    "UPSAMPLES",
]

METHODS = ("diffcut", "kmeans", "spectral", "diffseg")  # segmentation methods compared in ablations

MODES = ("fixed", "paper")  # recursive_ncut variants
# eigen solvers of recursive_ncut (torch32: paper mode only; torch64: fixed mode only)
SOLVERS = ("auto", "dense", "eigsh", "torch32", "torch64")
AFFINITIES = ("cosine", "attention")  # the graph that is cut: feature cosines, or attention random walks
PARTITIONS = ("recursive", "kway")  # recursive two-way cuts, or one K-way normalized cut
REFINES = ("pamr", "median", "none")  # pixel-level refinement after upsampling
UPSAMPLES = ("concept", "nearest")  # grid-to-pixel upsampling
POLICIES = ("resize", "center_crop")  # how a non-square image meets the square UNet input
NOISE_DEVICES = ("cpu", "model")  # where the noise added at the timestep is drawn
PAMR_GUIDES = ("image", "input")  # the image PAMR follows: the image itself, or the UNet input (published)
MATCHES = ("reference", "present")  # Hungarian matching: the published one (default), or present classes only
EXECUTORS = ("local", "processes", "dask")  # where ablation units run
BENCHMARKS = ("voc", "context", "coco-object", "coco-stuff", "cityscapes", "ade20k")  # on disk, need a root
SCORED_DATASETS = (*BENCHMARKS, "synthetic", "voc-photo")  # the datasets with labels (eval, ablations)
QUIRKS = ("fixed", "paper")  # benchmark label mappings: this toolkit's, or the published loader's
KINDS = ("attn1", "attn2", "block", "attentions", "resnet", "probs")  # hook-point kinds
TAU_MAX = 2.0  # the NCut of a two-way cut lies in [0, 2]; tau must be in (0, TAU_MAX]
AUTO = "auto"  # tau="auto": the recursion stops by an automatic rule
AUTO_RULES = ("dynamic", "stable")  # per-step threshold from the region's spectrum; the most stable tau
AUTO_TAU = 1.0  # automatic rules search below this NCut (a cut of NCut 1 is no better than a random split)
