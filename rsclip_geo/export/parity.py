"""Does the ONNX bundle compute what the torch model computes? Measured, recorded, enforced.

Inputs are real where we have them: images given by the caller, else the PNGs
shipped in ``rsclip_geo/data/parity/``, else deterministic structured synthetic
images (gradients, checkerboards, stripes, noise); texts are the bundle's prompt
templates x the 30 AID scene classes plus edge cases (empty, one word, one longer
than the context). The parity dict says which inputs were used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BundleError

PARITY_DIR = Path(__file__).resolve().parents[1] / "data" / "parity"
DEFAULT_MIN_COSINE = 0.9999
_CHUNK = 16

# The 30 scene classes of AID (Xia et al. 2017), as prompts would name them.
RS_CLASS_NAMES = (
    "airport", "bare land", "baseball field", "beach", "bridge", "center", "church", "commercial area",
    "dense residential area", "desert", "farmland", "forest", "industrial area", "meadow",
    "medium residential area", "mountain", "park", "parking lot", "playground", "pond", "port",
    "railway station", "resort", "river", "school", "sparse residential area", "square", "stadium",
    "storage tanks", "viaduct",
)
EDGE_TEXTS = (
    "",
    "harbour",
    " ".join(["a very long description of farmland next to a river crossed by a bridge"] * 12),
)


# ---- inputs ------------------------------------------------------------------
def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read parity image ({exc})") from exc


def synthetic_images(n: int = 8, size: int = 96) -> list[np.ndarray]:
    """Deterministic structured RGB images: gradients, checkerboards, stripes, rings, blocks, noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    rng = np.random.default_rng(20240607)
    checker = lambda k: ((np.floor(x * k) + np.floor(y * k)) % 2).astype(np.float32)  # noqa: E731
    planes = [
        (x, y, 1 - x),
        (checker(8), 1 - checker(8), 0.5 * np.ones_like(x)),
        (0.5 + 0.5 * np.sin(40 * x), 0.5 + 0.5 * np.sin(25 * y), 0.5 + 0.5 * np.sin(30 * (x + y))),
        (np.hypot(x - 0.5, y - 0.5), 1 - np.hypot(x - 0.3, y - 0.6), 0.5 + 0.5 * np.cos(60 * np.hypot(x - .5, y - .5))),
        (checker(3), x * y, (x > 0.5).astype(np.float32)),
        tuple(rng.random((size, size), dtype=np.float32) for _ in range(3)),
        (0.2 + 0.6 * (y > 0.6), 0.4 + 0.3 * checker(16), 0.1 + 0.8 * (x < 0.3)),
        tuple(np.clip(0.5 + 0.25 * rng.standard_normal((size, size)).astype(np.float32) * c, 0, 1)
              for c in (0.5, 1.0, 2.0)),
    ]
    return [(np.stack(p, axis=-1) * 255).round().astype(np.uint8) for p in planes[:n]]


def parity_images(paths: Sequence[str | Path] | None = None) -> tuple[list[np.ndarray], dict]:
    """(HxWx3 uint8 images, description) from ``paths``, the packaged PNGs, or synthetic ones."""
    if paths:
        files = [Path(p) for p in paths]
        return [_read_rgb(p) for p in files], {"images": "given", "image_files": [p.name for p in files]}
    files = sorted(PARITY_DIR.glob("*.png")) if PARITY_DIR.is_dir() else []
    if files:
        return [_read_rgb(p) for p in files], {"images": "packaged rsclip_geo/data/parity",
                                               "image_files": [p.name for p in files]}
    images = synthetic_images()
    return images, {"images": f"synthetic ({len(images)} gradients/checkerboards/stripes/noise, 96x96)"}


def parity_texts(templates: Sequence[str]) -> tuple[list[str], dict]:
    texts = [t.format(c) for t in templates for c in RS_CLASS_NAMES] + list(EDGE_TEXTS)
    return texts, {"texts": f"{len(templates)} templates x {len(RS_CLASS_NAMES)} AID class names "
                            f"+ {len(EDGE_TEXTS)} edge cases (empty, one word, longer than the context)"}


# ---- running -----------------------------------------------------------------
def ort_session(path: Path, disabled_optimizers: Sequence[str] = ()):
    import onnxruntime as ort

    extra = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], **extra)


