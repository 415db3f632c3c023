"""The choices DiffCut's settings accept, in one place that imports nothing heavy.

The library validates against them and the command line offers them (``argparse`` ``choices``), so a new
option is added here once.
"""

__all__ = ["METHODS", "MODES", "POLICIES", "REFINES", "TAU_MAX", "UPSAMPLES"]

METHODS = ("diffcut", "kmeans", "spectral", "diffseg")  # segmentation methods compared in ablations

MODES = ("fixed", "paper")  # recursive_ncut variants
REFINES = ("pamr", "median", "none")  # pixel-level refinement after upsampling
UPSAMPLES = ("concept", "nearest")  # grid-to-pixel upsampling
POLICIES = ("resize", "center_crop")  # how a non-square image meets the square UNet input
TAU_MAX = 2.0  # the NCut of a two-way cut lies in [0, 2]; tau must be in (0, TAU_MAX]
