"""Quick-look PNGs: the scene as the model sees it (same band mapping and stretch), with results drawn on top.

The scene is read decimated (GDAL picks overviews when present) so that its
long side is at most ``max_side`` pixels; scenes smaller than ``min_side`` are
enlarged by a whole factor (nearest neighbour) so labels stay legible. A legend
strip of ``LEGEND_HEIGHT`` pixels is added below the image, so nothing in the
scene is hidden by it: the PNG is ``width x (height + LEGEND_HEIGHT)``.
Drawing uses PIL only (no matplotlib).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from affine import Affine
from PIL import Image, ImageDraw, ImageFont
from pyproj import CRS
from rasterio.enums import Resampling

from ..errors import RasterInputError
from ..raster.scene import Scene
from .writers import atomic_path, check_output

MAX_SIDE = 1200
MIN_SIDE = 512
LEGEND_HEIGHT = 40
NODATA_RGB = (48, 48, 48)
HIT_RGB = (255, 221, 0)
# A perceptually ordered blue -> green -> yellow -> red ramp (Turbo-like stops), for values in [0, 1].
RAMP = np.array([(48, 18, 59), (70, 107, 227), (40, 187, 236), (49, 241, 153), (164, 252, 60), (237, 208, 58),
                 (251, 128, 34), (214, 53, 6), (122, 4, 3)], dtype=np.float64)


@dataclass
class QuickLook:
    """A preview raster of a scene: RGB, validity, and the map transform of its pixels."""

    rgb: np.ndarray  # H x W x 3 uint8
    valid: np.ndarray  # H x W bool
    transform: Affine
    crs: object

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def preview_shape(width: int, height: int, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(width, height) of the preview image (legend strip not included)."""
    long = max(width, height)
    if long > max_side:
        s = long / max_side
        return max(1, round(width / s)), max(1, round(height / s))
    if long < min_side:
        k = math.ceil(min_side / long)
        return width * k, height * k
    return width, height


def colourize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (NaN allowed) -> ... x 3 uint8 on ``RAMP``."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * (len(RAMP) - 1)
    stops = np.arange(len(RAMP))
    return np.stack([np.interp(v, stops, RAMP[:, c]) for c in range(3)], axis=-1).round().astype(np.uint8)


def quicklook(scene: str | os.PathLike | Scene, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE,
              **scene_options) -> QuickLook:
    """The scene's RGB preview through its own stretch (an opened Scene, or a path with ``scene_options``)."""
    own = not isinstance(scene, Scene)
    sc = Scene(scene, **scene_options) if own else scene
    try:
        pw, ph = preview_shape(sc.width, sc.height, max_side, min_side)
        enlarge = pw > sc.width
        shape = (len(sc.bands), sc.height, sc.width) if enlarge else (len(sc.bands), ph, pw)
        data = sc.ds.read(list(sc.bands), out_shape=shape, resampling=Resampling.average)
        masks = sc.ds.read_masks(list(sc.bands), out_shape=shape, resampling=Resampling.nearest)
        valid = sc.valid_mask(data, masks)
        rgb = sc.stretch.apply(data)
        if rgb.shape[0] == 1:
            rgb = np.repeat(rgb, 3, axis=0)
        rgb = rgb.transpose(1, 2, 0).copy()
        if enlarge:
            k = pw // sc.width
            rgb = rgb.repeat(k, axis=0).repeat(k, axis=1)
            valid = valid.repeat(k, axis=0).repeat(k, axis=1)
        rgb[~valid] = NODATA_RGB
        transform = sc.transform @ Affine.scale(sc.width / pw, sc.height / ph)
        return QuickLook(rgb, valid, transform, sc.crs)
    finally:
        if own:
            sc.close()


# ---- drawing helpers ------------------------------------------------------------------------------------------
FONT_FILE = "DejaVuSans.ttf"  # Unicode coverage (Latin, Greek, Cyrillic, Arabic, ...); CJK shows as boxes


def _font_candidates() -> list[Path]:
    """DejaVu Sans from the system (fonts-dejavu-core) or from matplotlib's package data (not imported)."""
    import importlib.util

    paths = [Path("/usr/share/fonts/truetype/dejavu") / FONT_FILE, Path("/usr/share/fonts/TTF") / FONT_FILE,
             Path("/Library/Fonts") / FONT_FILE, Path(os.environ.get("WINDIR", "C:/Windows")) / "Fonts" / FONT_FILE]
    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            paths.append(Path(loc) / "mpl-data" / "fonts" / "ttf" / FONT_FILE)
    return paths


@functools.lru_cache(maxsize=None)
def _font(size: int = 14):
    """A TrueType font with Unicode glyphs; PIL's default only where none is found (then text is Latin-1)."""
    for path in _font_candidates():
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:  # Pillow < 10.1: a Latin-1 bitmap font only
        return ImageFont.load_default()


