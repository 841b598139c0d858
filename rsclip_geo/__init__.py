"""rsclip-geo: search and label satellite and aerial imagery with words.

A CLIP model (RemoteCLIP, GeoRSCLIP, OpenAI CLIP or our shipped default),
exported to ONNX, runs over GeoTIFF tiles; results are GIS data in the
scene's CRS. The inference path needs onnxruntime, numpy and a tokenizer,
never torch.
"""

from .tasks.audit import AuditResult, audit, audit_class_raster, read_audit_summary, write_audit
from .runtime.bundle import ModelBundle, read_bundle
from .tasks.classify import Classification, RunSummary, tile_classify
from .tasks.count import Counts, count_objects
from .runtime.encoder import ClipModel, load_model
from .tasks.heatmap import Heatmap, write_heatmap
from .tasks.heatmap import heatmap
from .errors import (BundleError, DatasetError, DeviceError, DownloadError, IndexFileError, LabelError,
                     MissingDependencyError, OptionError, OutputError, RasterInputError, RsclipError, TokenizerError,
                     VectorInputError)
from .embeddings.index import SceneIndex, build_index, load_or_build_index, read_index, write_index
from .runtime.prompts import DEFAULT_TEMPLATES, Label, read_labels_file
from .tasks.search import SearchHits, search
from .raster.scene import Scene
from .tasks.segment import Segmentation
from .tasks.segment import segment
from .raster.tiling import TileSpec, plan_tiles

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_model", "ClipModel", "ModelBundle", "read_bundle",
    "tile_classify", "Classification", "RunSummary",
    "search", "SearchHits", "SceneIndex", "build_index", "load_or_build_index", "read_index", "write_index",
    "heatmap", "Heatmap", "write_heatmap", "count_objects", "Counts", "segment", "Segmentation",
    "Scene", "TileSpec", "plan_tiles",
    "Label", "read_labels_file", "DEFAULT_TEMPLATES",
    "audit", "AuditResult", "audit_class_raster", "write_audit", "read_audit_summary",
    "RsclipError", "BundleError", "TokenizerError", "RasterInputError", "LabelError", "OutputError", "DatasetError",
    "IndexFileError", "VectorInputError", "OptionError",
    "DeviceError", "MissingDependencyError", "DownloadError",
]
