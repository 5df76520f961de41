"""Atomic, resumable checkpoints with torch.distributed.checkpoint (DCP).

    <run>/checkpoints/step_00000500/    DCP shards of model + optimizers (every rank writes its
                                        own shards), trainer_state.json, rng_rank<r>.pt
    <run>/checkpoints/latest            name of the newest complete checkpoint

Every rank writes into a staging directory; after a barrier rank 0 renames it into place and
then rewrites `latest` (both atomic renames). A crash at any point leaves the previous
checkpoint intact and `latest` pointing at a complete one. DCP stores sharded tensors by
global offsets, so a checkpoint can be loaded at another world size.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from recsys.distributed.env import DistEnv
from recsys.errors import ConfigError
from recsys.utils.atomic import atomic_write_bytes, atomic_write_json

LATEST = "latest"
STATE_FILE = "trainer_state.json"


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class CheckpointManager:
    """Saves and finds checkpoints of one run directory."""

    def __init__(self, directory: Path, env: DistEnv, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.env = env
        self.keep = max(keep, 1)

    def save(
        self, step: int, model: nn.Module, optimizer: Any, trainer_state: dict[str, Any]
    ) -> Path:
        final = self.directory / f"step_{step:08d}"
        staging = self.directory / f".step_{step:08d}.staging"
        if self.env.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.env.barrier()
        dcp.save(
            {"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=staging
        )
        torch.save(rng_state(), staging / f"rng_rank{self.env.rank}.pt")
        if self.env.is_main:
            atomic_write_json(staging / STATE_FILE, trainer_state)
        self.env.barrier()
        if self.env.is_main:
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            atomic_write_bytes(self.directory / LATEST, final.name.encode())
            self._prune()
        self.env.barrier()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.directory.glob("step_*") if p.is_dir())
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The checkpoint `latest` names; if that one is gone, the newest complete one.

        Staging directories (a save that crashed) are never returned.
        """
        pointer = self.directory / LATEST
        if pointer.is_file():
            path = self.directory / pointer.read_text().strip()
            if (path / STATE_FILE).is_file():
                return path
        complete = sorted(p for p in self.directory.glob("step_*") if (p / STATE_FILE).is_file())
        return complete[-1] if complete else None

    def load(self, path: Path, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        """Restore model, optimizer and RNG in place; return the saved trainer state."""
        if not (path / STATE_FILE).is_file():
            raise ConfigError(f"{path} is not a complete recsys checkpoint (no {STATE_FILE})")
        state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
        check_model_matches(path, state["model"])
        dcp.load(state, checkpoint_id=path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        trainer_state = json.loads((path / STATE_FILE).read_text())
        rng_file = path / f"rng_rank{self.env.rank}.pt"
        if rng_file.is_file() and trainer_state.get("world_size") == self.env.world_size:
            set_rng_state(torch.load(rng_file, weights_only=False))
        if dist.is_initialized():
            dist.barrier()
        return trainer_state


def check_model_matches(path: Path, model_state: dict[str, Any]) -> None:
    """A clear error, before anything is loaded, when the checkpoint at `path` lacks one of the
    model's tensors or holds it in another shape (DCP would fail deep inside its load plan)."""
    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    for name, value in model_state.items():
        meta = saved.get(f"model.{name}")
        if meta is None:
            missing = sum(f"model.{n}" not in saved for n in model_state)
            legacy = any("._mlp." in k for k in saved)
            hint = (
                " It was written before recsys's own MLP module (2026-11-29), whose parameters "
                "are named `*_mlp.layers.N.*` instead of torchrec's `*_mlp._mlp.N._linear.*`."
                if legacy
                else ""
            )
            raise ConfigError(
                f"{path} does not match this model: it has no {name!r} ({missing} of the model's "
                f"{len(model_state)} tensors are missing).{hint} Resume with the model config and "
                "recsys version that wrote it, or start fresh with trainer.resume=none."
            )
        size = getattr(meta, "size", None)
        if size is not None and hasattr(value, "size") and tuple(size) != tuple(value.size()):
            raise ConfigError(
                f"{path} does not match this model: {name!r} is {tuple(size)} there and "
                f"{tuple(value.size())} here (another model config wrote it). Resume with the "
                "same model config, or start fresh with trainer.resume=none."
            )


def resolve_resume(resume: str, manager: CheckpointManager) -> Path | None:
    """`auto`: this run's latest checkpoint if any; `none`: fresh; else a checkpoint/run dir."""
    if resume in ("none", "", "null"):
        return None
    if resume == "auto":
        return manager.latest()
    path = Path(resume).expanduser()
    if (path / STATE_FILE).is_file():
        return path
    found = CheckpointManager(path / "checkpoints", manager.env).latest()
    if found is None:
        raise ConfigError(f"trainer.resume={resume}: no complete checkpoint found there")
    return found