def _drawable(text: str, font) -> str:
    """PIL's bitmap font encodes text as Latin-1 and raises on anything else: replace what it cannot draw."""
    if isinstance(font, ImageFont.ImageFont):
        return text.encode("latin-1", "replace").decode("latin-1")
    return text


def _text(draw: ImageDraw.ImageDraw, xy, text: str, font, **kwargs) -> None:
    draw.text(xy, _drawable(text, font), font=font, **kwargs)


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill, font, anchor: str = "lt") -> None:
    """Text on a filled box, readable over any imagery."""
    x, y = xy
    text = _drawable(text, font)
    box = draw.textbbox((x, y), text, font=font, anchor=anchor)
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=fill)
    dark = sum(fill[:3]) > 382
    draw.text((x, y), text, font=font, anchor=anchor, fill=(0, 0, 0) if dark else (255, 255, 255))


def _with_legend(image: Image.Image) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    out = Image.new("RGB", (image.width, image.height + LEGEND_HEIGHT), (255, 255, 255))
    out.paste(image, (0, 0))
    return out, ImageDraw.Draw(out)


def _ramp_bar(draw, x0: int, y0: int, width: int, height: int) -> None:
    colours = colourize(np.linspace(0, 1, max(2, width)))
    for i, c in enumerate(colours):
        draw.line((x0 + i, y0, x0 + i, y0 + height), fill=tuple(int(v) for v in c))


def _save(image: Image.Image, path: str | os.PathLike, overwrite: bool) -> Path:
    path = check_output(path, overwrite, suffixes=(".png",))
    with atomic_path(path, overwrite) as tmp:
        image.save(tmp, format="PNG")
    return path


def _to_pixels(transform: Affine, coords) -> list[tuple[float, float]]:
    inv = ~transform
    return [inv @ (x, y) for x, y, *_ in coords]


def _rings(geometry) -> list:
    if geometry is None or geometry.is_empty:
        return []
    parts = getattr(geometry, "geoms", [geometry])
    return [p.exterior.coords for p in parts if hasattr(p, "exterior")]


# ---- heatmap --------------------------------------------------------------------------------------------------
def heatmap_on(ql: QuickLook, heat, alpha: float = 0.55) -> np.ndarray:
    """The quick-look RGB with the heatmap (any grid over the same area, same CRS) blended where it has data."""
    h, w = ql.rgb.shape[:2]
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    t = ql.transform
    x, y = t.a * jj + t.b * ii + t.c, t.d * jj + t.e * ii + t.f
    inv = ~heat.transform
    col = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
    row = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
    rows, cols = heat.array.shape
    inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    values = np.full((h, w), np.nan, np.float32)
    values[inside] = heat.array[row[inside], col[inside]]
    has = np.isfinite(values)
    out = ql.rgb.astype(np.float32)
    out[has] = (1 - alpha) * out[has] + alpha * colourize(values[has])
    return out.round().astype(np.uint8)


def heatmap_preview(scene: str | os.PathLike | Scene, heat, path: str | os.PathLike, overwrite: bool = False,
                    alpha: float = 0.55, max_side: int = MAX_SIDE, **scene_options) -> Path:
    """PNG of the scene with a ``Heatmap`` blended on top and a colour-bar legend."""
    check_output(path, overwrite, suffixes=(".png",))
    return save_preview(heatmap_image(scene, heat, alpha, max_side, **scene_options), path, overwrite)


