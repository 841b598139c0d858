"""rsclip-geo: search and label satellite and aerial imagery with words.

A CLIP model (RemoteCLIP, GeoRSCLIP, OpenAI CLIP or our shipped default),
exported to ONNX, runs over GeoTIFF tiles; results are GIS data in the
scene's CRS. The inference path needs onnxruntime, numpy and a tokenizer,
never torch.
"""

from .audit import audit, audit_class_raster, read_audit_summary, write_audit  # the function shadows the submodule: rsclip_geo.audit(...)
from .bundle import ModelBundle, read_bundle
from .classify import RunSummary, tile_classify
from .count import count_objects
from .encoder import ClipModel, load_model
from .heatmap import Heatmap, write_heatmap
from .heatmap import heatmap  # noqa: E402  (the function shadows the submodule name on purpose: rsclip_geo.heatmap(...))
from .errors import (BundleError, DatasetError, DeviceError, DownloadError, IndexFileError, LabelError, MissingDependencyError, OutputError,
                     RasterInputError, RsclipError, TokenizerError, VectorInputError)
from .index import SceneIndex, build_index, load_or_build_index, read_index, write_index
from .prompts import DEFAULT_TEMPLATES, Label, read_labels_file
from .search import search  # noqa: E402  (the function shadows the submodule name on purpose: rsclip_geo.search(...))
from .scene import Scene
from .segment import Segmentation
from .segment import segment  # noqa: E402  (the function shadows the submodule name on purpose: rsclip_geo.segment(...))
from .tiling import TileSpec, plan_tiles

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_model", "ClipModel", "ModelBundle", "read_bundle",
    "tile_classify", "RunSummary",
    "search", "SceneIndex", "build_index", "load_or_build_index", "read_index", "write_index",
    "heatmap", "Heatmap", "write_heatmap", "count_objects", "segment", "Segmentation",
    "Scene", "TileSpec", "plan_tiles",
    "Label", "read_labels_file", "DEFAULT_TEMPLATES",
    "audit", "audit_class_raster", "write_audit", "read_audit_summary",
    "RsclipError", "BundleError", "TokenizerError", "RasterInputError", "LabelError", "OutputError", "DatasetError",
    "IndexFileError", "VectorInputError",
    "DeviceError", "MissingDependencyError", "DownloadError",
]