def ort_embed(session, input_name: str, batch: np.ndarray) -> np.ndarray:
    out = [session.run(["embedding"], {input_name: batch[i:i + _CHUNK]})[0] for i in range(0, len(batch), _CHUNK)]
    return np.concatenate(out).astype(np.float32)


def torch_embed(fn, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = [fn(torch.from_numpy(batch[i:i + _CHUNK])).float().numpy() for i in range(0, len(batch), _CHUNK)]
    return np.concatenate(out)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(-1)
    den = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    return num / den


def _batch_consistency(session, ids: np.ndarray, pad_id: int) -> float:
    """Shortest, a middle and the longest text run alone must embed as they do inside the batch."""
    lengths = (ids != pad_id).sum(-1)
    order = np.argsort(lengths, kind="stable")
    picks = sorted({int(order[0]), int(order[len(order) // 2]), int(order[-1])})
    batched = ort_embed(session, "input_ids", ids)
    alone = np.concatenate([ort_embed(session, "input_ids", ids[i:i + 1]) for i in picks])
    return float(cosine_rows(batched[picks], alone).min())


def trimmed_consistency(session, ids: np.ndarray, pad_id: int) -> float | None:
    """Each text fed only up to its last non-pad token must embed as at full length; None if the graph refuses."""
    used = ids != pad_id
    lengths = ids.shape[1] - np.argmax(used[:, ::-1], axis=1)
    full = ort_embed(session, "input_ids", ids)
    try:
        cut = np.concatenate([ort_embed(session, "input_ids", np.ascontiguousarray(ids[i:i + 1, :max(1, n)]))
                              for i, n in enumerate(lengths)])
    except Exception:  # a graph with a fixed sequence length (onnxruntime raises its own types)
        return None
    return float(cosine_rows(full, cut).min())


def check_parity(model, image_path: Path, text_path: Path, images: np.ndarray, ids: np.ndarray, pad_id: int,
                 min_cosine: float = DEFAULT_MIN_COSINE) -> tuple[dict, dict]:
    """Compare torch and onnxruntime (CPU); BundleError below ``min_cosine``. Returns (figures, onnx outputs)."""
    t_img = torch_embed(model.encode_image, images)
    t_txt = torch_embed(model.encode_text, ids)
    img_session, txt_session = ort_session(image_path), ort_session(text_path)
    o_img = ort_embed(img_session, "image", images)
    o_txt = ort_embed(txt_session, "input_ids", ids)
    cos_img, cos_txt = cosine_rows(t_img, o_img), cosine_rows(t_txt, o_txt)
    figures = {
        "image_cosine_min": float(cos_img.min()),
        "text_cosine_min": float(cos_txt.min()),
        "text_batch_consistency_min": _batch_consistency(txt_session, ids, pad_id),
        "text_trimmed_cosine_min": trimmed_consistency(txt_session, ids, pad_id),
        "image_max_abs_diff": float(np.abs(t_img - o_img).max()),
        "text_max_abs_diff": float(np.abs(t_txt - o_txt).max()),
        "n_images": int(len(images)),
        "n_texts": int(len(ids)),
        "min_cosine_required": float(min_cosine),
    }
    failed = [f"{k} = {figures[k]:.6f}" for k in ("image_cosine_min", "text_cosine_min", "text_batch_consistency_min")
              if not figures[k] >= min_cosine]
    if failed:
        raise BundleError(
            "ONNX export does not reproduce the torch model (onnxruntime CPU vs torch): " + ", ".join(failed)
            + f" (required >= {min_cosine}); the bundle was not written"
        )
    return figures, {"image": o_img, "text": o_txt}


def int8_figures(image_path: Path | None, text_path: Path, images: np.ndarray, ids: np.ndarray,
                 fp32: dict, disabled_optimizers: Sequence[str] = ()) -> dict:
    """int8 (or fp16) vs fp32 ONNX cosine (min and mean) for each converted encoder."""
    out: dict = {}
    pairs = [("text", text_path, "input_ids", ids)]
    if image_path is not None:
        pairs.insert(0, ("image", image_path, "image", images))
    for key, path, name, batch in pairs:
        cos = cosine_rows(fp32[key], ort_embed(ort_session(path, disabled_optimizers), name, batch))
        out[f"{key}_cosine_min"] = float(cos.min())
        out[f"{key}_cosine_mean"] = float(cos.mean())
    return out
