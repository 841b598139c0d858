"""The fetched sets' manifests (``training/manifests/*.sha256``): which folder under the data root each one lists,
and a check that every listed file is there (and, with ``hash_files``, holds the listed bytes).

Why: a retrain is exact only given the same files, and the one-command recipe (training/recipe.py) runs for hours;
a missing set must be named before its first stage starts, not found when the evaluation at its end skips it.

    python -m training.data.manifests [--data DIR] [--hash]     (exit 1 when a set is incomplete or changed)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = REPO_ROOT / "training" / "manifests"
# manifest file -> the folder under the data root whose files it lists (training/DATA.md, "Fetch")
MANIFESTS = {
    "rsicd_images.sha256": "rsicd/src/datasets/RSICD/raw_dataset/RSICD_images",
    "vtrsbs_rsicd_csv.sha256": "vtrsbs",
    "vtrsbs_ucm_csv.sha256": "vtrsbs",
    "nwpu_vhr10.sha256": "nwpu_vhr10/data/NWPU_VHR",
    "ucm_images.sha256": "ucm",
    "eurosat_rgb_images.sha256": "eurosat_rgb",
    "resisc45_subset_images.sha256": "resisc45_12cls",
    "siri_whu_images.sha256": "siri_whu",
}


def data_root() -> Path:
    """$RSCLIP_DATA, or <repo>/.cache/data when it is unset (what every training config's '$RSCLIP_DATA' means)."""
    return Path(os.environ.get("RSCLIP_DATA") or REPO_ROOT / ".cache" / "data")


@dataclass
class SetCheck:
    """One manifest against the data on disk."""

    manifest: str
    folder: Path
    listed: int
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.changed

    def describe(self) -> str:
        if self.ok:
            return f"ok       {self.manifest}: {self.listed:,} files under {self.folder}"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing):,} of {self.listed:,} files missing (first: {self.missing[0]})")
        if self.changed:
            parts.append(f"{len(self.changed):,} with other bytes than listed (first: {self.changed[0]})")
        return f"PROBLEM  {self.manifest}: under {self.folder}: {'; '.join(parts)}"


def _entries(manifest: Path) -> list[tuple[str, str]]:
    """(sha256, relative path) per line of a `sha256sum` file ('HASH  path'; a '*' before the path: binary mode)."""
    out = []
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            digest, sep, rel = line.partition(" *")
        if not sep or len(digest) != 64:
            raise ValueError(f"{manifest}:{n}: not a sha256sum line: {line[:80]!r}")
        out.append((digest.lower(), rel))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sets(root: Path | None = None, hash_files: bool = False, manifest_dir: Path = MANIFEST_DIR,
               manifests: dict[str, str] | None = None) -> list[SetCheck]:
    """Every manifest checked against ``root`` (default :func:`data_root`): files present, and with ``hash_files``
    the same SHA-256 (minutes for all sets; presence alone takes a second)."""
    root = Path(root) if root is not None else data_root()
    results = []
    for name, folder in (manifests or MANIFESTS).items():
        base = root / folder
        entries = _entries(manifest_dir / name)
        check = SetCheck(name, base, len(entries))
        for digest, rel in entries:
            path = base / rel
            if not path.is_file():
                check.missing.append(rel)
            elif hash_files and _sha256(path) != digest:
                check.changed.append(rel)
        results.append(check)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data.manifests", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="the data root (default $RSCLIP_DATA or .cache/data)")
    ap.add_argument("--hash", action="store_true", help="also compare every file's SHA-256 (minutes)")
    args = ap.parse_args(argv)
    results = check_sets(args.data, hash_files=args.hash)
    for r in results:
        print(r.describe())
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
