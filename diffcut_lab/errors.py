"""Exceptions raised by diffcut_lab.

Every error the toolkit raises on purpose derives from :class:`DiffCutLabError`, so callers can catch
them all at once. Messages say what was wrong, what was expected, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "DiffCutLabError",
    "FeatureError",
    "ImageInputError",
    "ModelLoadError",
    "ParameterError",
    "UnknownLayerError",
    "UnsupportedModelError",
]


class DiffCutLabError(Exception):
    """Base class of every error raised on purpose by diffcut_lab."""


class ParameterError(DiffCutLabError, ValueError):
    """A parameter is out of range or of the wrong kind (tau, alpha, timestep, grid, ...)."""


class ImageInputError(DiffCutLabError, ValueError):
    """An image cannot be used: missing file, unreadable format, wrong mode, shape or range."""


class UnknownLayerError(DiffCutLabError, LookupError):
    """A layer name or pattern matches no hook point; the message lists the closest valid names."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError does
        return str(self.args[0]) if self.args else ""


class ModelLoadError(DiffCutLabError, OSError):
    """Weights or a model directory could not be found or loaded."""


class UnsupportedModelError(DiffCutLabError, TypeError):
    """The model is not a UNet diffusion model the toolkit can read (e.g. a DiT, or no UNet)."""


class FeatureError(DiffCutLabError, ValueError):
    """Features are unusable: NaN or Inf values, wrong layout, or an empty grid."""
