"""The model bundle: a folder that describes itself.

A bundle is ``model.json`` + ``image_encoder.onnx`` + ``text_encoder.onnx`` +
tokenizer file(s), optionally + ``dense_encoder.onnx`` (model.json's ``dense``).
``model.json`` is read, validated and written here and nowhere else, so a model
never meets the wrong preprocessing.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
IMAGE_ENCODER = "image_encoder.onnx"
TEXT_ENCODER = "text_encoder.onnx"

TOKENIZER_KINDS = ("clip_bpe", "hf_tokenizer_json")
MAX_CONTEXT_LENGTH = 4096  # token ids per text; CLIP uses 77, BERT-style towers 512
MAX_IMAGE_SIZE = 4096  # input side in pixels: CLIPs use 224-448; a crafted 10^6 would ask for terabytes a tile
MAX_EMBED_DIM = 65536
MAX_DENSE_WINDOW = 8192  # dense window side in pixels
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
# Numeric precision of an encoder file: fp32, dynamic int8 weights (CPU), or float16 with float32 inputs and
# outputs (meant for CUDA). A file named *.int8.onnx / *.fp16.onnx carries its precision in its name too.
PRECISIONS = ("fp32", "int8", "fp16")
ENCODERS = ("image", "text")
DENSE_ENCODER = "dense_encoder.onnx"
# How a dense head was made: "conv-projection" (timm conv towers: the projection head applied to every cell of the
# last feature map, before the average pooling; the mean of the cells is the image embedding) or "vit-maskclip"
# (open_clip ViTs: patch tokens through the final LayerNorm + projection, the last block's attention value-only).
DENSE_METHODS = ("conv-projection", "vit-maskclip")
# How the dense head's weights are stored: "fp32", or "fp16-stored" (float16 initializers + Cast-to-float32 nodes
# that onnxruntime folds at session start: half the file, the same float32 inputs, outputs and kernels; written by
# rsclip_geo.export.weight_storage). Bundles without the field have fp32 weights.
DENSE_WEIGHTS_FP16 = "fp16-stored"
DENSE_WEIGHTS = ("fp32", DENSE_WEIGHTS_FP16)


def precision_from_file_name(name: str) -> str:
    """'fp16' for x.fp16.onnx, 'int8' for x.int8.onnx, else 'fp32'."""
    for kind in ("int8", "fp16"):
        if name.endswith(f".{kind}.onnx"):
            return kind
    return "fp32"


@dataclass(frozen=True)
class ImageSpec:
    """How tiles are turned into the image encoder's input."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"


@dataclass(frozen=True)
class TextSpec:
    """How text is turned into the text encoder's input ids."""

    context_length: int
    tokenizer: str  # one of TOKENIZER_KINDS
    tokenizer_file: str  # relative to the bundle folder
    pad_id: int = 0
    # True when the text graph accepts shorter sequences and gives the same embedding for ids cut after the
    # last non-pad token (checked at export): the runtime then feeds only as many columns as a batch needs.
    dynamic_length: bool = False


@dataclass(frozen=True)
class DenseSpec:
    """The optional dense head: per-cell embeddings in the text space, from one pass over a large window.

    Graph contract: ``image`` [batch, 3, H, W] float32 (H, W dynamic, multiples of ``stride``; normalised like the
    image encoder's input) -> ``embedding`` [batch, H / stride, W / stride, embed_dim] float32, not normalised.
    """

    method: str  # one of DENSE_METHODS
    stride: int  # input pixels per output cell (32 for EfficientNet, the patch size for a ViT)
    window: int  # default window side in input pixels (a multiple of stride, >= image.size)
    file: str = DENSE_ENCODER
    weights: str = "fp32"  # one of DENSE_WEIGHTS; the graph contract is the same for both
    parity: dict[str, Any] = field(default_factory=dict)
    # The object threshold `segment --threshold auto` uses with this head (cosine units, templated query, no
    # negatives), picked on held-out training cells; None: Otsu on each scene's scores.
    threshold: float | None = None

    @property
    def cells(self) -> int:
        """Cells per side of one default window."""
        return self.window // self.stride


