"""A tiny SAM-format ONNX pair (image encoder + prompt decoder) built with torch, for tests of ``--refine``.

Same input/output names, ranks and coordinate conventions as segment-anything's ONNX export (decoder inputs
image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size; outputs masks,
iou_predictions, low_res_masks; masks upsampled like SamOnnxModel.mask_postprocessing), with a known answer:
the mask is the disk centred on the foreground point whose radius is half the box prompt's shorter side. So the
refined polygon of an object is the disk inscribed in its box, at its peak: coordinate transforms can be checked.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

SIZE = 64  # the encoder's input side (1024 in SAM); low-res masks are SIZE / 4


class TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 16, stride=16)

    def forward(self, image):
        return self.conv(image)


class TinyDecoder(torch.nn.Module):
    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        fg = (point_labels == 1).float().unsqueeze(-1)
        tl = (point_labels == 2).float().unsqueeze(-1)
        br = (point_labels == 3).float().unsqueeze(-1)
        centre = (point_coords * fg).sum(1) / fg.sum(1).clamp(min=1)  # [1, 2] (x, y) in the SIZE frame
        size = ((point_coords * br).sum(1) - (point_coords * tl).sum(1)).abs()
        radius = 0.5 * torch.minimum(size[:, 0], size[:, 1])
        low = SIZE // 4
        grid = (torch.arange(low, dtype=torch.float32) + 0.5) * (SIZE / low)
        gy, gx = torch.meshgrid(grid, grid, indexing="ij")
        d = torch.sqrt((gx - centre[:, 0]) ** 2 + (gy - centre[:, 1]) ** 2)
        logits = (radius - d).reshape(1, 1, low, low)
        # the other inputs take part (an exporter drops unused inputs), with no effect on the sign of the logits
        logits = logits + 1e-6 * torch.tanh(image_embeddings.mean()) + 1e-6 * has_mask_input * mask_input.mean()
        masks = F.interpolate(logits, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        scale = SIZE / torch.max(orig_im_size)
        pre = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
        masks = masks[..., : pre[0], : pre[1]]
        hw = orig_im_size.to(torch.int64)
        masks = F.interpolate(masks, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)
        iou = torch.ones(1, 1) * 0.9
        return masks, iou, logits


def build_tiny_sam(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyEncoder().eval(), (torch.zeros(1, 3, SIZE, SIZE),), str(folder / "tiny_encoder.onnx"),
                          input_names=["images"], output_names=["image_embeddings"], opset_version=17, dynamo=False)
        example = (torch.zeros(1, 8, SIZE // 16, SIZE // 16), torch.tensor([[[10.0, 10.0], [5.0, 5.0], [20.0, 20.0]]]),
                   torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 1, SIZE // 4, SIZE // 4), torch.zeros(1),
                   torch.tensor([40.0, 50.0]))
        torch.onnx.export(TinyDecoder().eval(), example, str(folder / "tiny_decoder.onnx"),
                          input_names=["image_embeddings", "point_coords", "point_labels", "mask_input",
                                       "has_mask_input", "orig_im_size"],
                          output_names=["masks", "iou_predictions", "low_res_masks"],
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                          opset_version=17, dynamo=False)
    return folder
