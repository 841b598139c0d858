"""Errors of the training data recipe, rooted in rsclip_geo's RsclipError so front ends show them alike."""

from rsclip_geo.errors import RsclipError


class DatasetError(RsclipError, ValueError):
    """An annotation or caption file is malformed; the message names the file and the line/key/field."""


class MissingImageError(DatasetError, FileNotFoundError):
    """A dataset entry points to an image that does not exist; the message names the entry."""
