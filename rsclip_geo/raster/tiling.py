"""Tile plans: which pixel windows of a scene become model inputs, and where they are on the map.

Tile size is given in pixels or in metres on the ground. Metres are converted
with geodesic distances on the CRS's ellipsoid at the scene centre, so the
same call is right for projected (UTM, Web Mercator) and geographic CRS.

Edge policy, for the last row/column when the scene is not a whole number of strides:

- ``shift`` (default): the last tile is moved back inside the scene (it overlaps
  its neighbour more); every tile is full size and the whole scene is covered.
- ``pad``: a partial tile hangs over the edge; the pixels outside the scene are
  invalid (they count against ``max_invalid``, so an edge tile that lies mostly
  outside is skipped). Tiles form a regular grid starting at the top-left corner.
- ``drop``: tiles that do not fit are left out; the right/bottom strip is not covered.

Number of tiles along an axis of ``n`` pixels with tile ``t`` and stride ``s``:
``floor((n - t) / s) + 1`` for drop, ``ceil((n - t) / s) + 1`` for pad and shift.
A scene smaller than one tile is an error for every policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.windows import Window
from shapely.geometry import Polygon

from ..errors import OptionError, RasterInputError

EDGE_POLICIES = ("pad", "shift", "drop")
MIN_TILE_PX = 8  # smaller tiles hold too few pixels to mean anything once resized to the model's input


@dataclass(frozen=True)
class TileSpec:
    """How to tile: size in pixels *or* metres, overlap as a fraction of the tile, edge policy."""

    size_px: int | None = None
    size_m: float | None = None
    overlap: float = 0.0
    edge: str = "shift"

    def __post_init__(self):
        if self.size_px is not None and self.size_m is not None:
            raise OptionError("give the tile size in pixels or in metres, not both")
        if self.size_px is not None and (isinstance(self.size_px, bool) or not 1 <= self.size_px < math.inf
                                         or self.size_px != int(self.size_px)):
            raise OptionError(f"tile size must be a whole number >= 1 pixel, got {self.size_px!r}")
        if self.size_m is not None and not 0 < self.size_m < math.inf:
            raise OptionError(f"tile size must be a finite number > 0 m, got {self.size_m}")
        if not 0 <= self.overlap < 1:
            raise OptionError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.edge not in EDGE_POLICIES:
            raise OptionError(f"edge policy must be one of {EDGE_POLICIES}, got {self.edge!r}")


@dataclass(frozen=True)
class Tile:
    """One tile: grid position and pixel window (may extend past the scene for the 'pad' policy)."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True)
class TilePlan:
    """All tiles of a scene, in row-major order, with the geometry needed to place them."""

    scene_width: int
    scene_height: int
    transform: Affine
    crs: CRS | None
    tile_width: int
    tile_height: int
    stride_x: int
    stride_y: int
    n_rows: int
    n_cols: int
    edge: str

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __iter__(self) -> Iterator[Tile]:
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield self.tile(r, c)

    def tile(self, row: int, col: int) -> Tile:
        r0, c0 = row * self.stride_y, col * self.stride_x
        if self.edge == "shift":
            r0 = min(r0, self.scene_height - self.tile_height)
            c0 = min(c0, self.scene_width - self.tile_width)
        return Tile(row, col, r0, c0, self.tile_height, self.tile_width)

    def footprint(self, tile: Tile) -> Polygon:
        """The tile's area in the scene CRS, clipped to the scene (exact for rotated transforms)."""
        c0, r0 = max(tile.col_off, 0), max(tile.row_off, 0)
        c1 = min(tile.col_off + tile.width, self.scene_width)
        r1 = min(tile.row_off + tile.height, self.scene_height)
        corners = [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]
        return Polygon([self.transform @ xy for xy in corners])

    def inside_fraction(self, tile: Tile) -> float:
        """The share of the tile's pixels that lie inside the scene (< 1 only for 'pad' edge tiles)."""
        w = min(tile.col_off + tile.width, self.scene_width) - max(tile.col_off, 0)
        h = min(tile.row_off + tile.height, self.scene_height) - max(tile.row_off, 0)
        return max(0, w) * max(0, h) / float(tile.width * tile.height)

    def skip_reasons(self, kept: Iterable[tuple[int, int]], max_invalid: float) -> tuple[int, int]:
        """Tiles not in ``kept`` ((row, col) pairs) as (outside, invalid): ``outside`` lie so far past the
        scene's edge ('pad') that they are skipped whatever their pixels; ``invalid`` had too many invalid
        pixels (nodata, masks) inside the scene."""
        kept = set(kept)
        outside = invalid = 0
        for tile in self:
            if (tile.row, tile.col) in kept:
                continue
            if 1.0 - self.inside_fraction(tile) > max_invalid:
                outside += 1
            else:
                invalid += 1
        return outside, invalid

    @property
    def grid_transform(self) -> Affine:
        """Transform of a raster with one pixel per tile (pixel = stride x stride scene pixels)."""
        return self.transform @ Affine.scale(self.stride_x, self.stride_y)


