"""The torch-free CLIP runtime: onnxruntime sessions for a model bundle.

``load_model`` picks the execution provider (CUDA when asked for or available
*and* really active, CPU otherwise), checks that the ONNX files agree with
``model.json``, and batches images and texts through the two encoders.

On CUDA the image encoder runs through an IO binding (the numpy batch bound as
input, the embedding bound on the device and copied back once); on CPU it is a
plain ``session.run``. fp16 encoders (``models export --fp16``) are meant for
CUDA: on CPU they are loaded only if onnxruntime's CPU provider really runs
them (checked with one probe batch), else a DeviceError says what to use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .bundle import ModelBundle, bundle_fingerprint, read_bundle
from ..errors import BundleError, DeviceError, OptionError
from .paths import resolve_model_path
from .prompts import Label, check_templates, parse_labels
from .tokenizers import load_tokenizer
from .preprocess import Preprocessor

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# Graph optimisers left out for float16 encoders: onnxruntime's NchwcTransformer (an fp32-only CPU layout pass of
# ORT_ENABLE_ALL) crashed the process (segfault) on an fp16 ViT graph at session creation (onnxruntime 1.32).
FP16_DISABLED_OPTIMIZERS = ("NchwcTransformer",)
# Image rotation ensembles (aerial scenes have no 'up'): the mean embedding of the first N quarter turns of a tile,
# 1 = as read, 2 = as read and turned 90 degrees, 4 = all four turns.
ROTATIONS = (1, 2, 4)
MAX_BATCH_SIZE = 4096  # 4096 tiles of 224 px are 2.5 GB of float32 input; more only risks running out of memory
MAX_THREADS = 1024  # onnxruntime allocates per thread up front: 10^9 threads is std::bad_alloc, not speed


def check_rotations(rotations) -> int:
    """1, 2 or 4, as an int; anything else is an OptionError (a ValueError) that says what is allowed."""
    if isinstance(rotations, bool) or rotations not in ROTATIONS:
        raise OptionError(f"rotations must be one of {', '.join(map(str, ROTATIONS))} (quarter turns averaged per "
                          f"image), got {rotations!r}")
    return int(rotations)


def _check_finite(out: np.ndarray, path: Path, what: str) -> np.ndarray:
    """NaN/inf embeddings would score as 'unknown' everywhere without a word: a broken encoder is an error."""
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out.reshape(len(out), -1))).any(axis=1).sum()) if out.ndim else 1
        raise BundleError(f"{path}: the encoder returned NaN or infinite embeddings for {bad} of {len(out)} "
                          f"{what}; the model file is broken (or overflows at this precision)")
    return out


def pad_rows(batch: np.ndarray, rows: int) -> np.ndarray:
    """``batch`` with zero rows appended up to ``rows`` (a fixed input shape for the encoder)."""
    out = np.zeros((rows, *batch.shape[1:]), np.float32)
    out[:len(batch)] = batch
    return out


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit length; all-zero rows stay zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if device == "cuda":
        raise DeviceError(
            "device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}). Install the GPU build instead of the CPU one: "
            "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (they overwrite each other's files)."
        )
    return [_CPU]


def _fp16_on_cpu_error(path: Path, exc: Exception) -> DeviceError:
    return DeviceError(
        f"{path}: this float16 encoder does not run on onnxruntime's CPUExecutionProvider ({exc}). fp16 bundles "
        "are for CUDA: load it with device 'cuda' (onnxruntime-gpu), or use an fp32/int8 export of the same "
        "checkpoint on CPU (rsclip-geo models export without --fp16)"
    )


def open_session(path: Path, providers: list[str], threads: int | None, device: str, precision: str = "fp32"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle onnxruntime workers sleep instead of spinning: after a run they would otherwise busy-wait on the cores
    # our own work needs next (the tile reader thread, numpy's ranking of a large index). Measured on 2 cores:
    # search on a 1,000,000-tile index 130-140 -> 86 ms, encoder throughput unchanged.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    extra = {"disabled_optimizers": list(FP16_DISABLED_OPTIMIZERS)} if precision == "fp16" else {}
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers, **extra)
    except Exception as exc:  # onnxruntime raises its own (non-public) exception types
        if precision == "fp16" and providers[0] == _CPU:
            raise _fp16_on_cpu_error(path, exc) from exc
        raise BundleError(f"{path}: cannot load ONNX model ({exc})") from exc
    active = session.get_providers()
    if device == "cuda" and active[0] != _CUDA:
        raise DeviceError(
            f"device 'cuda' requested but onnxruntime fell back to {active[0]} for {path.name} "
            "(CUDA/cuDNN libraries missing or no GPU visible)"
        )
    return session


def _cuda_device_id(session) -> int:
    """The GPU onnxruntime's CUDA provider runs this session on (provider option 'device_id', default 0)."""
    try:
        return int(session.get_provider_options().get(_CUDA, {}).get("device_id", 0))
    except (AttributeError, TypeError, ValueError):
        return 0


