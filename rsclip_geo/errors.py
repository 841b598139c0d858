"""One error root for rsclip-geo, with narrow subclasses that also inherit builtins.

Front ends (CLI, QGIS plugin) catch :class:`RsclipError` and show its message;
the message always names the file, band or field that is wrong.
"""


class RsclipError(Exception):
    """Root of every error raised on purpose by rsclip-geo."""


class BundleError(RsclipError, ValueError):
    """A model bundle (model.json + ONNX files + tokenizer) is missing, broken or inconsistent."""


class TokenizerError(RsclipError, ValueError):
    """A tokenizer file is missing or of an unknown kind."""


class RasterInputError(RsclipError, ValueError):
    """An input raster cannot be used: not a raster, corrupt, too small, all nodata, bad band."""


class VectorInputError(RsclipError, ValueError):
    """An input vector layer (labels to audit) cannot be used: unreadable, empty, no such field, not polygons."""


class DatasetError(RsclipError, ValueError):
    """A dataset (image folder, caption file, count list, annotations) is missing or malformed."""


class IndexFileError(RsclipError, ValueError):
    """An embedding index file is not an rsclip-geo index, has an unknown format, or was built with another model."""


class LabelError(RsclipError, ValueError):
    """Labels given for zero-shot classification are empty, duplicated or malformed."""


class OptionError(RsclipError, ValueError):
    """An option is out of range, or conflicts with another option or with the input (a heatmap cell finer than
    the scene's pixels)."""


class OutputError(RsclipError, OSError):
    """An output cannot be written: exists without overwrite, folder missing, not writable."""


class DeviceError(RsclipError, RuntimeError):
    """The requested execution device (e.g. CUDA) is not available."""


class MissingDependencyError(RsclipError, ImportError):
    """An optional dependency (e.g. torch for export) is not installed."""


class DownloadError(RsclipError, ConnectionError):
    """A checkpoint could not be downloaded (offline or not found)."""
