"""Near-duplicate images across datasets (difference hash), so test images never leak into training.

Why: public RS sets reuse the same Google Earth scenes (RSICD shares images with AID, both 30 classes);
an image in our training set that is a resized copy of an evaluation image inflates every figure.
dHash: grayscale 9x8, one bit per horizontal gradient sign; resizing and JPEG re-encoding keep most bits,
so copies are within a few bits while different scenes sit near 32 of 64.

    python -m training.data.near_duplicates --a DIR_OR_LIST --b DIR_OR_LIST [--max-bits 6] [--out pairs.tsv]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def dhash(path: Path, size: int = 8) -> int:
    """64-bit difference hash of an image file (center 90 % crop, so thin borders do not matter)."""
    with Image.open(path) as im:
        im = im.convert("L")
        w, h = im.size
        im = im.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((size + 1, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def hashes(paths: Iterable[Path]) -> np.ndarray:
    return np.array([dhash(Path(p)) for p in paths], dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def near_pairs(a: np.ndarray, b: np.ndarray, max_bits: int = 6) -> list[tuple[int, int, int]]:
    """(i, j, bits) for every a[i], b[j] whose hashes differ in at most max_bits bits."""
    out = []
    for i, h in enumerate(a):
        d = _popcount(np.bitwise_xor(b, h))
        for j in np.flatnonzero(d <= max_bits):
            out.append((i, int(j), int(d[j])))
    return out


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def _main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="folder of images, or a text file with one path per line")
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--max-bits", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    def load(p: Path) -> list[Path]:
        return list_images(p) if p.is_dir() else [Path(x) for x in p.read_text().split() if x]

    pa, pb = load(args.a), load(args.b)
    pairs = near_pairs(hashes(pa), hashes(pb), args.max_bits)
    lines = [f"{pa[i]}\t{pb[j]}\t{d}" for i, j, d in pairs]
    if args.out:
        args.out.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    print(f"{len(pa)} x {len(pb)} images: {len(pairs)} pairs within {args.max_bits} bits")


if __name__ == "__main__":
    _main()