def _check_io(session, path: Path, input_name: str, trailing: tuple[int, ...], field: str, embed_dim: int,
              input_type: str):
    """The ONNX graph must take ``input_name`` (of ``input_type``) with the trailing dims model.json promises,
    and give a float32 embedding (fp16 encoders too: they convert inside the graph)."""
    inputs = {i.name: i for i in session.get_inputs()}
    if input_name not in inputs:
        raise BundleError(f"{path}: expected an input named {input_name!r}, found {sorted(inputs)}")
    types = {"input " + repr(input_name): (inputs[input_name].type, input_type),
             "output": (session.get_outputs()[0].type, "tensor(float)")}
    for what, (got_type, want) in types.items():
        if got_type != want:
            raise BundleError(f"{path}: {what} is {got_type}, the bundle contract says {want} (fp16 encoders keep "
                              "float32 inputs and outputs)")
    shape = inputs[input_name].shape
    got = tuple(d if isinstance(d, int) else None for d in shape[1:])
    if len(got) != len(trailing) or any(g is not None and g != t for g, t in zip(got, trailing)):
        raise BundleError(
            f"{path}: input {input_name!r} has shape {shape}, but model.json field '{field}' implies [batch, "
            + ", ".join(map(str, trailing)) + "]"
        )
    outputs = session.get_outputs()
    dim = outputs[0].shape[-1]
    if isinstance(dim, int) and dim != embed_dim:
        raise BundleError(f"{path}: output dimension {dim} does not match model.json field 'embed_dim' = {embed_dim}")


