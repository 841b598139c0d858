"""Optional refinement of dense-map objects with SAM or MobileSAM, exported to ONNX by the user (RSRefSeg 2 idea:
CLIP localises, SAM delineates).

A SAM folder holds two ONNX files:

- the image encoder (a file whose name contains ``encoder``, e.g. ``mobile_sam_encoder.onnx``): one float32 input
  [1, 3, S, S] (S = 1024 for SAM/MobileSAM): RGB resized so that its longer side is S, normalised with SAM's pixel
  mean/std (0-255 scale: mean 123.675, 116.28, 103.53; std 58.395, 57.12, 57.375), zero-padded at the bottom/right;
  one output [1, C, S/16, S/16] (the image embeddings);
- the prompt decoder (a name containing ``decoder``) in the format of segment-anything's
  ``scripts/export_onnx_model.py``: inputs ``image_embeddings``, ``point_coords`` [1, N, 2] (x, y in the resized
  S-frame), ``point_labels`` [1, N] (1 foreground, 2/3 box corners, -1 padding), ``mask_input``
  [1, 1, S/4, S/4], ``has_mask_input`` [1], ``orig_im_size`` [2] (h, w); outputs ``masks`` [1, K, h, w] (logits),
  ``iou_predictions`` [1, K], ``low_res_masks``.

An optional ``sam.json`` overrides ``{"encoder": file, "decoder": file, "mean": [...], "std": [...]}``.

Per object: a crop of the scene at full resolution around its box (the box plus a margin of half its size, at
least ``MIN_CROP`` pixels, clipped to the scene), one encoder run per crop (crops already inside an encoded crop
reuse its embeddings), and one decoder run with the object's peak as a foreground point and its box as a box
prompt. The best mask (highest predicted IoU), cut to its connected part at the peak, replaces the object;
an empty mask keeps the dense polygon.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.windows import Window

from ..errors import BundleError

log = logging.getLogger(__name__)

SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions")
MIN_CROP = 64  # scene pixels
MAX_PROMPTS = 500  # objects refined per scene; the rest keep their dense polygon (logged)


def _find(folder: Path, word: str, named: str | None) -> Path:
    if named:
        path = folder / named
        if not path.is_file():
            raise BundleError(f"{path}: missing (named by sam.json)")
        return path
    found = sorted(p for p in folder.glob("*.onnx") if word in p.name.lower())
    if len(found) != 1:
        raise BundleError(f"{folder}: expected one ONNX file with '{word}' in its name, found "
                          f"{[p.name for p in found] or 'none'}; or name it in sam.json")
    return found[0]


class SamRefiner:
    """A loaded SAM/MobileSAM ONNX pair (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        folder = Path(folder)
        if not folder.is_dir():
            raise BundleError(f"{folder}: SAM folder does not exist")
        cfg = {}
        if (folder / "sam.json").is_file():
            try:
                cfg = json.loads((folder / "sam.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise BundleError(f"{folder / 'sam.json'}: not valid JSON ({exc})") from exc
        self.encoder_path = _find(folder, "encoder", cfg.get("encoder"))
        self.decoder_path = _find(folder, "decoder", cfg.get("decoder"))
        self.mean = np.asarray(cfg.get("mean", SAM_MEAN), np.float32).reshape(3, 1, 1)
        self.std = np.asarray(cfg.get("std", SAM_STD), np.float32).reshape(3, 1, 1)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.encoder = ort.InferenceSession(str(self.encoder_path), options, providers=["CPUExecutionProvider"])
            self.decoder = ort.InferenceSession(str(self.decoder_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise BundleError(f"{folder}: cannot load the SAM ONNX files ({exc})") from exc
        self._check()
        self.cache: list[tuple[tuple[int, int, int, int], np.ndarray]] = []

    def _check(self) -> None:
        enc_in = self.encoder.get_inputs()
        if len(enc_in) != 1 or len(enc_in[0].shape) != 4 or enc_in[0].shape[1] != 3:
            raise BundleError(f"{self.encoder_path}: expected one input [1, 3, S, S] (SAM-normalised, padded), "
                              f"found {[(i.name, i.shape) for i in enc_in]}")
        size = enc_in[0].shape[2]
        self.size = int(size) if isinstance(size, int) else 1024
        self.encoder_input = enc_in[0].name
        names = [i.name for i in self.decoder.get_inputs()]
        missing = [n for n in DECODER_INPUTS if n not in names]
        out_names = [o.name for o in self.decoder.get_outputs()]
        missing += [n for n in DECODER_OUTPUTS if n not in out_names]
        if missing:
            raise BundleError(f"{self.decoder_path}: not a segment-anything ONNX decoder: missing {missing} (inputs "
                              f"{names}, outputs {out_names})")
        mask_shape = {i.name: i.shape for i in self.decoder.get_inputs()}["mask_input"]
        low = mask_shape[-1] if len(mask_shape) == 4 else None
        self.low_res = int(low) if isinstance(low, int) else self.size // 4

    # ---- one crop ------------------------------------------------------------------------------------------
    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 crop -> image embeddings (longer side resized to S, normalised, padded)."""
        from PIL import Image

        h, w = rgb.shape[:2]
        s = self.size / max(h, w)
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), np.float32).transpose(2, 0, 1)
        x = np.zeros((1, 3, self.size, self.size), np.float32)
        x[0, :, :nh, :nw] = (resized - self.mean) / self.std
        return self.encoder.run(None, {self.encoder_input: x})[0]

    def mask(self, embeddings: np.ndarray, crop_hw: tuple[int, int], point: tuple[float, float],
             box: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
        """(bool mask [h, w] of the crop, predicted IoU) for a foreground ``point`` (x, y) and ``box``
        (x0, y0, x1, y1), both in crop pixels."""
        h, w = crop_hw
        s = self.size / max(h, w)
        coords = np.array([[point, box[:2], box[2:]]], np.float32) * s
        feeds = {"image_embeddings": embeddings, "point_coords": coords,
                 "point_labels": np.array([[1, 2, 3]], np.float32),
                 "mask_input": np.zeros((1, 1, self.low_res, self.low_res), np.float32),
                 "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([h, w], np.float32)}
        masks, iou = self.decoder.run(list(DECODER_OUTPUTS), feeds)
        k = int(np.argmax(iou[0]))
        return masks[0, k] > 0.0, float(iou[0, k])

    def _embeddings_for(self, scene, window: tuple[int, int, int, int]):
        """(crop window, embeddings): an encoded crop holding ``window`` is reused, else ``window`` is encoded."""
        c0, r0, c1, r1 = window
        for (a0, b0, a1, b1), emb in self.cache:
            if a0 <= c0 and b0 <= r0 and a1 >= c1 and b1 >= r1 and (a1 - a0) <= 2 * max(c1 - c0, r1 - r0):
                return (a0, b0, a1, b1), emb
        with scene.gdal_env():
            rgb, _ = scene.read_rgb(Window(c0, r0, c1 - c0, r1 - r0))
        emb = self.embed(rgb)
        self.cache.append((window, emb))
        return window, emb

    # ---- objects -------------------------------------------------------------------------------------------
    def refine(self, scene, dmap, labels: np.ndarray, info: list[dict]) -> list[dict]:
        """Replace each object's geometry by SAM's mask where SAM finds one (``source`` 'sam', ``sam_iou``)."""
        from scipy import ndimage

        from .segment import vectorise

        g = dmap.grid
        boxes = ndimage.find_objects(labels)
        best = set(sorted(range(len(info)), key=lambda i: -info[i]["score"])[:MAX_PROMPTS])
        out = []
        for n, b in enumerate(info):
            sl = boxes[b["label"] - 1] if b["label"] - 1 < len(boxes) else None
            if sl is None or n not in best:
                out.append(b)
                continue
            # object box and peak in scene pixels (the output grid may be coarser than the scene)
            x0, x1 = sl[1].start * g.cell_x, sl[1].stop * g.cell_x
            y0, y1 = sl[0].start * g.cell_y, sl[0].stop * g.cell_y
            px, py = (b["peak"][1] + 0.5) * g.cell_x, (b["peak"][0] + 0.5) * g.cell_y
            margin = max(0.5 * max(x1 - x0, y1 - y0), MIN_CROP / 2)
            window = (max(0, int(x0 - margin)), max(0, int(y0 - margin)),
                      min(scene.width, int(np.ceil(x1 + margin))), min(scene.height, int(np.ceil(y1 + margin))))
            (c0, r0, c1, r1), emb = self._embeddings_for(scene, window)
            mask, iou = self.mask(emb, (r1 - r0, c1 - c0), (px - c0, py - r0), (x0 - c0, y0 - r0, x1 - c0, y1 - r0))
            parts, count = ndimage.label(mask)
            if count == 0:
                out.append(b)
                continue
            at = parts[min(int(py - r0), mask.shape[0] - 1), min(int(px - c0), mask.shape[1] - 1)]
            keep = parts == (at if at > 0 else 1 + int(np.argmax(ndimage.sum(mask, parts, range(1, count + 1)))))
            transform = scene.transform @ Affine.translation(c0, r0)
            pixel = min(abs(scene.transform.a), abs(scene.transform.e)) or 1.0
            geom = vectorise(keep.astype(np.int32), transform, 0.5 * pixel).get(1)
            if geom is None or geom.is_empty:
                out.append(b)
                continue
            out.append({**b, "geometry": geom, "source": "sam", "sam_iou": iou})
        if len(info) > MAX_PROMPTS:
            log.warning("SAM refined the %d best-scoring of %d objects; the rest keep their dense polygons",
                        MAX_PROMPTS, len(info))
        log.info("SAM: %d crops encoded for %d objects", len(self.cache), len(info))
        return out
