"""GIS outputs, written atomically: a temporary file in the target folder, renamed when complete.

A run that fails half-way leaves nothing behind, and nothing is overwritten
unless the caller says so.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence
from xml.sax.saxutils import escape

import numpy as np

from ..errors import OutputError

log = logging.getLogger(__name__)

VECTOR_DRIVERS = {".gpkg": "GPKG", ".parquet": "Parquet", ".geoparquet": "Parquet", ".geojson": "GeoJSON",
                  ".json": "GeoJSON"}

# Distinct, colour-blind-friendlier palette (Okabe-Ito + Tableau 20), cycled for many classes.
PALETTE = [
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (213, 94, 0), (204, 121, 167), (86, 180, 233),
    (240, 228, 66), (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
]


def check_output(path: str | os.PathLike, overwrite: bool = False, suffixes: Sequence[str] | None = None) -> Path:
    """Fail fast, before any work, if ``path`` cannot be written."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: unsupported output extension {path.suffix!r}; use one of {', '.join(suffixes)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite (overwrite=True) to replace it")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file path")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{path}: output folder {folder} is not writable")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = check_output(path, overwrite)
    clean_stale_temp(path)
    tmp = temp_path_beside(path)
    tmp.unlink()  # drivers want to create the file themselves
    try:
        yield tmp
        if path.exists() and not overwrite:  # appeared while we worked
            raise OutputError(f"{path}: appeared while writing; not overwritten (pass --overwrite)")
        os.replace(tmp, path)
    except OutputError:
        raise
    except Exception as exc:
        if not _is_write_failure(exc):
            raise
        raise OutputError(f"{path}: cannot write ({_write_failure_reason(exc)}); nothing was written") from exc
    finally:
        for leftover in (tmp, *tmp.parent.glob(glob.escape(tmp.name) + "*")):
            if leftover.exists():
                leftover.unlink()


