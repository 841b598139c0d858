"""training/checkpoint.py: reloads are weights-only (issue 15, defect 2), and our own checkpoints still round-trip."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "name": "x", "state_dict": {}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_training_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match=r"weights\.pt: not a training checkpoint"):
        load_checkpoint(path)


def test_save_load_round_trip_with_optimizer_and_extra(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(
        [{"params": model[0].parameters(), "lr": 1e-3}, {"params": model[1].parameters(), "lr": 5e-4,
                                                         "weight_decay": 0.0}], betas=(0.9, 0.98), eps=1e-6)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
    path = save_checkpoint(tmp_path / "checkpoint_last.pt", 2, "tiny-config", model, optimizer,
                           extra={"wise_alpha": 0.5, "wise_val_top1": {0.0: 0.81, 0.5: 0.875}})
    assert not list(tmp_path.glob("*.tmp"))
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and state["name"] == "tiny-config"
    assert state["wise_alpha"] == 0.5 and state["wise_val_top1"] == {0.0: 0.81, 0.5: 0.875}

    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    fresh.load_state_dict(state["state_dict"], strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    fresh_opt = torch.optim.AdamW(
        [{"params": fresh[0].parameters(), "lr": 0.1}, {"params": fresh[1].parameters(), "lr": 0.1}])
    fresh_opt.load_state_dict(state["optimizer"])
    got, want = fresh_opt.state_dict(), optimizer.state_dict()
    assert [g["lr"] for g in got["param_groups"]] == [1e-3, 5e-4]
    assert got["param_groups"][0]["betas"] == (0.9, 0.98)
    for pid, slots in want["state"].items():
        for name, value in slots.items():
            assert torch.equal(got["state"][pid][name], value), (pid, name)
