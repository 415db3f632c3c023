"""Class names and raw-id -> class-id tables of the six benchmarks (reference sections 5 and 7).

Each table is a lookup array ``lut`` of length 256 (raw PNG value -> class id, ``IGNORE_INDEX`` for
unscored values), applied with :func:`apply_lut`. The tables are written from the datasets' public
definitions (COCO category ids, the COCO-Stuff hierarchy used by PiCIE/STEGO for the 27 coarse classes,
Cityscapes labelIds), not copied from pickles.
"""

from __future__ import annotations

import numpy as np

from .base import IGNORE_INDEX

__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "COCO_OBJECT_CLASSES",
    "COCO_STUFF_COARSE_CLASSES",
    "COCO_STUFF_FINE_TO_COARSE",
    "CONTEXT59_CLASSES",
    "VOC_CLASSES",
    "apply_lut",
    "lut_from_pairs",
]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

CONTEXT59_CLASSES: tuple[str, ...] = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup",
    "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard",
    "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road",
    "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train",
    "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip

#: COCO's 80 object categories, in category-id order
COCO_OBJECT_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: the 91 COCO "thing" ids (1-based) that no annotation uses
_COCO_UNUSED_THING_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91})

#: COCO-Stuff-27 coarse classes: 12 thing supercategories then 15 stuff supercategories
COCO_STUFF_COARSE_CLASSES: tuple[str, ...] = (
    "electronic", "appliance", "food-things", "furniture-things", "indoor", "kitchen", "accessory",
    "animal", "outdoor", "person", "sports", "vehicle", "ceiling", "floor", "food-stuff",
    "furniture-stuff", "raw-material", "textile", "wall", "window", "building", "ground", "plant",
    "sky", "solid", "structural", "water",
)  # fmt: skip


def _coco_stuff_fine_to_coarse() -> np.ndarray:
    """Fine COCO-Stuff index (0..181, the stuffthingmaps PNG values) -> coarse class (0..26)."""
    table = np.full(182, IGNORE_INDEX, dtype=np.int64)
    # things (fine = COCO id - 1), by supercategory
    for lo, hi, coarse in (
        (0, 0, 9), (1, 8, 11), (9, 14, 8), (15, 24, 7), (25, 32, 6), (33, 42, 10), (43, 50, 5),
        (51, 60, 2), (61, 70, 3), (71, 76, 0), (77, 82, 1), (83, 90, 4),
    ):  # fmt: skip
        table[lo : hi + 1] = coarse
    # stuff (fine 91..181: banner .. wood), by supercategory
    stuff = (
        17, 17, 22, 20, 20, 22, 15, 25, 16, 13, 12, 12, 17, 17, 23, 15, 15, 17, 15, 21, 15, 25, 13, 13,
        13, 13, 13, 22, 26, 14, 14, 15, 22, 21, 21, 24, 20, 22, 15, 17, 16, 15, 22, 24, 21, 17, 25, 16,
        21, 17, 22, 16, 21, 21, 25, 21, 26, 21, 24, 20, 17, 14, 21, 26, 15, 23, 20, 21, 24, 15, 24, 22,
        25, 15, 20, 17, 17, 22, 14, 18, 18, 18, 18, 18, 18, 18, 26, 26, 19, 19, 24,
    )  # fmt: skip
    table[91:182] = stuff
    return table


#: (182,) fine COCO-Stuff index -> COCO-Stuff-27 coarse class
COCO_STUFF_FINE_TO_COARSE: np.ndarray = _coco_stuff_fine_to_coarse()

#: Cityscapes labelIds 7..33 (the 27 classes of the unsupervised-segmentation protocol)
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge",
    "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
    "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
)  # fmt: skip

#: ADE20K SceneParsing (ADEChallengeData2016) classes 1..150, in annotation order
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
    "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet",
    "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle",
    "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip


def lut_from_pairs(pairs: dict[int, int] | None = None, *, default: int = IGNORE_INDEX) -> np.ndarray:
    """A (256,) int64 lookup table: ``pairs`` raw -> class, everything else ``default``."""
    lut = np.full(256, default, dtype=np.int64)
    for raw, cls in (pairs or {}).items():
        lut[raw] = cls
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, *, where: str = "") -> np.ndarray:
    """Map raw label values through ``lut``; values outside the table become ``IGNORE_INDEX``."""
    raw = np.asarray(raw, dtype=np.int64)
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.int64)
    ok = (raw >= 0) & (raw < len(lut))
    out[ok] = lut[raw[ok]]
    return out


# ----------------------------------------------------------------------------------------------------
# per-dataset tables


def voc_raw_lut(quirks: str) -> np.ndarray:
    """VOC2012 ``SegmentationClass`` (0 bg, 1..20 objects, 255 void) -> 0..19 objects, 20 background.

    "paper": void (255) becomes background too, as the published loader does (gotcha 9).
    "fixed": void is ignored.
    """
    pairs = {k: k - 1 for k in range(1, 21)}
    pairs[0] = 20
    if quirks == "paper":
        pairs[255] = 20
    return lut_from_pairs(pairs)


def voc_d2_lut() -> np.ndarray:
    """``annotations_pascal20`` (0..19 objects, 255 background *and* void) -> 0..19, 20 background.

    That preparation already merged void into background, so both modes read it the same way.
    """
    pairs = {k: k for k in range(20)}
    pairs[255] = 20
    return lut_from_pairs(pairs)


def context_d2_lut() -> np.ndarray:
    """``annotations_ctx59`` (0..58 classes, 255 everything else) -> 0..58, 59 background."""
    pairs = {k: k for k in range(59)}
    pairs[255] = 59
    return lut_from_pairs(pairs)


def context_raw_lut() -> np.ndarray:
    """``SegmentationClassContext`` (0 background, 1..59 classes, 255 unlabelled) -> 0..58, 59 bg."""
    pairs = {k: k - 1 for k in range(1, 60)}
    pairs[0] = 59
    return lut_from_pairs(pairs)


def coco_object_lut(quirks: str) -> np.ndarray:
    """stuffthingmaps (0..181 fine, 255 unlabelled) -> 0..79 objects, 80 background (all stuff).

    "paper": unlabelled (255) is background too (the published mapping sends every id >= 91 to -1,
    then to background). "fixed": unlabelled is ignored.
    """
    used = [i for i in range(1, 91) if i not in _COCO_UNUSED_THING_IDS]
    assert len(used) == 80
    pairs = {coco_id - 1: k for k, coco_id in enumerate(used)}
    pairs.update({fine: 80 for fine in range(91, 182)})
    if quirks == "paper":
        pairs[255] = 80
    return lut_from_pairs(pairs)


def coco_stuff_lut() -> np.ndarray:
    """stuffthingmaps fine index -> COCO-Stuff-27 coarse class; 255 ignored."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[:182] = COCO_STUFF_FINE_TO_COARSE
    return lut


def cityscapes_lut() -> np.ndarray:
    """Cityscapes labelIds 7..33 -> 0..26; every other id is ignored."""
    return lut_from_pairs({k: k - 7 for k in range(7, 34)})


def ade20k_lut(quirks: str) -> np.ndarray:
    """ADEChallengeData2016 annotations (0 other, 1..150) -> 150 classes.

    "fixed": 1..150 -> 0..149, "other" (0) ignored (the standard ADE-150 protocol).
    "paper": identity on 0..149, so "other" is scored as class 0 and class 150 is never scored
    (gotcha 9, the published loader's behaviour).
    """
    if quirks == "paper":
        return lut_from_pairs({k: k for k in range(150)})
    return lut_from_pairs({k: k - 1 for k in range(1, 151)})
