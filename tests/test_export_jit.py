"""TorchScript archives are read as data: their tensors, never their code (issue 15, defect 1)."""

from __future__ import annotations

import pickle
import warnings
import zipfile

import pytest

torch = pytest.importorskip("torch")

from rsclip_geo.errors import BundleError  # noqa: E402
from rsclip_geo.export import load_checkpoint_state  # noqa: E402
from rsclip_geo.export.jit_archive import read_torchscript_state  # noqa: E402

pytestmark = pytest.mark.export


class _Block(torch.nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, bias=bias)
        self.norm = torch.nn.BatchNorm1d(3)
        self.register_buffer("scale", torch.tensor([2.0, 3.0, 4.0]))
        self.plain = torch.ones(3)  # a tensor attribute: not in state_dict()

    def forward(self, x):
        return self.norm(self.lin(x)) * self.scale + self.plain


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.Sequential(_Block(True), _Block(False))
        self.head = torch.nn.Parameter(torch.randn(3, 2).half())

    def forward(self, x):
        return self.blocks(x) @ self.head.float()


class _Payload(torch.nn.Module):
    """A module whose own __setstate__ writes a file when torch.jit.load restores it."""

    def __init__(self, target: str):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2, 2))
        self.target = target

    def forward(self, x):
        return x @ self.weight

    @torch.jit.export
    def __getstate__(self):
        return (self.target, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
        self.target = state[0]
        self.weight = state[1]
        self.training = state[2]
        torch.save(self.weight, self.target)


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation warnings
        return fn(*args)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_archive_tensors_equal_state_dict(tmp_path, how):
    torch.manual_seed(0)
    net = _Net().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_()
            m.running_var.uniform_(0.5, 2)
    if how == "script":
        module = _quiet(torch.jit.script, net)
    else:
        module = _quiet(torch.jit.trace, net, torch.randn(4, 3))
    path = tmp_path / "net.pt"
    _quiet(torch.jit.save, module, str(path))
    got = read_torchscript_state(path)
    expected = net.state_dict()
    assert sorted(got) == sorted(expected)  # params + buffers; no 'plain', no None bias
    assert "blocks.1.lin.bias" not in got and "blocks.0.plain" not in got
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    assert load_checkpoint_state(path).keys() == expected.keys()


def test_archive_with_setstate_code_is_refused_and_its_code_never_runs(tmp_path):
    target = tmp_path / "written_by_archive.bin"
    path = tmp_path / "payload.pt"
    _quiet(torch.jit.save, _quiet(torch.jit.script, _Payload(str(target))), str(path))
    assert not target.exists()
    with pytest.raises(BundleError, match=r"payload\.pt.*__setstate__.*torch\.save\(m\.state_dict\(\)"):
        load_checkpoint_state(path)
    assert not target.exists()  # torch.jit.load(path) would have written it here


def test_archive_with_foreign_globals_is_refused(tmp_path):
    src = tmp_path / "plain.pt"
    _quiet(torch.jit.save, _quiet(torch.jit.script, torch.nn.Linear(2, 2)), str(src))
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = pickle.dumps(Evil(), protocol=2) if item.filename.endswith("/data.pkl") else zin.read(item)
            zout.writestr(item, data)
    with pytest.raises(BundleError, match=r"evil\.pt.*exec.*weights-only"):
        load_checkpoint_state(path)
    assert not marker.exists()