def pixel_size_m(transform: Affine, crs: CRS | None, width: int, height: int) -> tuple[float, float]:
    """Ground size in metres of one pixel along columns and rows, measured at the scene centre."""
    if crs is None:
        raise RasterInputError("the scene has no CRS, so a tile size in metres cannot be converted; use pixels")
    crs = CRS.from_user_input(crs)
    geodetic = crs.geodetic_crs
    if geodetic is None:
        raise RasterInputError(f"CRS {crs.name!r} has no ellipsoid; use a tile size in pixels")
    to_lonlat = Transformer.from_crs(crs, geodetic, always_xy=True)
    geod = geodetic.get_geod() or Geod(ellps="WGS84")
    c, r = width / 2.0, height / 2.0
    x0, y0 = transform @ (c, r)
    sizes = []
    for dc, dr in ((1, 0), (0, 1)):
        x1, y1 = transform @ (c + dc, r + dr)
        lon0, lat0 = to_lonlat.transform(x0, y0)
        lon1, lat1 = to_lonlat.transform(x1, y1)
        sizes.append(geod.inv(lon0, lat0, lon1, lat1)[2])
    return sizes[0], sizes[1]


def _count(n: int, tile: int, stride: int, edge: str) -> int:
    if edge == "drop":
        return (n - tile) // stride + 1
    return math.ceil((n - tile) / stride) + 1


def as_tile_spec(value, name: str = "tile") -> TileSpec:
    """``value`` if it is a TileSpec; else a TypeError that shows how to make one (not a foreign error later)."""
    if isinstance(value, TileSpec):
        return value
    hint = f"TileSpec(size_px={value})" if isinstance(value, int) and not isinstance(value, bool) else (
        f"TileSpec(size_m={value})" if isinstance(value, float) else "TileSpec(size_px=224) or TileSpec(size_m=500)")
    raise TypeError(f"{name} must be a rsclip_geo.TileSpec, e.g. {hint}; got {type(value).__name__} {value!r}")


def plan_tiles(width: int, height: int, transform: Affine, crs, spec: TileSpec, default_size_px: int,
               source: str = "scene") -> TilePlan:
    """Plan the tiles of a ``width`` x ``height`` raster; ``source`` names it in errors."""
    spec = as_tile_spec(spec)
    if spec.size_m is not None:
        try:
            px, py = pixel_size_m(transform, crs, width, height)
        except RasterInputError as exc:  # name the raster, as every input error does
            raise RasterInputError(f"{source}: {exc}") from exc
        tw, th = max(1, round(spec.size_m / px)), max(1, round(spec.size_m / py))
        if min(tw, th) < MIN_TILE_PX:
            raise RasterInputError(
                f"{source}: a {spec.size_m:g} m tile is {tw}x{th} px at this scene's pixel size of {px:.4g} x "
                f"{py:.4g} m; tiles must be at least {MIN_TILE_PX} px a side: use a tile size of at least "
                f"{MIN_TILE_PX * max(px, py):.3g} m")
    else:
        tw = th = int(spec.size_px or default_size_px)
        if tw < MIN_TILE_PX:
            raise RasterInputError(f"{source}: tiles of {tw} px are too small; use at least {MIN_TILE_PX} px a side")
    if width < tw or height < th:
        unit = f"{spec.size_m:g} m = {tw}x{th} px" if spec.size_m is not None else f"{tw}x{th} px"
        raise RasterInputError(
            f"{source}: raster is {width}x{height} px, smaller than one tile ({unit}); use a smaller tile size")
    sx = max(1, round(tw * (1 - spec.overlap)))
    sy = max(1, round(th * (1 - spec.overlap)))
    return TilePlan(width, height, transform, CRS.from_user_input(crs) if crs else None, tw, th, sx, sy,
                    _count(height, th, sy, spec.edge), _count(width, tw, sx, spec.edge), spec.edge)
