"""``models pull``: download a catalog checkpoint from the Hugging Face Hub and export it to the cache.

Offline use must fail in seconds, not after minutes of retries, and say what to
do by hand: the exact file URL and the exact ``rsclip-geo models export`` command.
huggingface_hub is imported lazily; torch only through rsclip_geo.export.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
from pathlib import Path
from urllib.parse import urlsplit

from ..runtime.bundle import read_bundle
from .catalog import HF_DEFAULT_ENDPOINT, CatalogEntry, bundle_dir, get_entry
from ..errors import BundleError, DownloadError, MissingDependencyError
from ..runtime.paths import cache_dir

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds for connecting / the metadata request
_TRUE = ("1", "true", "yes", "on")


def hf_endpoint() -> str:
    """The Hub endpoint in effect now ($HF_ENDPOINT, e.g. a mirror, else huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def export_command(entry: CatalogEntry, out_dir: Path, checkpoint: str | None = None, int8: bool = False) -> str:
    """The ``rsclip-geo models export`` command that turns the downloaded file into the pulled bundle."""
    ckpt = checkpoint or f"/path/to/{Path(entry.file).name}"
    parts = ["rsclip-geo", "models", "export", "--arch", entry.architecture, "--checkpoint", ckpt,
             "-o", str(out_dir), "--name", entry.name]
    if entry.activation:
        parts += ["--activation", entry.activation]
    if int8:
        parts.append("--int8")
    return " ".join(shlex.quote(p) for p in parts)


def manual_instructions(entry: CatalogEntry, out_dir: Path, int8: bool = False) -> str:
    urls = [entry.url(hf_endpoint())]
    if hf_endpoint() != HF_DEFAULT_ENDPOINT:
        urls.append(entry.url())
    return (f"Download the file by hand: {' or '.join(urls)}\n"
            f"then run: {export_command(entry, out_dir, int8=int8)}")


def _unreachable(endpoint: str, timeout: float) -> str | None:
    """Why ``endpoint`` cannot be reached (None if a TCP connection opens within ``timeout``)."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return f"HF endpoint {endpoint!r} is not a URL"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"


def download_checkpoint(entry: CatalogEntry, out_dir: Path, *, int8: bool = False,
                        timeout: float = DEFAULT_TIMEOUT) -> Path:
    """The local path of ``entry``'s checkpoint, downloading it into the user cache if needed."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise MissingDependencyError("downloading checkpoints needs huggingface_hub: "
                                     "pip install 'rsclip-geo[export]'") from exc
    hf_cache = cache_dir() / "hf"
    kwargs = dict(repo_id=entry.repo, filename=entry.file, revision=entry.revision, cache_dir=hf_cache)
    try:  # already downloaded earlier: no network at all
        return Path(hf_hub_download(**kwargs, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        pass
    endpoint = hf_endpoint()

    def fail(reason: str) -> DownloadError:
        return DownloadError(f"cannot download {entry.repo}/{entry.file} for {entry.name!r}: {reason}.\n"
                             + manual_instructions(entry, out_dir, int8))

    if _offline():
        raise fail("offline mode (HF_HUB_OFFLINE is set) and the file is not in the cache")
    reason = _unreachable(endpoint, timeout)
    if reason:
        raise fail(reason)
    try:
        return Path(hf_hub_download(**kwargs, endpoint=endpoint, etag_timeout=timeout))
    except Exception as exc:  # huggingface_hub/httpx raise many kinds
        raise fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def pull(name: str, *, int8: bool = False, overwrite: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download catalog model ``name`` and export it into the cache; return the bundle folder.

    An existing valid pulled bundle (with the same ``int8`` choice) is returned as is unless ``overwrite``.
    """
    entry = get_entry(name)
    target = bundle_dir(entry)
    if entry.kind == "shipped":
        if not (target / "model.json").is_file():
            raise BundleError(f"{target}: the default model bundle is not built in this copy of rsclip-geo "
                              "(nothing to download: it ships with the package)")
        return target
    if (target / "model.json").is_file() and not overwrite:
        try:
            existing = read_bundle(target)
        except BundleError as exc:
            raise BundleError(f"{exc}; run `rsclip-geo models pull {name} --overwrite` to rebuild it") from exc
        if bool(existing.card.get("int8")) == int8:
            log.info("%s already pulled at %s", name, target)
            return target
        log.info("%s pulled %s int8; exporting again", name, "without" if int8 else "with")
    checkpoint = download_checkpoint(entry, target, int8=int8, timeout=timeout)
    from ..export import export_checkpoint

    export_checkpoint(entry.architecture, checkpoint, target, activation=entry.activation or None,
                      name=entry.name, int8=int8, overwrite=overwrite or target.exists(),
                      source=entry.source(), license=entry.license, preprocess=entry.preprocess(),
                      card={"title": entry.title, "homepage": entry.homepage, "citation": entry.citation})
    return target
