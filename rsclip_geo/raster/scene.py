"""An input scene: a raster opened for tiling, with its band mapping, validity rule and stretch.

Everything that decides how raw pixels become the RGB the model sees lives
here and is decided once per scene (never per tile), so neighbouring tiles
are comparable.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from ..errors import OptionError, RasterInputError

log = logging.getLogger(__name__)

STRETCHES = ("auto", "percentile", "none")
GDAL_CACHE_MB = 64  # GDAL's block cache otherwise grows to 5% of RAM, so peak memory would grow with the scene
SAMPLE_MAX_SIDE = 1024  # pixels on the long side of the scene sample used for stretch / validity


class NotGeoreferencedSceneWarning(UserWarning):
    """The scene has no CRS: outputs are in pixel coordinates (column, row)."""


@dataclass(frozen=True)
class Stretch:
    """Per-band linear map low->0, high->255 (uint8 data with 'none' maps 0->0, 255->255)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def identity(self) -> bool:
        """0->0 and 255->255 on every band: uint8 data passes through unchanged."""
        return all(lo == 0.0 for lo in self.low) and all(hi == 255.0 for hi in self.high)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """bands x H x W (any dtype) -> bands x H x W uint8."""
        if data.dtype == np.uint8 and self.identity:
            return data  # the common 8-bit RGB case: no float round trip per tile
        low = np.asarray(self.low, dtype=np.float32).reshape(-1, 1, 1)
        span = np.maximum(np.asarray(self.high, dtype=np.float32).reshape(-1, 1, 1) - low, 1e-6)
        out = data.astype(np.float32)
        out -= low
        out *= 255.0 / span
        out += 0.5
        if data.dtype.kind == "f":
            np.nan_to_num(out, copy=False)  # NaN nodata: masked anyway
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)


def default_bands(ds) -> tuple[int, ...]:
    """3 bands -> as stored; RGB colour interpretation -> R,G,B; >3 -> first three; 1 -> replicated."""
    ci = list(ds.colorinterp)
    if all(c in ci for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return tuple(ci.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue))
    if ds.count == 1:
        return (1,)
    if ds.count == 2:
        raise RasterInputError(
            f"{ds.name}: has 2 bands; say which to use with --bands (1 band is replicated to RGB, or give 3)"
        )
    return (1, 2, 3)


def _is_gdal_dataset_name(name: str) -> bool:
    """GDAL's names for what is not a plain file: DRIVER:file:subdataset and /vsi...; not C:\\ drive letters."""
    head, sep, _ = name.partition(":")
    return name.startswith("/vsi") or bool(sep and len(head) > 1 and head.replace("_", "").isalnum()
                                           and not Path(name).exists())


def _no_bands_message(ds, path: Path) -> str:
    """A container (netCDF, HDF, GeoPackage with several raster tables) holds subdatasets, not bands."""
    subs = list(ds.subdatasets or [])
    if not subs:
        return f"{path}: has no raster bands ({ds.driver} file)"
    shown = "\n  ".join(subs[:20]) + (f"\n  ... and {len(subs) - 20} more" if len(subs) > 20 else "")
    return (f"{path}: has no raster bands of its own; it is a {ds.driver} container of {len(subs)} subdataset(s). "
            f"Pass one of them as the scene, e.g. '{subs[0]}':\n  {shown}")


def scene_path(value) -> Path:
    """A scene given as a file path (str or os.PathLike); anything else is a TypeError saying what is expected."""
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value)
    raise TypeError(f"a scene must be a raster file path (str or pathlib.Path) or an opened rsclip_geo Scene, got "
                    f"{type(value).__name__}" + ("; write an in-memory array to a GeoTIFF first (rasterio)"
                                                 if isinstance(value, np.ndarray) else ""))


def _band_number(ds, b) -> int:
    try:
        whole = not isinstance(b, (bool, np.bool_)) and float(b).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise RasterInputError(f"{ds.name}: band numbers are whole numbers 1..{ds.count}, got {b!r}")
    return int(float(b))


def _check_bands(ds, bands: Sequence[int]) -> tuple[int, ...]:
    if isinstance(bands, (str, bytes)) or not hasattr(bands, "__iter__"):
        raise RasterInputError(f"{ds.name}: bands must be a list of 1 or 3 band numbers, e.g. [3, 2, 1]; got "
                               f"{bands!r}")
    bands = tuple(_band_number(ds, b) for b in bands)
    if len(bands) not in (1, 3):
        raise RasterInputError(f"{ds.name}: --bands must name 1 or 3 bands (got {list(bands)})")
    for b in bands:
        if not 1 <= b <= ds.count:
            raise RasterInputError(
                f"{ds.name}: band {b} does not exist (the raster has {ds.count} band{'s' if ds.count > 1 else ''}, "
                f"numbered 1..{ds.count})"
            )
    return bands


