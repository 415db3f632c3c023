"""The pocket model: a small pixel-space diffusion UNet that ships with the package (see MODEL_CARD.md).

``diffcut_lab.load_backbone("pocket")`` loads :data:`WEIGHTS_DIR`; ``python -m diffcut_lab.pocket.train``
retrains it. This package only defines the path at import time, so importing it stays cheap.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODEL_CARD", "WEIGHTS_DIR"]

#: The shipped weights: diffusers layout (unet/, scheduler/) + conditioning.safetensors + diffcut_lab.json.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The model card (architecture, data, training, quality, licence).
MODEL_CARD = Path(__file__).resolve().parent / "MODEL_CARD.md"
