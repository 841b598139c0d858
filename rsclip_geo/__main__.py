"""``python -m rsclip_geo``: the ``rsclip-geo`` command through a given interpreter (a venv whose scripts folder is
not on PATH, or one that is not this checkout's ``.venv``)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="rsclip-geo")
