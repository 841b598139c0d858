"""Box record and readers for detection annotations (DOTA text, GeoJSON, COCO JSON).

Every reader returns pixel-coordinate axis-aligned boxes so B2C can caption any source alike;
the oriented polygon is kept when the source has one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from .errors import DatasetError

Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """One object: class name, axis-aligned pixel box (x right, y down), optional polygon."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    polygon: tuple[Point, ...] | None = None
    difficult: bool = False

    @property
    def center(self) -> Point:
        return ((self.xmin + self.xmax) / 2.0, (self.ymin + self.ymax) / 2.0)

    @property
    def area(self) -> float:
        return max(0.0, self.xmax - self.xmin) * max(0.0, self.ymax - self.ymin)

    def clipped(self, x0: float, y0: float, x1: float, y1: float) -> "Box":
        """Box cut to the window, in window coordinates (origin at x0, y0); polygon shifted, not cut."""
        poly = None if self.polygon is None else tuple((x - x0, y - y0) for x, y in self.polygon)
        return replace(
            self,
            xmin=max(self.xmin, x0) - x0, ymin=max(self.ymin, y0) - y0,
            xmax=min(self.xmax, x1) - x0, ymax=min(self.ymax, y1) - y0,
            polygon=poly,
        )


def box_from_points(name: str, points, difficult: bool = False) -> Box:
    """Axis-aligned bounds of a polygon, keeping the polygon."""
    pts = tuple((float(x), float(y)) for x, y in points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return Box(name, min(xs), min(ys), max(xs), max(ys), polygon=pts, difficult=difficult)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of the axis-aligned boxes."""
    iw = min(a.xmax, b.xmax) - max(a.xmin, b.xmin)
    ih = min(a.ymax, b.ymax) - max(a.ymin, b.ymin)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.area + b.area - inter)


@dataclass(frozen=True)
class DotaLabels:
    """Parsed DOTA label file: boxes plus the header fields (gsd in metres/pixel or None)."""

    path: Path
    boxes: tuple[Box, ...]
    imagesource: str | None
    gsd: float | None


def read_dota(path: str | Path, include_difficult: bool = True) -> DotaLabels:
    """Read DOTA's `x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]` lines with optional headers."""
    path = Path(path)
    boxes, source, gsd = [], None, None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.lower().startswith("imagesource:"):
            source = line.split(":", 1)[1].strip()
            continue
        if line.lower().startswith("gsd:"):
            value = line.split(":", 1)[1].strip()
            try:
                gsd = None if value.lower() in ("", "none", "null") else float(value)
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: bad gsd value {value!r}") from None
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            raise DatasetError(f"{path}:{lineno}: expected 8 coordinates, a class and a difficult flag, got {line!r}")
        try:
            coords = [float(v) for v in parts[:8]]
            difficult = len(parts) == 10 and int(parts[9]) != 0
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric coordinate or difficult flag in {line!r}") from None
        if difficult and not include_difficult:
            continue
        boxes.append(box_from_points(parts[8], zip(coords[0::2], coords[1::2]), difficult))
    return DotaLabels(path, tuple(boxes), source, gsd)


def _rings(geometry: Mapping, where: str) -> list:
    kind = geometry.get("type") if geometry else None
    if kind == "Polygon":
        return [geometry["coordinates"][0]]
    if kind == "MultiPolygon":
        return [poly[0] for poly in geometry["coordinates"]]
    raise DatasetError(f"{where}: geometry type {kind!r} is not a Polygon or MultiPolygon")


def read_geojson_boxes(path: str | Path, class_property: str | None = "class", default_class: str | None = None,
                       transform=None) -> list[Box]:
    """GeoJSON features -> pixel boxes.

    Coordinates are pixels unless `transform` (a raster's affine pixel->map transform) is given,
    then they are map coordinates and are mapped through its inverse. The class comes from
    `class_property`, else `default_class`; a feature with neither is an error.
    """
    path = Path(path)
    try:
        features = json.loads(path.read_text(encoding="utf-8"))["features"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a GeoJSON FeatureCollection ({exc})") from None
    inv = ~transform if transform is not None else None
    boxes = []
    for i, feat in enumerate(features):
        where = f"{path}: features[{i}]"
        name = (feat.get("properties") or {}).get(class_property) if class_property else None
        name = name if name not in (None, "") else default_class
        if name is None:
            raise DatasetError(f"{where}: no {class_property!r} property and no default_class given")
        for ring in _rings(feat.get("geometry"), where):
            pts = [(x, y) for x, y, *_ in ring]
            if inv is not None:  # map -> pixel through the inverse affine (written out: no deprecated `*`)
                pts = [(inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f) for x, y in pts]
            boxes.append(box_from_points(str(name), pts))
    return boxes


def read_coco_boxes(path: str | Path) -> dict[str, list[Box]]:
    """COCO detection JSON -> {file_name: boxes}; images without annotations map to [].

    Crowd annotations are kept with difficult=True; a single-polygon segmentation is kept as polygon.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {c["id"]: c["name"] for c in data["categories"]}
        files = {im["id"]: im["file_name"] for im in data["images"]}
        anns = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a COCO detection file (missing {exc})") from None
    out: dict[str, list[Box]] = {name: [] for name in files.values()}
    for i, ann in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        if ann.get("image_id") not in files:
            raise DatasetError(f"{where}: image_id {ann.get('image_id')!r} not in images")
        if ann.get("category_id") not in names:
            raise DatasetError(f"{where}: category_id {ann.get('category_id')!r} not in categories")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{where}: bbox must be [x, y, width, height]") from None
        seg = ann.get("segmentation")
        poly = None
        if isinstance(seg, list) and len(seg) == 1 and len(seg[0]) >= 6:
            poly = tuple(zip(map(float, seg[0][0::2]), map(float, seg[0][1::2])))
        crowd = bool(ann.get("iscrowd", 0))
        out[files[ann["image_id"]]].append(
            Box(names[ann["category_id"]], x, y, x + w, y + h, polygon=poly, difficult=crowd))
    return out


NWPU_VHR10_CLASSES = ("airplane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
                      "ground track field", "harbor", "bridge", "vehicle")
_NWPU_LINE = re.compile(r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*"
                        r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*(\d+)")


def read_nwpu_vhr10(path: str | Path) -> list[Box]:
    """NWPU VHR-10 ground truth: one `(x1,y1),(x2,y2),class_id` line per object, class ids 1-10
    (NWPU_VHR10_CLASSES order, as in Cheng et al. 2014's release)."""
    path = Path(path)
    boxes = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        m = _NWPU_LINE.match(line.strip())
        if m is None:
            raise DatasetError(f"{path}: line {n}: expected '(x1,y1),(x2,y2),class', got {line.strip()!r}")
        x1, y1, x2, y2 = (float(v) for v in m.groups()[:4])
        cls = int(m.group(5))
        if not 1 <= cls <= len(NWPU_VHR10_CLASSES):
            raise DatasetError(f"{path}: line {n}: class id {cls} outside 1-{len(NWPU_VHR10_CLASSES)}")
        boxes.append(Box(NWPU_VHR10_CLASSES[cls - 1], min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return boxes

