"""Torch-free evaluation of any model bundle: zero-shot, retrieval, probes, counting.

Everything runs through the same runtime and preprocessing as tile-classify
(``rsclip_geo.load_model`` -> ``ClipModel``); the CLI (``rsclip-geo eval``) and
the training package both call these functions.
"""

from ..runtime.count_prompts import CountPrediction, CountPredictor, count_prompts
from .counting import CountingResult, CountMetrics, count_metrics, evaluate_counting, predict_count, predict_images
from .datasets import (CaptionSet, CountSet, DatasetError, ImageFolderDataset, load_rgb, read_captions,
                       read_classnames, read_counts, stratified_split)
from .embed import embed_images
from .probe import (FewShotResult, KnnResult, LinearProbeModel, ProbeReport, ProbeResult, evaluate_probe, few_shot,
                    fit_linear_probe, knn, linear_probe)
from .report import to_json
from .retrieval import evaluate_retrieval, retrieval_metrics
from ..runtime.prompts import read_templates_file
from .zero_shot import ZeroShotResult, evaluate_zero_shot, zero_shot_from_embeddings

__all__ = [
    "ImageFolderDataset", "CaptionSet", "CountSet", "DatasetError", "load_rgb", "read_captions", "read_classnames",
    "read_counts", "stratified_split", "embed_images",
    "evaluate_zero_shot", "zero_shot_from_embeddings", "ZeroShotResult", "read_templates_file",
    "evaluate_retrieval", "retrieval_metrics",
    "linear_probe", "fit_linear_probe", "LinearProbeModel", "knn", "few_shot", "evaluate_probe",
    "ProbeResult", "KnnResult", "FewShotResult", "ProbeReport",
    "evaluate_counting", "count_metrics", "count_prompts", "CountPredictor", "CountPrediction", "predict_count", "predict_images",
    "CountMetrics", "CountingResult",
    "to_json",
]
