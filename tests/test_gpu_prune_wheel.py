"""bench/gpu_prune_wheel.py on a hand-built ELF file whose .nv_fatbin holds kernels for three architectures."""

from __future__ import annotations

import importlib.util
import struct
import zipfile
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("gpu_prune_wheel",
                                               Path(__file__).resolve().parents[1] / "bench" / "gpu_prune_wheel.py")
prune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prune)

PAYLOAD = {75: b"\x75" * 40, 90: b"\x90" * 56, 120: b"\x12" * 24}


def _entry(arch: int, payload: bytes) -> bytes:
    header = struct.pack("<HHIQ", 2, 0x101, 64, len(payload)) + bytes(12) + struct.pack("<I", arch)
    return header + bytes(64 - len(header)) + payload


def _elf(archs=(75, 90, 120)) -> bytes:
    """ELF64 little-endian: null section, .shstrtab, .nv_fatbin (one container, 8 bytes of padding, a second)."""
    body = b"".join(_entry(a, PAYLOAD[a]) for a in archs)
    container = struct.pack("<IHHQ", prune.FATBIN_MAGIC, 1, 16, len(body)) + body
    second = struct.pack("<IHHQ", prune.FATBIN_MAGIC, 1, 16, len(_entry(90, PAYLOAD[90]))) + _entry(90, PAYLOAD[90])
    fatbin = container + bytes(8) + second
    names = b"\0.shstrtab\0.nv_fatbin\0"
    fat_off = 64
    str_off = fat_off + len(fatbin)
    sh_off = str_off + len(names)
    header = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, sh_off, 0, 64,
                                                                      0, 0, 64, 3, 1))
    sections = bytes(64)
    sections += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, str_off, len(names), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 11, 1, 2, 0, fat_off, len(fatbin), 0, 0, 8, 0)
    return header + fatbin + names + sections


def test_other_architectures_are_zeroed_in_place_and_the_kept_one_is_untouched():
    original = _elf()
    data = bytearray(original)
    per_arch = prune.prune_fatbin(data, 90)
    assert len(data) == len(original)  # layout kept: no offset moves
    assert per_arch == {75: 40, 120: 24, 90: -112}
    assert data.count(PAYLOAD[90]) == 2  # both sm_90 payloads (two containers) kept
    assert PAYLOAD[75] not in data and PAYLOAD[120] not in data
    assert data.count(struct.pack("<I", prune.FATBIN_MAGIC)) == 2  # headers kept
    changed = [i for i in range(len(data)) if data[i] != original[i]]
    assert len(changed) == 40 + 24  # exactly the two payloads


def test_a_wheel_without_the_kept_architecture_is_refused():
    with pytest.raises(ValueError, match="no sm_86 kernels"):
        prune.prune_fatbin(bytearray(_elf()), 86)
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF"):
        prune.prune_fatbin(bytearray(b"MZ" + bytes(100)), 90)


def test_the_pruned_wheel_has_a_matching_record(tmp_path):
    wheel = tmp_path / "in" / "onnxruntime_gpu-9.9-cp312-cp312-linux_x86_64.whl"
    wheel.parent.mkdir()
    lib = _elf()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(prune.PROVIDER, lib)
        z.writestr("onnxruntime/__init__.py", "x = 1\n")
        z.writestr("onnxruntime_gpu-9.9.dist-info/RECORD",
                   prune.record_line(prune.PROVIDER, lib) + "\n" + "onnxruntime/__init__.py,sha256=abc,6\n"
                   + "onnxruntime_gpu-9.9.dist-info/RECORD,,\n")
    out = prune.prune_wheel(wheel, tmp_path / "out", 90)
    with zipfile.ZipFile(out) as z:
        new_lib = z.read(prune.PROVIDER)
        record = z.read("onnxruntime_gpu-9.9.dist-info/RECORD").decode().splitlines()
        assert z.read("onnxruntime/__init__.py") == b"x = 1\n"
    assert new_lib != lib and len(new_lib) == len(lib)
    assert record[0] == prune.record_line(prune.PROVIDER, new_lib)
    assert record[1:] == ["onnxruntime/__init__.py,sha256=abc,6", "onnxruntime_gpu-9.9.dist-info/RECORD,,"]
    with pytest.raises(ValueError, match="overwrite the input wheel"):
        prune.prune_wheel(wheel, wheel.parent, 90)


def test_uncompressed_writes_stored_entries_with_the_same_contents(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/__init__.py", "x = 1\n" * 100)
        z.writestr("pkg-1.0.dist-info/RECORD", "pkg/__init__.py,sha256=abc,600\npkg-1.0.dist-info/RECORD,,\n")
    before = {n: zipfile.ZipFile(wheel).read(n) for n in zipfile.ZipFile(wheel).namelist()}
    assert prune.main(["--uncompressed", str(wheel)]) == 0
    with zipfile.ZipFile(wheel) as z:
        assert {i.filename: i.compress_type for i in z.infolist()} == dict.fromkeys(before, zipfile.ZIP_STORED)
        assert {n: z.read(n) for n in z.namelist()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]  # no temporary file left