class Scene:
    """An opened raster plus the decisions needed to read RGB tiles from it.

    ``zero_invalid``: 'auto' treats pixels that are 0 in every selected band as invalid
    when the raster declares no nodata value and no mask (zero-filled edges);
    True/False force it on or off. In float rasters NaN and +-inf pixels are invalid, nodata declared or not,
    so the stretch is fitted on finite values only.
    """

    def __init__(self, path: str | Path, bands: Sequence[int] | None = None, stretch: str = "auto",
                 percentiles: tuple[float, float] = (2.0, 98.0), zero_invalid: bool | str = "auto",
                 gdal_cache_mb: int = GDAL_CACHE_MB):
        self.path = scene_path(path)
        self.gdal_cache_mb = int(gdal_cache_mb)
        if stretch not in STRETCHES:
            raise OptionError(f"stretch must be one of {STRETCHES}, got {stretch!r}")
        if not (zero_invalid == "auto" or isinstance(zero_invalid, (bool, np.bool_))):
            raise OptionError(f"zero_invalid must be 'auto', True or False, got {zero_invalid!r}")
        gdal_name = _is_gdal_dataset_name(str(path))  # a subdataset ('GPKG:f.gpkg:table', 'NETCDF:"f.nc":v')
        if not gdal_name and not self.path.exists():
            raise RasterInputError(f"{self.path}: file does not exist")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.ds = rasterio.open(str(path) if gdal_name else self.path)
        except RasterioIOError as exc:
            raise RasterInputError(f"{self.path}: not a readable raster ({exc})") from exc
        try:
            with self.gdal_env():
                self._setup(bands, stretch, percentiles, zero_invalid)
        except BaseException:
            self.ds.close()
            raise

    def _setup(self, bands, stretch, percentiles, zero_invalid):
        ds = self.ds
        if ds.count == 0:
            raise RasterInputError(_no_bands_message(ds, self.path))
        self.bands = _check_bands(ds, bands) if bands else default_bands(ds)
        self.crs = ds.crs
        self.transform = ds.transform
        self.width, self.height = ds.width, ds.height
        if self.crs is None:
            warnings.warn(
                f"{self.path}: no CRS; outputs carry no CRS and use the raster's geotransform "
                "(pixel coordinates, x = column and y = row, when it has none)",
                NotGeoreferencedSceneWarning, stacklevel=3)
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        declared = any(MaskFlags.all_valid not in f for f in flags)
        # Masks GDAL would compute from the pixels (nodata) are computed here from the data already read;
        # only real masks (internal mask, alpha) need a second read.
        self._nodata = [ds.nodatavals[b - 1] for b in self.bands]
        self._mask_source = ("none" if not declared else
                             "nodata" if all(f == [MaskFlags.nodata] for f in flags) else "read")
        self.zero_invalid = (not declared) if zero_invalid == "auto" else bool(zero_invalid)
        data, valid = self._read_sample()
        if not valid.any():
            raise RasterInputError(
                f"{self.path}: every pixel is invalid (nodata/mask/NaN/inf"
                + (", or 0 in all selected bands" if self.zero_invalid else "") + ") in bands "
                + ",".join(map(str, self.bands)))
        self.stretch = self._fit_stretch(data, valid, stretch, percentiles)

    def gdal_env(self) -> rasterio.Env:
        """GDAL settings for reading this scene: a bounded block cache (rasterio takes GDAL_CACHEMAX in bytes)."""
        return rasterio.Env(GDAL_CACHEMAX=self.gdal_cache_mb * 2**20)

    # ---- scene-level statistics ---------------------------------------------
    def _read_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A decimated read of the whole scene (GDAL uses overviews when present)."""
        scale = max(self.width, self.height) / SAMPLE_MAX_SIDE
        shape = (max(1, round(self.height / scale)), max(1, round(self.width / scale))) if scale > 1 else (
            self.height, self.width)
        try:
            data = self.ds.read(list(self.bands), out_shape=(len(self.bands), *shape), resampling=Resampling.nearest)
            masks = self.ds.read_masks(list(self.bands), out_shape=(len(self.bands), *shape),
                                       resampling=Resampling.nearest)
        except RasterioError as exc:
            raise RasterInputError(f"{self.path}: cannot read pixels; the file may be truncated or corrupt ({exc})") from exc
        return data, self.valid_mask(data, masks)

    def valid_mask(self, data: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Valid pixels of ``data`` (bands x H x W) read with ``masks``: masked, non-finite and (with zero_invalid)
        all-zero pixels are not."""
        valid = np.all(masks > 0, axis=0)
        if data.dtype.kind in "fc":  # NaN/+-inf are no measurement, declared nodata or not
            valid &= np.all(np.isfinite(data), axis=0)
        if self.zero_invalid:
            valid &= np.any(data != 0, axis=0)
        return valid

    def _fit_stretch(self, data, valid, stretch, percentiles) -> Stretch:
        is_byte = self.ds.dtypes[self.bands[0] - 1] == "uint8"
        if stretch == "none" or (stretch == "auto" and is_byte):
            return Stretch(low=(0.0,) * len(self.bands), high=(255.0,) * len(self.bands))
        lows, highs = [], []
        for band_data in data:
            values = band_data[valid].astype(np.float64)
            lo, hi = np.percentile(values, percentiles)
            if hi <= lo:
                hi = lo + 1.0
            lows.append(float(lo))
            highs.append(float(hi))
        log.info("%s: percentile stretch %s -> low %s high %s", self.path.name, percentiles, lows, highs)
        return Stretch(low=tuple(lows), high=tuple(highs))

    # ---- tiles --------------------------------------------------------------
    def read_rgb(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read ``window`` (may extend past the edges) -> (HxWx3 uint8 RGB, HxW bool valid)."""
        chw, valid = self.read_chw(window)
        return np.ascontiguousarray(chw.transpose(1, 2, 0)), valid

    def read_chw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Like read_rgb, band-first (3xHxW): how GDAL delivers pixels and the encoder takes them, so the
        tiler skips two interleaving copies (the larger part of its CPU time on 8-bit scenes)."""
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        col0, row0 = max(c0, 0), max(r0, 0)
        inner_w, inner_h = min(c0 + w, self.width) - col0, min(r0 + h, self.height) - row0
        if inner_w <= 0 or inner_h <= 0:  # wholly outside (Window() itself rejects negative sizes)
            return np.zeros((3, h, w), dtype=np.uint8), np.zeros((h, w), dtype=bool)
        inner = Window(col0, row0, inner_w, inner_h)
        try:
            data = self.ds.read(list(self.bands), window=inner)
            masks = self._window_masks(data, inner)
        except RasterioError as exc:
            raise RasterInputError(
                f"{self.path}: cannot read window col {inner.col_off} row {inner.row_off} "
                f"({inner.width}x{inner.height}); the file may be truncated or corrupt ({exc})") from exc
        inner_valid = self.valid_mask(data, masks)
        stretched = self.stretch.apply(data)
        if stretched.shape[0] == 1:
            stretched = np.repeat(stretched, 3, axis=0)
        if (inner_h, inner_w) == (h, w):
            return stretched, inner_valid
        chw = np.zeros((3, h, w), dtype=np.uint8)
        valid = np.zeros((h, w), dtype=bool)
        ys = slice(inner.row_off - r0, inner.row_off - r0 + inner.height)
        xs = slice(inner.col_off - c0, inner.col_off - c0 + inner.width)
        chw[:, ys, xs] = stretched
        valid[ys, xs] = inner_valid
        return chw, valid

    def _window_masks(self, data: np.ndarray, window: Window) -> np.ndarray:
        """Per-band validity (0 invalid, >0 valid) of ``data`` read from ``window``, as GDAL's masks say."""
        if self._mask_source == "read":
            return self.ds.read_masks(list(self.bands), window=window)
        if self._mask_source == "none":
            return np.ones(data.shape, dtype=np.uint8)
        masks = np.empty(data.shape, dtype=np.uint8)
        for i, nodata in enumerate(self._nodata):
            if nodata is not None and np.isnan(nodata):
                masks[i] = ~np.isnan(data[i])
            else:
                masks[i] = data[i] != nodata
        return masks

    def plan(self, spec, default_size_px: int):
        """The tile plan of this scene for ``spec`` (``default_size_px``: the model's input size when the spec
        gives none); errors name the scene."""
        from .tiling import plan_tiles

        return plan_tiles(self.width, self.height, self.transform, self.crs, spec, default_size_px, str(self.path))

    def close(self) -> None:
        self.ds.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