# Temporary outputs are named ``.NAME.rsclip-tmp-HOST-PID-RANDOM.EXT`` (hidden, beside NAME; HOST is a hash of
# the host name): a writer killed with SIGKILL/SIGTERM cannot remove its own, so the next write of NAME removes
# the ones whose writer is gone (same host, process no longer running) or that are older than STALE_TEMP_S.
TEMP_MARK = ".rsclip-tmp-"
STALE_TEMP_S = 6 * 3600  # a writer on another host (shared file system) is presumed dead after this
_TEMP_RE = re.compile(re.escape(TEMP_MARK) + r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_path_beside(path: Path) -> Path:
    """A new empty temporary file beside ``path``, named so that ``clean_stale_temp`` removes it if its writer is
    killed. OutputError when the folder does not take it."""
    try:  # os.access can say yes and be wrong (Windows, ACLs, network shares)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent} ({exc})") from exc
    os.close(fd)
    return Path(tmp_name)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}{TEMP_MARK}{_host_tag()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, another user's
        return True
    return True


def clean_stale_temp(path: str | os.PathLike) -> list[Path]:
    """Remove our temporary files for ``path`` left by writers that were killed; returns what was removed."""
    path = Path(path)
    removed = []
    host, now = _host_tag(), time.time()
    for tmp in path.parent.glob(glob.escape(f".{path.name}{TEMP_MARK}") + "*"):
        m = _TEMP_RE.match(tmp.name, len(path.name) + 1)
        if m is None:
            continue
        try:
            age = now - tmp.lstat().st_mtime
        except OSError:
            continue
        dead = m["host"] == host and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
        if dead or age > STALE_TEMP_S:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                continue
    if removed:
        log.warning("removed %d temporary file(s) of an interrupted earlier write of %s: %s", len(removed), path,
                    ", ".join(p.name for p in removed))
    return removed


WRITE_ERROR_MODULES = ("pyogrio", "rasterio", "pyarrow", "fiona")


def _is_write_failure(exc: BaseException) -> bool:
    """An I/O failure while writing (disk full, quota, permission, a driver's own I/O error), not a bug."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in WRITE_ERROR_MODULES


def _write_failure_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    no_space = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text
    return f"the disk is full: {text}" if no_space else text


def write_vector(gdf, path: str | os.PathLike, overwrite: bool = False, layer: str | None = None,
                 metadata: dict[str, str] | None = None, description: str | None = None) -> Path:
    """GeoPackage / GeoParquet / GeoJSON chosen by extension.

    ``metadata``: key-value pairs stored as GeoPackage layer metadata or Parquet schema metadata (GeoJSON has no
    place for them); ``description``: the layer description (GeoPackage, GeoJSON; a Parquet metadata key).
    """
    path = check_output(path, overwrite, suffixes=tuple(VECTOR_DRIVERS))
    driver = VECTOR_DRIVERS[path.suffix.lower()]
    with atomic_path(path, overwrite) as tmp:
        if driver == "Parquet" and (metadata or description):
            _write_parquet(gdf, tmp, {**(metadata or {}), **({"description": description} if description else {})})
        elif driver == "Parquet":
            gdf.to_parquet(tmp)
        else:
            # GeoPackage 1.2: read without warnings by QGIS 3.22 and older GDAL (1.4 adds nothing we use)
            options = {"VERSION": "1.2"} if driver == "GPKG" else {}
            if metadata and driver == "GPKG":
                options["layer_metadata"] = dict(metadata)
            if description:
                options["layer_options"] = {"DESCRIPTION": description}
            gdf.to_file(tmp, driver=driver, layer=layer or path.stem, engine="pyogrio", **options)
    return path


def _write_parquet(gdf, path: Path, metadata: dict[str, str]) -> None:
    """GeoParquet with extra key-value schema metadata."""
    from .geoparquet import write_geoparquet

    write_geoparquet(gdf, path, {k.encode(): str(v).encode() for k, v in metadata.items()})


def check_class_count(n_classes: int, path: str | os.PathLike, nodata: int = 255) -> None:
    """A uint8 class raster holds classes 0..254 (255 is nodata): check before any work, not after it."""
    if n_classes >= nodata:
        raise OutputError(f"{path}: {n_classes} classes (labels, plus 'unknown' with a minimum score) do not fit "
                          f"a uint8 class raster (at most {nodata - 1}, {nodata} is nodata); use fewer labels or "
                          "leave out the class raster")


def write_class_raster(path: str | os.PathLike, classes: np.ndarray, transform, crs, class_names: Sequence[str],
                       nodata: int = 255, overwrite: bool = False) -> Path:
    """uint8 class raster with a colour table, class names as tags and GDAL category names (.aux.xml)."""
    import json

    import rasterio

    check_class_count(len(class_names), path, nodata)
    path = check_output(path, overwrite, suffixes=(".tif", ".tiff"))
    aux = path.with_name(path.name + ".aux.xml")
    if aux.exists() and not overwrite:
        raise OutputError(f"{aux}: already exists; pass --overwrite (overwrite=True) to replace it")
    profile = dict(driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1, dtype="uint8",
                   crs=crs, transform=transform, nodata=nodata, compress="deflate", tiled=False)
    colormap = {i: (*PALETTE[i % len(PALETTE)], 255) for i in range(len(class_names))}
    colormap[nodata] = (0, 0, 0, 0)
    with atomic_path(path, overwrite) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(classes.astype(np.uint8), 1)
            dst.write_colormap(1, colormap)
            dst.update_tags(CLASS_NAMES=json.dumps(list(class_names)))
            dst.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(class_names)})
            dst.set_band_description(1, "class")
    categories = "".join(f"<Category>{escape(n)}</Category>" for n in class_names)
    with atomic_path(aux, overwrite=True) as tmp:
        tmp.write_text(f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{categories}'
                       "</CategoryNames></PAMRasterBand></PAMDataset>\n", encoding="utf-8")
    return path


def write_float_raster(path: str | os.PathLike, data: np.ndarray, transform, crs, overwrite: bool = False,
                       description: str = "", nodata: float = float("nan"), tags: dict | None = None) -> Path:
    """Single-band float32 Cloud-Optimized GeoTIFF (tiled, deflate, overviews), NaN as nodata; ``tags``: dataset tags."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    path = check_output(path, overwrite, suffixes=(".tif", ".tiff"))
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="float32",
                   crs=crs, transform=transform, nodata=nodata)
    with atomic_path(path, overwrite) as tmp, MemoryFile() as mem:
        with mem.open(**profile) as src:
            src.write(data.astype(np.float32), 1)
            if description:
                src.set_band_description(1, description)
            if tags:
                src.update_tags(**{str(k): str(v) for k, v in tags.items()})
        with mem.open() as src:
            rio_copy(src, tmp, driver="COG", compress="DEFLATE", predictor="YES", blocksize=256,
                     overview_resampling="average")
    return path