def heatmap_image(scene: str | os.PathLike | Scene, heat, alpha: float = 0.55, max_side: int = MAX_SIDE,
                  **scene_options) -> Image.Image:
    """The image heatmap_preview saves (front ends render it before writing their outputs, save it after)."""
    ql = quicklook(scene, max_side, **scene_options)
    image, draw = _with_legend(Image.fromarray(heatmap_on(ql, heat, alpha)))
    font = _font(13)
    top = ql.rgb.shape[0]
    bar_w = min(200, max(60, image.width // 3))
    _text(draw, (6, top + 4), "0", font, fill=(0, 0, 0))
    _ramp_bar(draw, 18, top + 6, bar_w, 12)
    _text(draw, (22 + bar_w, top + 4), "1", font, fill=(0, 0, 0))
    _text(draw, (6, top + 22), f"SeLo heatmap: {heat.query}  (0 = least, 1 = most similar)", font, fill=(0, 0, 0))
    return image


# ---- polygons (search hits, counts) ---------------------------------------------------------------------------
def polygons_preview(scene: str | os.PathLike | Scene, gdf, path: str | os.PathLike, labels: Sequence[str],
                     title: str, colours: Sequence[tuple[int, int, int]] | None = None, fill_alpha: int = 0,
                     overwrite: bool = False, max_side: int = MAX_SIDE, legend: str = "", **scene_options) -> Path:
    """PNG of the scene with ``gdf``'s polygons outlined (and optionally filled), one label each."""
    check_output(path, overwrite, suffixes=(".png",))
    return save_preview(polygons_image(scene, gdf, labels, title, colours, fill_alpha, max_side, legend,
                                       **scene_options), path, overwrite)


def polygons_image(scene: str | os.PathLike | Scene, gdf, labels: Sequence[str], title: str,
                   colours: Sequence[tuple[int, int, int]] | None = None, fill_alpha: int = 0,
                   max_side: int = MAX_SIDE, legend: str = "", **scene_options) -> Image.Image:
    """The image polygons_preview saves."""
    ql = quicklook(scene, max_side, **scene_options)
    if gdf.crs is not None and ql.crs is not None:
        scene_crs = CRS.from_user_input(ql.crs)
        if gdf.crs != scene_crs:
            gdf = gdf.to_crs(scene_crs)
    elif (gdf.crs is None) != (ql.crs is None):
        raise RasterInputError("the polygons and the scene must both have a CRS or both be in pixel coordinates")
    base = Image.fromarray(ql.rgb).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(13 if base.width < 700 else 15)
    colours = list(colours) if colours is not None else [HIT_RGB] * len(gdf)
    width = max(2, round(base.width / 300))
    for geom, text, colour in zip(gdf.geometry, labels, colours):
        for ring in _rings(geom):
            pts = _to_pixels(ql.transform, ring)
            if fill_alpha:
                draw.polygon(pts, fill=(*colour, fill_alpha))
            draw.line(pts + [pts[0]], fill=(*colour, 255), width=width)
        if text and geom is not None and not geom.is_empty:
            c = geom.centroid
            _label(draw, (~ql.transform) @ (c.x, c.y), str(text), (*colour, 255), font, anchor="mm")
    image = Image.alpha_composite(base, layer).convert("RGB")
    image, draw = _with_legend(image)
    font = _font(13)
    top = ql.rgb.shape[0]
    _text(draw, (6, top + 4), title, font, fill=(0, 0, 0))
    if legend:
        _text(draw, (6, top + 22), legend, font, fill=(0, 0, 0))
    return image


def save_preview(image: Image.Image, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a rendered preview image as PNG (atomically)."""
    return _save(image, path, overwrite)


def hits_preview(scene, hits, path, query: str = "", overwrite: bool = False, max_side: int = MAX_SIDE,
                 **scene_options) -> Path:
    """Search hits of one scene (a frame, e.g. ``SearchHits.frame`` cut to the scene): outlined tiles labelled
    with their rank."""
    check_output(path, overwrite, suffixes=(".png",))
    return save_preview(hits_image(scene, hits, query, max_side, **scene_options), path, overwrite)


def hits_image(scene, hits, query: str = "", max_side: int = MAX_SIDE, **scene_options) -> Image.Image:
    return polygons_image(scene, hits, [str(r) for r in hits["rank"]], f"search: {query!r}, top {len(hits)} tiles",
                          max_side=max_side, legend="labels: rank (1 = best match)", **scene_options)


def counts_preview(scene, counts, path, overwrite: bool = False, max_side: int = MAX_SIDE, **scene_options) -> Path:
    """Per-tile counts (a ``Counts``): tiles tinted by count (colour ramp 1..max) and labelled with it."""
    check_output(path, overwrite, suffixes=(".png",))
    return save_preview(counts_image(scene, counts, max_side, **scene_options), path, overwrite)


def counts_image(scene, counts, max_side: int = MAX_SIDE, **scene_options) -> Image.Image:
    frame, max_count = counts.frame, max(1, int(counts.max_count))
    frac = (frame["count"].to_numpy() - 1) / max(1, max_count - 1)
    colours = [tuple(int(v) for v in c) for c in colourize(frac)]
    return polygons_image(scene, frame, [str(n) for n in frame["count"]],
                          f"count: {counts.object}, total {counts.total} over {len(frame)} tiles",
                          colours=colours, fill_alpha=70, max_side=max_side,
                          legend=f"labels: most probable count per tile (1..{max_count})", **scene_options)


def labels_preview(scene, labels_gdf, path, class_names: Sequence[str], overwrite: bool = False,
                   max_side: int = MAX_SIDE, **scene_options) -> Path:
    """Zero-shot tile labels: tiles tinted with the class raster's palette and labelled with their class."""
    check_output(path, overwrite, suffixes=(".png",))
    return save_preview(labels_image(scene, labels_gdf, class_names, max_side, **scene_options), path, overwrite)


def labels_image(scene, labels_gdf, class_names: Sequence[str], max_side: int = MAX_SIDE,
                 **scene_options) -> Image.Image:
    from .writers import PALETTE

    index = {name: i for i, name in enumerate(class_names)}
    colours = [PALETTE[index.get(lab, len(PALETTE) - 1) % len(PALETTE)] for lab in labels_gdf["label"]]
    counts = labels_gdf["label"].value_counts()
    legend = "tiles per label: " + ", ".join(f"{name} {counts.get(name, 0)}" for name in class_names)
    return polygons_image(scene, labels_gdf, list(labels_gdf["label"]), f"tile-classify: {len(labels_gdf)} tiles",
                          colours=colours, fill_alpha=60, max_side=max_side, legend=legend, **scene_options)