class ClipModel:
    """A loaded bundle: encode images and texts into one normalised embedding space."""

    def __init__(self, bundle: ModelBundle, device: str = "auto", threads: int | None = None, batch_size: int = 32,
                 io_binding: bool | None = None, rotations: int = 1, fixed_batch: bool | None = None):
        """``io_binding``: run the image encoder through an onnxruntime IO binding; None (default) = on CUDA
        only. True on CPU gives the same embeddings as the plain path (bound to CPU memory) and is for tests.

        ``fixed_batch``: pad every image batch shorter than ``batch_size`` (a scene's last one) with zeros to
        ``batch_size`` rows and keep the real rows, so the encoder sees one input shape; None (default) = on
        CUDA only. There each new input shape costs a cuDNN algorithm search, measured on an H200 at 1.1 s
        (fp32) and 4.5 s (fp16) for this project's image encoder, against ~4 ms for the batch itself: a
        4096^2 scene (676 tiles = 21 x 32 + 4) paid it twice per scene, 0.07x / 0.015x the encoder's own rate.
        On CPU padding only adds work, and rows do not depend on their batch mates (tested).

        ``rotations``: 4 embeds every image turned 0/90/180/270 degrees and averages the four (normalised)
        embeddings, 2 the image as read and turned 90 degrees: 4x / 2x the image-encoding time for a more stable
        embedding (MODEL_CARD.md has the figures).
        """
        if isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise OptionError(f"batch_size must be 1-{MAX_BATCH_SIZE}, got {batch_size!r}")
        if threads is not None and (isinstance(threads, bool) or not 1 <= threads <= MAX_THREADS):
            raise OptionError(f"threads must be 1-{MAX_THREADS} (or None: onnxruntime's default), got {threads!r}")
        self.bundle = bundle
        self.batch_size = int(batch_size)
        self.rotations = check_rotations(rotations)
        self._fingerprint: str | None = None
        providers = _providers_for(device)
        precision = {enc: bundle.precision_of(enc) for enc in ("image", "text")}
        self._image = open_session(bundle.image_encoder_path, providers, threads, device, precision["image"])
        self._text = open_session(bundle.text_encoder_path, providers, threads, device, precision["text"])
        size = bundle.image.size
        _check_io(self._image, bundle.image_encoder_path, "image", (3, size, size), "image.size", bundle.embed_dim,
                  "tensor(float)")
        _check_io(self._text, bundle.text_encoder_path, "input_ids", (bundle.text.context_length,),
                  "text.context_length", bundle.embed_dim, "tensor(int64)")
        seq = self._text.get_inputs()[0].shape[1]
        if bundle.text.dynamic_length and isinstance(seq, int):
            raise BundleError(f"{bundle.text_encoder_path}: model.json says 'text.dynamic_length' but the graph's "
                              f"input_ids have a fixed length {seq}")
        self.provider = self._image.get_providers()[0]
        self.tokenizer = load_tokenizer(bundle.text, bundle.tokenizer_path)
        self.preprocess = Preprocessor(bundle.image)
        self.io_binding = self.provider == _CUDA if io_binding is None else bool(io_binding)
        self.fixed_batch = self.provider == _CUDA if fixed_batch is None else bool(fixed_batch)
        self._image_output = self._image.get_outputs()[0].name
        self._bind_device = ("cuda", _cuda_device_id(self._image)) if self.provider == _CUDA else ("cpu", 0)
        self._check_fp16_on_cpu(precision)
        self._dense = None
        self._session_args = (providers, threads, device)
        log.info("model %s on %s%s", bundle.name, self.provider, " (image encoder via IO binding)"
                 if self.io_binding else "")

    def _check_fp16_on_cpu(self, precision: dict[str, str]) -> None:
        """An fp16 encoder that landed on the CPU provider must really run there: one probe batch each."""
        probes = {"image": (self._image, self.bundle.image_encoder_path,
                            lambda: self.encode_batch(np.zeros((1, 3, self.bundle.image.size,
                                                                self.bundle.image.size), np.float32))),
                  "text": (self._text, self.bundle.text_encoder_path, lambda: self.encode_text(["a"]))}
        for enc, (session, path, probe) in probes.items():
            if precision[enc] != "fp16" or session.get_providers()[0] != _CPU:
                continue
            try:
                out = probe()
            except Exception as exc:  # onnxruntime's own exception types
                raise _fp16_on_cpu_error(path, exc) from exc
            if not np.isfinite(out).all():
                raise _fp16_on_cpu_error(path, ValueError("the probe batch gave non-finite embeddings"))
            log.warning("%s: float16 encoder on CPUExecutionProvider: it runs (onnxruntime computes in float32 "
                        "where it has no float16 CPU kernel) but expect no speed-up; fp16 bundles are meant for "
                        "CUDA", path.name)

    def __repr__(self) -> str:
        return (f"ClipModel({self.bundle.name!r}, provider={self.provider!r}, batch_size={self.batch_size}"
                + (f", rotations={self.rotations}" if self.rotations != 1 else "")
                + (", io_binding=True" if self.io_binding else "")
                + (", fixed_batch=True)" if self.fixed_batch else ")"))

    @property
    def weights_fingerprint(self) -> str:
        """bundle_fingerprint of the loaded bundle, hashed once on first use (it reads every ONNX byte: 60 ms
        for the default model, seconds for ViT-L), not on every index check or query."""
        if self._fingerprint is None:
            self._fingerprint = bundle_fingerprint(self.bundle)
        return self._fingerprint

    @property
    def fingerprint(self) -> str:
        """What made this model's image embeddings: the weights, plus the rotation ensemble when there is one
        (stored embeddings made with other rotations are other embeddings; see embeddings/key.py)."""
        return with_rotations(self.weights_fingerprint, self.rotations)

    @property
    def run_label(self) -> str:
        """The model as run summaries and evaluation reports name it: the bundle's name, plus the rotation
        ensemble when there is one (it changes every answer)."""
        return self.bundle.name + (f" (rotations {self.rotations})" if self.rotations != 1 else "")

    @property
    def logit_scale(self) -> float:
        return self.bundle.logit_scale

    @property
    def embed_dim(self) -> int:
        return self.bundle.embed_dim

    # ---- images -------------------------------------------------------------
    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        """One preprocessed float32 NCHW batch through the image encoder (no batching, no normalisation)."""
        return self._run_image(self._fixed_shape(batch))[:len(batch)]

    def _fixed_shape(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` padded with zero rows to ``batch_size`` when ``fixed_batch`` is on and it is shorter."""
        return pad_rows(batch, self.batch_size) if self.fixed_batch and 0 < len(batch) < self.batch_size else batch

    def _run_image(self, batch: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return _check_finite(self._image.run(None, {"image": batch})[0], self.bundle.image_encoder_path, "images")
        # input copied from numpy to the device by onnxruntime, output left there and copied back once
        binding = self._image.io_binding()
        binding.bind_cpu_input("image", np.ascontiguousarray(batch, dtype=np.float32))
        binding.bind_output(self._image_output, *self._bind_device)
        self._image.run_with_iobinding(binding)
        return _check_finite(binding.copy_outputs_to_cpu()[0], self.bundle.image_encoder_path, "images")

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray, normalize: bool = True) -> np.ndarray:
        """Uint8 HxWx3 RGB images (any size) or a preprocessed NCHW float32 batch -> [N, D].

        With ``rotations`` 2 or 4 the un-normalised result is the mean of the turns' normalised embeddings."""
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.dtype == np.float32:
            chunks = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
            out = [self._encode_turns(np.ascontiguousarray(c)) for c in chunks]
        else:
            images = list(images)
            out = [self._encode_turns(self.preprocess(images[i:i + self.batch_size]))
                   for i in range(0, len(images), self.batch_size)]
        emb = np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)
        return l2_normalize(emb) if normalize else emb

    def _encode_turns(self, batch: np.ndarray) -> np.ndarray:
        """One preprocessed batch, as read (rotations 1) or averaged over its first 2 or 4 quarter turns (the input
        is square by the bundle contract, so every turn has the encoder's input shape)."""
        return self._average_turns(batch, self.encode_batch)

    def _average_turns(self, batch: np.ndarray, run, back_axes: tuple[int, int] | None = None) -> np.ndarray:
        """``run(batch)`` for rotations 1; else the mean of ``run``'s normalised outputs for the batch turned k
        quarter turns (k < rotations), each turned back by -k on ``back_axes`` when its output is a grid."""
        if self.rotations == 1:
            return run(batch)
        turns = []
        for k in range(self.rotations):
            out = l2_normalize(run(np.ascontiguousarray(np.rot90(batch, k, axes=(2, 3)))))
            turns.append(out if back_axes is None else np.rot90(out, -k, axes=back_axes))
        return np.mean(turns, axis=0, dtype=np.float32)

    # ---- dense head -----------------------------------------------------------
    @property
    def has_dense(self) -> bool:
        """The bundle has a dense head (model.json 'dense', ``models export --dense``)."""
        return self.bundle.dense is not None

    def _dense_session(self):
        if self._dense is None:
            spec, path = self.bundle.dense, self.bundle.dense_encoder_path
            if spec is None:
                raise BundleError(f"model {self.bundle.name!r} has no dense head (no 'dense' in model.json); export "
                                  "one with `rsclip-geo models export ... --dense`")
            session = open_session(path, *self._session_args)
            inputs, outputs = session.get_inputs(), session.get_outputs()
            if [i.name for i in inputs] != ["image"] or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
                raise BundleError(f"{path}: the dense encoder must take one input 'image' [batch, 3, H, W], found "
                                  f"{[(i.name, i.shape) for i in inputs]}")
            if isinstance(inputs[0].shape[2], int) or isinstance(inputs[0].shape[3], int):
                raise BundleError(f"{path}: the dense encoder's height and width must be dynamic, found "
                                  f"{inputs[0].shape}")
            shape = outputs[0].shape
            if len(shape) != 4 or (isinstance(shape[-1], int) and shape[-1] != self.bundle.embed_dim):
                raise BundleError(f"{path}: output {outputs[0].shape} is not [batch, rows, cols, embed_dim = "
                                  f"{self.bundle.embed_dim}]")
            self._dense = session
        return self._dense

    def encode_dense(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed float32 [N, 3, H, W] batch (H, W multiples of ``bundle.dense.stride``) -> per-cell
        embeddings [N, H / stride, W / stride, D], not normalised (with ``rotations`` 2 or 4: the mean of the
        turns' normalised cells, each turned back onto the window's own grid)."""
        stride = self.bundle.dense.stride if self.bundle.dense else 1
        if batch.ndim != 4 or batch.shape[2] % stride or batch.shape[3] % stride:
            raise ValueError(f"dense input must be [N, 3, H, W] with H and W multiples of {stride}, got {batch.shape}")
        return self._average_turns(batch, self._run_dense, back_axes=(1, 2))

    def _run_dense(self, batch: np.ndarray) -> np.ndarray:
        stride = self.bundle.dense.stride if self.bundle.dense else 1
        feed = np.ascontiguousarray(self._fixed_shape(batch), dtype=np.float32)
        out = self._dense_session().run(None, {"image": feed})[0][:len(batch)]
        _check_finite(out, self.bundle.dense_encoder_path, "windows")
        want = (len(batch), batch.shape[2] // stride, batch.shape[3] // stride, self.embed_dim)
        if out.shape != want:
            raise BundleError(f"{self.bundle.dense_encoder_path}: gave {out.shape} for input {batch.shape}; "
                              f"model.json ('dense.stride' {stride}, 'embed_dim') implies {want}")
        return out

    # ---- text ---------------------------------------------------------------
    def encode_text(self, texts: Sequence[str] | str, normalize: bool = True) -> np.ndarray:
        """Texts -> [N, D]. Each text's embedding depends on that text alone (see ``text_runs_alone``)."""
        if isinstance(texts, str):
            texts = [texts]
        step = 1 if self.text_runs_alone else self.batch_size
        return self._encode_ids(self.tokenizer(list(texts)), step, normalize)

    @property
    def text_runs_alone(self) -> bool:
        """True for a dynamically quantised (int8) text encoder: it scales activations per batch, so texts
        batched together shift each other's embeddings (cosine ~0.99 to the same text run alone) and a label
        or query would embed differently depending on what else was encoded with it."""
        return self.bundle.precision_of("text") == "int8"

    def _encode_ids(self, ids: np.ndarray, step: int, normalize: bool = True) -> np.ndarray:
        out = [_check_finite(self._text.run(None, {"input_ids": self._trim(ids[i:i + step])})[0],
                             self.bundle.text_encoder_path, "texts") for i in range(0, len(ids), step)]
        emb = np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)
        return l2_normalize(emb) if normalize else emb

    def _trim(self, ids: np.ndarray) -> np.ndarray:
        """Drop the all-padding columns at the end when the graph allows it (same embedding, less work)."""
        if not self.bundle.text.dynamic_length or ids.size == 0:
            return ids
        used = ids != self.bundle.text.pad_id
        length = int((ids.shape[1] - np.argmax(used[:, ::-1], axis=1))[used.any(axis=1)].max(initial=1))
        return np.ascontiguousarray(ids[:, :length])

    def class_embeddings(self, labels: Sequence[Label | str] | str, templates: Sequence[str] | None = None) -> np.ndarray:
        """Prompt-ensemble embedding per label: mean of its normalised prompt embeddings, renormalised."""
        labels = parse_labels(labels)
        templates = check_templates(templates) if templates is not None else self.bundle.templates
        prompts = [list(label.texts(templates)) for label in labels]
        if self.text_runs_alone:  # one run per label: its embedding depends on its own prompts only
            means = [self._encode_ids(self.tokenizer(p), len(p)).mean(axis=0) for p in prompts]
        else:
            emb = self.encode_text([text for p in prompts for text in p])
            bounds = np.cumsum([0] + [len(p) for p in prompts])
            means = [emb[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]
        return l2_normalize(np.stack(means))

    def probabilities(self, image_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
        """Softmax over classes of logit_scale * cosine similarity."""
        logits = self.logit_scale * image_emb @ class_emb.T
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def with_rotations(weights_fingerprint: str, rotations: int) -> str:
    """The embedding fingerprint: the weights' own for rotations 1 (so indexes built before rotation ensembles
    existed stay valid), '<weights>+rot2' / '+rot4' for 2 / 4. ``split_rotations`` reads it back."""
    return weights_fingerprint if rotations == 1 else f"{weights_fingerprint}+rot{rotations}"


def split_rotations(fingerprint: str) -> tuple[str, int]:
    """(weights fingerprint, rotations) of an embedding fingerprint made by ``with_rotations``."""
    weights, _, turns = str(fingerprint).partition("+rot")
    return weights, int(turns) if turns.isdigit() else 1


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "auto",
               threads: int | None = None, batch_size: int = 32, io_binding: bool | None = None,
               rotations: int = 1, fixed_batch: bool | None = None) -> ClipModel:
    """Load a bundle: None/'default' (shipped), a pulled checkpoint name, or a bundle folder."""
    bundle = read_bundle(resolve_model_path(name_or_path))
    return ClipModel(bundle, device=device, threads=threads, batch_size=batch_size, io_binding=io_binding,
                     rotations=rotations, fixed_batch=fixed_batch)
