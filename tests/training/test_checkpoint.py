"""Checkpoints: atomic publication, crash leftovers ignored, exact round trip of state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys.errors import ConfigError
from recsys.training.checkpoint import LATEST, STATE_FILE, CheckpointManager, resolve_resume


class _Optim:
    """The slice of the optimizer interface the checkpoint manager uses."""

    def __init__(self, model: nn.Module) -> None:
        self.inner = torch.optim.Adam(model.parameters(), lr=0.1)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state) -> None:
        self.inner.load_state_dict(state)


def _trained(seed: int) -> tuple[nn.Module, _Optim]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    opt = _Optim(model)
    model(torch.randn(8, 4)).square().sum().backward()
    opt.inner.step()
    return model, opt


def test_round_trip_and_staging_leftovers_ignored(tmp_path, dist_env):
    manager = CheckpointManager(tmp_path / "checkpoints", dist_env, keep=2)
    model, opt = _trained(0)
    saved = manager.save(10, model, opt, {"step": 10, "world_size": 1})
    assert saved.name == "step_00000010" and (saved / STATE_FILE).is_file()
    assert (manager.directory / LATEST).read_text() == "step_00000010"

    # A save that crashed half-way leaves a staging directory: never chosen for resume.
    crashed = manager.directory / ".step_00000020.staging"
    crashed.mkdir()
    (crashed / "garbage").write_bytes(b"\0" * 16)
    assert manager.latest() == saved

    other, other_opt = _trained(1)
    assert not torch.equal(other.weight, model.weight)
    state = manager.load(manager.latest(), other, other_opt)
    assert state["step"] == 10
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(other_opt.state_dict()["state"][0]["exp_avg"], exp_avg)


def test_latest_falls_back_to_newest_complete_and_prunes(tmp_path, dist_env):
    manager = CheckpointManager(tmp_path / "checkpoints", dist_env, keep=2)
    model, opt = _trained(0)
    for step in (1, 2, 3):
        manager.save(step, model, opt, {"step": step, "world_size": 1})
    names = sorted(p.name for p in manager.directory.glob("step_*"))
    assert names == ["step_00000002", "step_00000003"]  # keep=2
    (manager.directory / LATEST).write_text("step_00000099")  # pointer to a vanished one
    assert manager.latest().name == "step_00000003"


def test_resume_errors_name_the_path(tmp_path, dist_env):
    manager = CheckpointManager(tmp_path / "checkpoints", dist_env)
    assert resolve_resume("auto", manager) is None
    assert resolve_resume("none", manager) is None
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        resolve_resume(str(tmp_path / "elsewhere"), manager)
    model, opt = _trained(0)
    with pytest.raises(ConfigError, match="not a complete recsys checkpoint"):
        manager.load(tmp_path, model, opt)


class _TorchrecNamedMLP(nn.Module):
    """Parameters named the way torchrec's MLP named them (recsys before its own MLP)."""

    def __init__(self) -> None:
        super().__init__()
        self.bottom_mlp = nn.Module()
        self.bottom_mlp._mlp = nn.Sequential(nn.Module())
        self.bottom_mlp._mlp[0]._linear = nn.Linear(4, 3)


def test_checkpoint_of_another_model_gives_a_clear_error(tmp_path, dist_env):
    from recsys.models.mlp import MLP

    manager = CheckpointManager(tmp_path / "checkpoints", dist_env)
    model, opt = _trained(0)
    saved = manager.save(1, model, opt, {"step": 1, "world_size": 1})
    wider = nn.Linear(4, 5)
    with pytest.raises(ConfigError, match=r"'weight' is \(3, 4\) there and \(5, 4\) here"):
        manager.load(saved, wider, _Optim(wider))
    nested = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match=r"it has no '0.weight' \(2 of the model's 2 tensors"):
        manager.load(saved, nested, _Optim(nested))

    old = _TorchrecNamedMLP()
    legacy = CheckpointManager(tmp_path / "legacy", dist_env).save(
        1, old, _Optim(old), {"step": 1, "world_size": 1}
    )
    new = nn.Module()
    new.bottom_mlp = MLP(4, [3])
    with pytest.raises(ConfigError, match="written before recsys's own MLP module"):
        manager.load(legacy, new, _Optim(new))
