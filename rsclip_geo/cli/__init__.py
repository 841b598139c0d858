"""The ``rsclip-geo`` command: a thin layer over the Python API, one module per command."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import RsclipError


class _Group(click.Group):
    """Turn our own errors, and running out of memory, into one clear line on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RsclipError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except MemoryError as exc:  # nothing was written: outputs are renamed into place only when complete
            click.echo(f"Error: out of memory ({exc or 'no details'}); try a smaller --batch-size, tile or "
                       "heatmap grid, or fewer --threads", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rsclip-geo")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Search and label satellite and aerial imagery with words."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    """One module per command or group; each imports only what its command needs (never torch)."""
    from .audit import audit_command
    from .batch import batch_group
    from .count import count_command
    from .eval import eval_group
    from .heatmap import heatmap_command
    from .index import index_command
    from .models import models
    from .search import search_command
    from .segment import segment_command
    from .tile_classify import tile_classify_command

    for command in (tile_classify_command, index_command, search_command, heatmap_command, segment_command,
                    count_command,
                    audit_command, batch_group, models, eval_group):
        main.add_command(command)


_register()