@dataclass(frozen=True)
class ModelBundle:
    """Everything ``model.json`` says about a model; ``root`` is the bundle folder."""

    name: str
    architecture: str
    embed_dim: int
    image: ImageSpec
    text: TextSpec
    logit_scale: float
    templates: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    activation: str = ""
    image_encoder: str = IMAGE_ENCODER
    text_encoder: str = TEXT_ENCODER
    parity: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    # {"image": "fp32"|"int8"|"fp16", "text": ...} as model.json declares it (older bundles have none: then the
    # file names say it, see ``precision_of``)
    precision: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    dense: DenseSpec | None = None
    # How the fp32 image encoder stores its weights: "fp32" or "fp16-stored" (as for the dense head: half the file,
    # the same float32 kernels once onnxruntime folds the casts); absent from model.json when fp32.
    image_weights: str = "fp32"
    root: Path | None = None

    def precision_of(self, encoder: str) -> str:
        """Precision of the 'image' or 'text' encoder: declared in model.json, else read from its file name."""
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        file = self.image_encoder if encoder == "image" else self.text_encoder
        return self.precision.get(encoder) or precision_from_file_name(file)

    # ---- paths -------------------------------------------------------------
    def path(self, relative: str) -> Path:
        if self.root is None:
            raise BundleError(f"bundle {self.name!r} has no folder; cannot resolve {relative!r}")
        return self.root / relative

    @property
    def image_encoder_path(self) -> Path:
        return self.path(self.image_encoder)

    @property
    def text_encoder_path(self) -> Path:
        return self.path(self.text_encoder)

    @property
    def tokenizer_path(self) -> Path:
        return self.path(self.text.tokenizer_file)

    @property
    def dense_encoder_path(self) -> Path | None:
        return self.path(self.dense.file) if self.dense is not None else None

    # ---- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        d["image"]["mean"] = list(self.image.mean)
        d["image"]["std"] = list(self.image.std)
        d["templates"] = list(self.templates)
        if not self.precision:
            d.pop("precision")  # bundles written before the field keep their exact model.json (and fingerprint)
        if self.dense is None:
            d.pop("dense")  # likewise for bundles without a dense head
        else:
            if self.dense.weights == "fp32":
                d["dense"].pop("weights")  # and for fp32 dense heads written before the field
            if self.dense.threshold is None:
                d["dense"].pop("threshold")  # and for heads without a calibrated threshold
        if self.image_weights == "fp32":
            d.pop("image_weights")  # and for image encoders with fp32 weights
        # format_version first, for humans reading the file
        return {"format_version": d.pop("format_version"), **d}

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``model.json`` into ``folder`` (atomically) and return its path."""
        folder = Path(folder)
        target = folder / MODEL_JSON
        tmp = folder / (MODEL_JSON + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target


def _require(d: dict, key: str, kind, where: str, file: Path):
    if key not in d:
        raise BundleError(f"{file}: missing field '{where}{key}'")
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BundleError(
            f"{file}: field '{where}{key}' must be {_KIND_NAMES.get(kind, kind.__name__)}, got "
            f"{_json_type(value)} ({value!r:.60})"
        )
    if kind is float and not math.isfinite(value):
        raise BundleError(f"{file}: field '{where}{key}' must be a finite number, got {value!r}")
    return value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "an object"}


def _json_type(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _optional(d: dict, key: str, kind, default, where: str, file: Path):
    """An optional field of ``kind`` (checked like a required one when present)."""
    return _require(d, key, kind, where, file) if key in d else default


def _bundle_file(value: str, field_name: str, file: Path) -> str:
    """A file name in model.json: a relative path inside the bundle folder (no absolute path, no '..')."""
    pure = Path(value)
    if not value or pure.is_absolute() or ".." in pure.parts or "\\" in value or value.startswith("~"):
        raise BundleError(f"{file}: field '{field_name}' must name a file inside the bundle folder, got {value!r}")
    return value


def _triple(d: dict, key: str, file: Path) -> tuple[float, float, float]:
    value = _require(d, key, list, "image.", file)
    if len(value) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in value):
        raise BundleError(f"{file}: field 'image.{key}' must be a list of 3 finite numbers, got {value!r}")
    if key == "std" and any(v <= 0 for v in value):
        raise BundleError(f"{file}: field 'image.std' must be positive, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _precision(data: dict, files: dict[str, str], file: Path) -> dict[str, str]:
    """The optional 'precision' object: known encoders and values, and no contradiction with the file names."""
    if "precision" not in data:
        return {}
    value = data["precision"]
    if not isinstance(value, dict):
        raise BundleError(f"{file}: field 'precision' must be an object like {{\"image\": \"fp32\", "
                          f"\"text\": \"int8\"}}, got {type(value).__name__}")
    out = {}
    for key, kind in value.items():
        if key not in ENCODERS:
            raise BundleError(f"{file}: field 'precision.{key}' is not an encoder; use {' or '.join(ENCODERS)}")
        if kind not in PRECISIONS:
            raise BundleError(f"{file}: field 'precision.{key}' must be one of {PRECISIONS}, got {kind!r}")
        named = precision_from_file_name(files[key])
        if named != "fp32" and named != kind:
            raise BundleError(f"{file}: field 'precision.{key}' says {kind} but field '{key}_encoder' names "
                              f"{files[key]!r} ({named})")
        out[key] = kind
    return out


def _dense(data: dict, image_size: int, file: Path) -> DenseSpec | None:
    """The optional 'dense' object (see DenseSpec)."""
    if "dense" not in data or data["dense"] is None:
        return None
    d = data["dense"]
    if not isinstance(d, dict):
        raise BundleError(f"{file}: field 'dense' must be an object (method, stride, window, file), "
                          f"got {type(d).__name__}")
    method = _require(d, "method", str, "dense.", file)
    if method not in DENSE_METHODS:
        raise BundleError(f"{file}: field 'dense.method' must be one of {DENSE_METHODS}, got {method!r}")
    stride = _require(d, "stride", int, "dense.", file)
    if stride < 1:
        raise BundleError(f"{file}: field 'dense.stride' must be >= 1 pixel, got {stride}")
    window = _require(d, "window", int, "dense.", file)
    if window < image_size or window % stride or window > MAX_DENSE_WINDOW:
        raise BundleError(f"{file}: field 'dense.window' must be a multiple of 'dense.stride' ({stride}), >= "
                          f"'image.size' ({image_size}) and <= {MAX_DENSE_WINDOW} pixels, got {window}")
    name = d.get("file", DENSE_ENCODER)
    if not isinstance(name, str) or not name.endswith(".onnx"):
        raise BundleError(f"{file}: field 'dense.file' must name an .onnx file, got {name!r}")
    _bundle_file(name, "dense.file", file)
    parity = d.get("parity", {})
    if not isinstance(parity, dict):
        raise BundleError(f"{file}: field 'dense.parity' must be an object, got {type(parity).__name__}")
    weights = _optional(d, "weights", str, "fp32", "dense.", file)
    if weights not in DENSE_WEIGHTS:
        raise BundleError(f"{file}: field 'dense.weights' must be one of {DENSE_WEIGHTS}, got {weights!r}")
    threshold = d.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not -1.0 <= float(threshold) <= 1.0):
        raise BundleError(f"{file}: field 'dense.threshold' must be a number in [-1, 1] (a cosine score), got "
                          f"{threshold!r}")
    return DenseSpec(method=method, stride=stride, window=window, file=name, parity=dict(parity), weights=weights,
                     threshold=None if threshold is None else float(threshold))


def parse_model_json(data: dict[str, Any], file: Path, root: Path | None = None) -> ModelBundle:
    """Validate a decoded ``model.json``; every error names ``file`` and the field."""
    if not isinstance(data, dict):
        raise BundleError(f"{file}: expected a JSON object at the top level")
    version = _require(data, "format_version", int, "", file)
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{file}: unknown 'format_version' {version}; this rsclip-geo reads version {FORMAT_VERSION}"
        )
    image_d = _require(data, "image", dict, "", file)
    size = _require(image_d, "size", int, "image.", file)
    if not 8 <= size <= MAX_IMAGE_SIZE:
        raise BundleError(f"{file}: field 'image.size' must be 8..{MAX_IMAGE_SIZE} pixels, got {size}")
    interpolation = _optional(image_d, "interpolation", str, "bicubic", "image.", file)
    if interpolation not in INTERPOLATIONS:
        raise BundleError(f"{file}: field 'image.interpolation' must be one of {INTERPOLATIONS}, got {interpolation!r}")
    image = ImageSpec(size=size, mean=_triple(image_d, "mean", file), std=_triple(image_d, "std", file),
                      interpolation=interpolation)

    text_d = _require(data, "text", dict, "", file)
    tok = _require(text_d, "tokenizer", str, "text.", file)
    if tok not in TOKENIZER_KINDS:
        raise BundleError(f"{file}: field 'text.tokenizer' must be one of {TOKENIZER_KINDS}, got {tok!r}")
    ctx = _require(text_d, "context_length", int, "text.", file)
    if not 2 <= ctx <= MAX_CONTEXT_LENGTH:
        raise BundleError(f"{file}: field 'text.context_length' must be 2..{MAX_CONTEXT_LENGTH} tokens, got {ctx}")
    pad_id = _optional(text_d, "pad_id", int, 0, "text.", file)
    if not 0 <= pad_id < 2**31:
        raise BundleError(f"{file}: field 'text.pad_id' must be a token id >= 0, got {pad_id}")
    text = TextSpec(context_length=ctx, tokenizer=tok,
                    tokenizer_file=_bundle_file(_require(text_d, "tokenizer_file", str, "text.", file),
                                                "text.tokenizer_file", file),
                    pad_id=pad_id, dynamic_length=_optional(text_d, "dynamic_length", bool, False, "text.", file))

    embed_dim = _require(data, "embed_dim", int, "", file)
    if not 1 <= embed_dim <= MAX_EMBED_DIM:
        raise BundleError(f"{file}: field 'embed_dim' must be 1..{MAX_EMBED_DIM}, got {embed_dim}")
    templates = _require(data, "templates", list, "", file)
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise BundleError(f"{file}: field 'templates' must be a non-empty list of strings containing '{{}}'")
    logit_scale = _require(data, "logit_scale", float, "", file)
    if not logit_scale > 0:
        raise BundleError(f"{file}: field 'logit_scale' must be positive, got {logit_scale}")

    image_file = _bundle_file(_optional(data, "image_encoder", str, IMAGE_ENCODER, "", file), "image_encoder", file)
    text_file = _bundle_file(_optional(data, "text_encoder", str, TEXT_ENCODER, "", file), "text_encoder", file)
    precision = _precision(data, {"image": image_file, "text": text_file}, file)
    image_weights = _optional(data, "image_weights", str, "fp32", "", file)
    if image_weights not in DENSE_WEIGHTS:
        raise BundleError(f"{file}: field 'image_weights' must be one of {DENSE_WEIGHTS}, got {image_weights!r}")
    if image_weights != "fp32" and precision.get("image", precision_from_file_name(image_file)) != "fp32":
        raise BundleError(f"{file}: field 'image_weights' {image_weights!r} needs an fp32 image encoder (float16 "
                          "storage of int8 or fp16 weights is not a thing)")

    return ModelBundle(
        name=_require(data, "name", str, "", file),
        architecture=_require(data, "architecture", str, "", file),
        embed_dim=embed_dim,
        image=image,
        text=text,
        logit_scale=logit_scale,
        templates=tuple(templates),
        source=dict(_optional(data, "source", dict, {}, "", file)),
        license=_optional(data, "license", str, "unknown", "", file),
        activation=_optional(data, "activation", str, "", "", file),
        image_encoder=image_file,
        text_encoder=text_file,
        parity=dict(_optional(data, "parity", dict, {}, "", file)),
        card=dict(_optional(data, "card", dict, {}, "", file)),
        precision=precision,
        format_version=version,
        dense=_dense(data, size, file),
        image_weights=image_weights,
        root=root,
    )


def read_bundle(folder: str | os.PathLike) -> ModelBundle:
    """Read and validate the bundle in ``folder``; check that every file it names exists."""
    root = Path(folder)
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle folder does not exist")
    file = root / MODEL_JSON
    if not file.is_file():
        raise BundleError(f"{file}: missing; a model bundle needs model.json, {IMAGE_ENCODER}, {TEXT_ENCODER}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{file}: not valid JSON ({exc})") from exc
    bundle = parse_model_json(data, file, root=root)
    real_root = os.path.realpath(root)
    for field_name, rel in (("image_encoder", bundle.image_encoder), ("text_encoder", bundle.text_encoder),
                            ("text.tokenizer_file", bundle.text.tokenizer_file),
                            *((("dense.file", bundle.dense.file),) if bundle.dense else ())):
        if not (root / rel).is_file():
            raise BundleError(f"{root / rel}: missing (named by field '{field_name}' in {file})")
        real = os.path.realpath(root / rel)
        if os.path.commonpath([real, real_root]) != real_root:  # a symbolic link out of the folder
            raise BundleError(f"{root / rel}: resolves to {real}, outside the bundle folder {root} (named by field "
                              f"'{field_name}' in {file}); a bundle's files must be inside it")
    return bundle


def bundle_fingerprint(bundle: ModelBundle) -> str:
    """SHA-256 over model.json's content fields and both ONNX files: identifies what produced an index."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps(bundle.to_dict(), sort_keys=True).encode())
    for path in (bundle.image_encoder_path, bundle.text_encoder_path):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
