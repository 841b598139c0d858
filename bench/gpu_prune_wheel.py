"""Keep one GPU architecture's kernels in an onnxruntime-gpu wheel, so it travels to a GPU machine in fewer parts.

onnxruntime-gpu's CUDA provider (``libonnxruntime_providers_cuda.so``, 284 MB in 1.31.1) carries its kernels as
cubins for sm_75, 80, 86, 89, 90 and 120 in the ELF section ``.nv_fatbin``. A GPU runs only the cubins of its own
major architecture (an H100/H200 is sm_90), so bench/gpu.sh stage can zero the payloads of the others: the file
keeps its size and layout (every fatbin header stays, offsets do not move), and the zeros compress away in the
wheel. The CUDA runtime picks the cubin whose architecture matches the device, so the zeroed ones are never read;
a GPU of another architecture finds no kernel it can run and onnxruntime fails on it, so the pruned wheel is for
the named architecture only. RECORD gets the new file's hash, so pip installs the wheel as it would any other.

``--uncompressed`` writes the wheel's entries stored, not deflated (pip installs it alike): a wheel packed for
transfer by xz then compresses as its contents do, not as already-deflated bytes (bench/gpu.sh stage: 350 -> 150 MB
for onnxruntime-gpu and the runtime's wheels). ``--uncompressed`` with no ``--keep-sm`` only re-stores the wheels
given, in place.

    python bench/gpu_prune_wheel.py WHEEL --keep-sm 90 -o OUT_DIR [--uncompressed]
    python bench/gpu_prune_wheel.py --uncompressed WHEEL [WHEEL ...]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import struct
import sys
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cuda.so"


def elf_section(data: bytearray, name: str) -> tuple[int, int]:
    """(file offset, size) of a 64-bit little-endian ELF section, by name."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    str_off, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)
    for i in range(shnum):
        base = shoff + i * shentsize
        name_off, = struct.unpack_from("<I", data, base)
        end = data.index(b"\0", str_off + name_off)
        if data[str_off + name_off:end].decode() == name:
            offset, size = struct.unpack_from("<QQ", data, base + 0x18)
            return offset, size
    raise ValueError(f"no section {name!r}")


def prune_fatbin(data: bytearray, keep_sm: int) -> dict[int, int]:
    """Zero, in place, the payload of every cubin/PTX entry in ``.nv_fatbin`` whose architecture is not ``keep_sm``.
    Returns the bytes kept and zeroed per architecture. Fails if no entry of ``keep_sm`` exists."""
    offset, size = elf_section(data, ".nv_fatbin")
    end, p = offset + size, offset
    per_arch: dict[int, int] = {}
    kept = 0
    while p < end:
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, p)
        if magic != FATBIN_MAGIC:  # padding between containers
            p += 8
            continue
        q, container_end = p + header_size, p + header_size + fat_size
        while q < container_end:
            _kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", data, q)
            arch, = struct.unpack_from("<I", data, q + 28)
            start = q + entry_header
            if arch == keep_sm:
                kept += payload
            else:
                data[start:start + payload] = bytes(payload)
                per_arch[arch] = per_arch.get(arch, 0) + payload
            q = start + payload
        p = container_end
    if not kept:
        raise ValueError(f"no sm_{keep_sm} kernels in .nv_fatbin (zeroing the rest would leave none)")
    per_arch[keep_sm] = -kept
    return per_arch


def record_line(name: str, content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(content)}"


def rewrite_wheel(wheel: Path, out: Path, replace: dict[str, bytes], compression: int) -> None:
    """Copy ``wheel`` to ``out`` (through a temporary file) with the entries named in ``replace`` swapped for the
    given bytes, their RECORD lines re-hashed, and every entry written with ``compression``."""
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", compression) as dst:
        record = next((n for n in src.namelist() if n.endswith(".dist-info/RECORD")), None)
        for info in src.infolist():
            if info.filename in replace:
                data = replace[info.filename]
            elif info.filename == record:
                lines = []
                for line in src.read(record).decode().splitlines():
                    name = line.split(",")[0]
                    lines.append(record_line(name, replace[name]) if name in replace else line)
                data = ("\n".join(lines) + "\n").encode()
            else:
                data = src.read(info.filename)
            info.compress_type = compression  # after reading: read() decodes by the entry's own compression
            dst.writestr(info, data)
    tmp.replace(out)


def prune_wheel(wheel: Path, out_dir: Path, keep_sm: int, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / wheel.name
    if out.resolve() == wheel.resolve():
        raise ValueError(f"{out}: the output would overwrite the input wheel; name another folder")
    with zipfile.ZipFile(wheel) as src:
        if PROVIDER not in src.namelist():
            raise ValueError(f"{wheel}: no {PROVIDER}; is this an onnxruntime-gpu wheel?")
        lib = bytearray(src.read(PROVIDER))
    per_arch = prune_fatbin(lib, keep_sm)
    rewrite_wheel(wheel, out, {PROVIDER: bytes(lib)}, compression)
    zeroed = ", ".join(f"sm_{a} {n / 1e6:.1f} MB" for a, n in sorted(per_arch.items()) if n > 0)
    print(f"{out}: kept sm_{keep_sm} ({-per_arch[keep_sm] / 1e6:.1f} MB of kernels), zeroed {zeroed}; "
          f"{wheel.stat().st_size / 1e6:.0f} -> {out.stat().st_size / 1e6:.0f} MB")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheels", type=Path, nargs="+")
    ap.add_argument("--keep-sm", type=int, default=None, help="the GPU's architecture, e.g. 90 for H100/H200")
    ap.add_argument("-o", "--out-dir", type=Path, default=None, help="with --keep-sm: where the pruned wheel goes")
    ap.add_argument("--uncompressed", action="store_true", help="write the entries stored, not deflated")
    args = ap.parse_args(argv)
    compression = zipfile.ZIP_STORED if args.uncompressed else zipfile.ZIP_DEFLATED
    try:
        if args.keep_sm is not None:
            if len(args.wheels) != 1 or args.out_dir is None:
                ap.error("--keep-sm takes one wheel and -o OUT_DIR")
            prune_wheel(args.wheels[0], args.out_dir, args.keep_sm, compression)
        elif args.uncompressed:
            for wheel in args.wheels:
                rewrite_wheel(wheel, wheel, {}, compression)
        else:
            ap.error("nothing to do: give --keep-sm SM -o OUT_DIR, or --uncompressed")
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        print(f"gpu_prune_wheel: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
