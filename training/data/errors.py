"""Errors of the training data recipe: the core's DatasetError, plus a missing-image case."""

from rsclip_geo.errors import DatasetError


class MissingImageError(DatasetError, FileNotFoundError):
    """A dataset entry points to an image that does not exist; the message names the entry."""


__all__ = ["DatasetError", "MissingImageError"]
