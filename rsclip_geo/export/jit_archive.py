"""Read the weights of a TorchScript archive without running any of its code.

``torch.jit.load`` compiles the archive's ``code/`` and runs its methods (a crafted
``__setstate__`` can write files during the load), so it is never used. An archive is a
zip holding ``<root>/data.pkl`` (the module tree, pickled), ``<root>/data/<key>`` (raw
tensor storages) and ``<root>/code/**.py`` (the classes, as TorchScript source). Here:

- ``data.pkl`` is read by a restricted unpickler: TorchScript classes become inert
  records of their attributes, tensors are rebuilt from the raw storages, and any other
  global is refused;
- which attributes are parameters and buffers is read from each class's
  ``__parameters__``/``__buffers__`` lines in ``code/`` as text (parsed, never executed);
- a module whose state is not a plain attribute dict (a custom ``__setstate__``) is
  refused: its weights cannot be named without running its code.
"""

from __future__ import annotations

import ast
import collections
import pickle
import re
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import BundleError
from ._deps import require_torch

_STORAGE_DTYPES = {  # torch.<Name>Storage in the pickle -> torch dtype name
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_CLASS = re.compile(r"^class\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_LIST = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$")
_SETSTATE = re.compile(r"^\s+def\s+__setstate__\s*\(")
RECIPE = ("to convert it yourself, only if you trust where it came from: "
          "python -c \"import torch; m = torch.jit.load('IN.pt', map_location='cpu'); "
          "torch.save(m.state_dict(), 'OUT.pt')\" and export OUT.pt")


class _ClassInfo:
    def __init__(self):
        self.parameters: list[str] = []
        self.buffers: list[str] = []
        self.custom_setstate = False


class _Record:
    """An inert stand-in for a TorchScript object: keeps what BUILD gives it."""

    qualname = "?"

    def __setstate__(self, state):
        self.state = state


def _root(names: list[str], path: Path) -> str:
    roots = [n[: -len("data.pkl")] for n in names if PurePosixPath(n).name == "data.pkl" and n.count("/") == 1]
    if len(roots) != 1:
        raise BundleError(f"{path}: TorchScript archive without exactly one <root>/data.pkl; {RECIPE}")
    return roots[0]


def _class_table(zf: zipfile.ZipFile, root: str, path: Path) -> dict[str, _ClassInfo]:
    """qualified class name -> parameter/buffer names and whether it defines __setstate__."""
    table: dict[str, _ClassInfo] = {}
    for name in zf.namelist():
        if not (name.startswith(root + "code/") and name.endswith(".py")):
            continue
        module = ".".join(PurePosixPath(name[len(root + "code/"):-len(".py")]).parts)
        info = None
        for line in zf.read(name).decode("utf-8", "replace").splitlines():
            m = _CLASS.match(line)
            if m:
                info = table.setdefault(f"{module}.{m.group(1)}", _ClassInfo())
                continue
            if info is None:
                continue
            m = _LIST.match(line)
            if m:
                try:
                    names = ast.literal_eval(m.group(2))
                except (ValueError, SyntaxError) as exc:
                    raise BundleError(f"{path}: unreadable {m.group(1)} line in {name} ({exc}); {RECIPE}") from exc
                setattr(info, m.group(1).strip("_"), [str(n) for n in names])
            elif _SETSTATE.match(line):
                info.custom_setstate = True
    return table


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, zf: zipfile.ZipFile, root: str, path: Path):
        super().__init__(file)
        self._zf, self._root, self._path = zf, root, path
        self._storages: dict[str, object] = {}
        self._classes: dict[str, type] = {}

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (_Record,), {"qualname": qualname})
            return self._classes[qualname]
        if module == "torch" and name in _STORAGE_DTYPES:
            return ("dtype", _STORAGE_DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise BundleError(f"{self._path}: TorchScript archive refers to {module}.{name}, which a weights-only "
                          f"reader does not allow; {RECIPE}")

    def persistent_load(self, pid):
        torch = require_torch()
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], tuple) and pid[1][0] == "dtype"):
            raise BundleError(f"{self._path}: unexpected storage reference {pid!r:.80} in a TorchScript archive")
        _, (_, dtype_name), key, _location, numel = pid
        if key not in self._storages:
            dtype = getattr(torch, dtype_name)
            member = f"{self._root}data/{key}"
            try:
                raw = bytearray(self._zf.read(member))
            except KeyError as exc:
                raise BundleError(f"{self._path}: TorchScript archive lacks {member}") from exc
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) != int(numel) * itemsize:
                raise BundleError(f"{self._path}: {member} holds {len(raw)} bytes, expected {numel} x {itemsize}")
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            self._storages[key] = flat
        return self._storages[key]

    def _rebuild_tensor(self, flat, offset, size, stride, requires_grad=False, *_hooks):
        try:
            return flat.as_strided(tuple(size), tuple(stride), int(offset))
        except (RuntimeError, TypeError) as exc:
            raise BundleError(f"{self._path}: tensor of size {size} does not fit its storage ({exc})") from exc


def _collect(obj, prefix: str, classes: dict[str, _ClassInfo], out: dict, path: Path, seen: set) -> None:
    torch = require_torch()
    if id(obj) in seen:  # a module inside itself: only a crafted archive does that
        raise BundleError(f"{path}: TorchScript module {prefix.rstrip('.')} contains itself")
    info = classes.get(obj.qualname)
    if info is None:
        raise BundleError(f"{path}: TorchScript class {obj.qualname} has no source in the archive; {RECIPE}")
    state = getattr(obj, "state", None)
    if info.custom_setstate or not isinstance(state, dict):
        raise BundleError(
            f"{path}: TorchScript module {prefix.rstrip('.') or '<root>'} ({obj.qualname}) restores itself with "
            f"its own __setstate__ code; its weights cannot be read without running that code, which is "
            f"never done; {RECIPE}")
    for name in info.parameters + info.buffers:
        value = state.get(name)
        if value is None:  # e.g. bias=None
            continue
        if not isinstance(value, torch.Tensor):
            raise BundleError(f"{path}: {prefix}{name} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    for name, value in state.items():
        if isinstance(value, _Record):
            _collect(value, f"{prefix}{name}.", classes, out, path, seen | {id(obj)})


def read_torchscript_state(path) -> dict:
    """``{name: tensor}`` of a TorchScript archive's parameters and buffers, as ``state_dict()`` names them."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = _root(names, path)
        if f"{root}byteorder" in names and zf.read(f"{root}byteorder").strip() not in (b"", b"little"):
            raise BundleError(f"{path}: big-endian TorchScript archives are not supported; {RECIPE}")
        classes = _class_table(zf, root, path)
        with zf.open(f"{root}data.pkl") as fh:
            try:
                top = _Unpickler(fh, zf, root, path).load()
            except BundleError:
                raise
            except Exception as exc:  # a damaged pickle: any of pickle's many error types
                raise BundleError(f"{path}: cannot read the TorchScript archive's data.pkl "
                                  f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(top, _Record):
            raise BundleError(f"{path}: the TorchScript archive's data.pkl does not hold a module")
        out: dict = {}
        _collect(top, "", classes, out, path, set())
    return out
