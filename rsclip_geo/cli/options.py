"""Options shared by the commands that run a model over a scene."""

from __future__ import annotations

import functools
import math

import click

from ..runtime.encoder import DEVICES, MAX_BATCH_SIZE, MAX_THREADS, ROTATIONS, load_model
from ..raster.scene import STRETCHES
from ..raster.tiling import EDGE_POLICIES, TileSpec


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses NaN and +-inf (which pass every range check: comparisons with NaN are
    false), so a float option never reaches the core as 'nan' or 'inf'. Used by every float option."""

    def convert(self, value, param, ctx):
        number = value if isinstance(value, float) else click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def _parse_bands(ctx, param, value):
    if value is None:
        return None
    try:
        bands = [int(b) for b in value.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated band numbers like 3,2,1, got {value!r}") from None
    if not bands:
        raise click.BadParameter("no band numbers given")
    return bands


def rotations_option(f):
    """--rotations 1|4 -> ``rotations`` (an int); ``model_options`` loads the model with it."""
    return click.option(
        "--rotations", type=click.Choice([str(r) for r in ROTATIONS]), default="1", show_default=True,
        callback=lambda ctx, param, value: int(value),
        help="4: embed every tile (segment: every window's cells) turned 0/90/180/270 degrees and average (4x the "
             "encoding time; more accurate answers, see the model card); 2: turned 0 and 90 degrees (2x). Indexes "
             "remember it.")(f)


def model_options(f):
    """--model/--device/--threads/--batch-size (and --rotations, with ``rotations_option``) -> a loaded ``model``
    keyword argument."""
    @click.option("--model", "model_name", default=None, metavar="NAME_OR_PATH",
                  help="Model bundle folder or pulled model name (default: the shipped model).")
    @click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                  help="Execution device; 'cuda' fails if CUDA is not really active.")
    @click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="CPU threads for onnxruntime.")
    @click.option("--batch-size", type=click.IntRange(1, MAX_BATCH_SIZE), default=32, show_default=True)
    @functools.wraps(f)
    def wrapper(*args, model_name, device, threads, batch_size, rotations=1, **kwargs):
        kwargs["model"] = load_model(model_name, device=device, threads=threads, batch_size=batch_size,
                                     rotations=rotations)
        return f(*args, **kwargs)
    return wrapper


def read_options(f):
    """--bands/--stretch/--zero-invalid/--max-invalid -> ``scene_options`` and ``max_invalid``."""
    @click.option("--bands", callback=_parse_bands, default=None, metavar="B1[,B2,B3]",
                  help="1-based bands to use as R,G,B (one band is replicated), e.g. 3,2,1 for blue,green,red files.")
    @click.option("--stretch", type=click.Choice(STRETCHES), default="auto", show_default=True,
                  help="auto: per-scene 2-98% percentile stretch for non-8-bit data, none for 8-bit.")
    @click.option("--zero-invalid", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
                  help="Treat pixels that are 0 in all bands as invalid (auto: when no nodata/mask is declared).")
    @click.option("--max-invalid", type=FiniteFloatRange(0, 1), default=0.5, show_default=True,
                  help="Skip tiles (windows) with more than this fraction of invalid pixels.")
    @functools.wraps(f)
    def wrapper(*args, bands, stretch, zero_invalid, max_invalid, **kwargs):
        zero = {"auto": "auto", "yes": True, "no": False}[zero_invalid]
        kwargs["scene_options"] = dict(bands=bands, stretch=stretch, zero_invalid=zero)
        kwargs["max_invalid"] = max_invalid
        return f(*args, **kwargs)
    return wrapper


def tiling_options(f):
    """Tile size/overlap/edge (-> ``tile``) plus the read options (-> ``scene_options``, ``max_invalid``)."""
    @click.option("--tile-size", type=click.IntRange(min=1), default=None,
                  help="Tile size in pixels (default: the model's input size).")
    @click.option("--tile-size-m", type=FiniteFloatRange(min=0, min_open=True), default=None,
                  help="Tile size in metres on the ground (projected or geographic CRS).")
    @click.option("--overlap", type=FiniteFloatRange(0, 1, max_open=True), default=0.0, show_default=True,
                  help="Overlap between neighbouring tiles, as a fraction of the tile.")
    @click.option("--edge", type=click.Choice(EDGE_POLICIES), default="shift", show_default=True,
                  help="Last row/column: shift (moved back inside: the whole scene is covered), pad (partial "
                       "tile, the part outside counts as invalid), or drop (the strip is left out).")
    @read_options
    @functools.wraps(f)
    def wrapper(*args, tile_size, tile_size_m, overlap, edge, **kwargs):
        if tile_size is not None and tile_size_m is not None:
            raise click.UsageError("give --tile-size or --tile-size-m, not both")
        kwargs["tile"] = TileSpec(size_px=tile_size, size_m=tile_size_m, overlap=overlap, edge=edge)
        return f(*args, **kwargs)
    return wrapper


def parse_floats(ctx, param, value):
    if value is None:
        return None
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not values or any(not (0 < v < math.inf) for v in values):  # NaN fails the comparison too
        raise click.BadParameter(f"expected positive finite numbers, got {value!r}")
    return values


def scales_options(f):
    """--scales (pixels) / --scales-m (metres): several tile sizes -> ``scales`` (list of TileSpec).

    Must be applied below ``tiling_options`` (which runs first and provides ``tile``: overlap, edge).
    """
    @click.option("--scales", "scales_px", callback=parse_floats, default=None, metavar="PX[,PX...]",
                  help="Tile sizes in pixels, e.g. 224,448 (default: the --tile-size/--tile-size-m tile).")
    @click.option("--scales-m", callback=parse_floats, default=None, metavar="M[,M...]",
                  help="Tile sizes in metres, e.g. 500,1000.")
    @functools.wraps(f)
    def wrapper(*args, scales_px, scales_m, tile, **kwargs):
        kwargs["tile"] = tile
        if scales_px and scales_m:
            raise click.UsageError("give --scales or --scales-m, not both")
        if scales_px:
            if any(v < 1 or v != int(v) for v in scales_px):  # never rounded: 0.4 px would become 0, 224.6 px 225
                raise click.BadParameter(f"tile sizes in pixels are whole numbers >= 1, got "
                                         f"{','.join(f'{v:g}' for v in scales_px)}", param_hint="'--scales'")
            kwargs["scales"] = [TileSpec(size_px=int(v), overlap=tile.overlap, edge=tile.edge) for v in scales_px]
        elif scales_m:
            kwargs["scales"] = [TileSpec(size_m=v, overlap=tile.overlap, edge=tile.edge) for v in scales_m]
        else:
            kwargs["scales"] = [tile]
        return f(*args, **kwargs)
    return wrapper


class ProgressBar:
    """A tqdm bar on stderr driven by the core's (done, total) callbacks; silent with --quiet."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit="tile", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
