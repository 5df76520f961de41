"""A run killed with SIGKILL and resumed with trainer.resume=auto ends exactly like an
uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli, tiny_overrides

STEPS = 150


def _args(data_root: Path, run_dir: Path) -> list[str]:
    return [*tiny_overrides(data_root), f"trainer.max_steps={STEPS}", "trainer.checkpoint_every=20",
            "trainer.log_every=10", f"hydra.run.dir={run_dir}"]  # fmt: skip


def _kill_after_first_checkpoint(args: list[str], run_dir: Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "recsys.train", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not latest.exists():
        assert proc.poll() is None, "run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    data_root = tmp_path / "data"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli(_args(data_root, straight), tmp_path)
    _kill_after_first_checkpoint(_args(data_root, killed), killed, tmp_path)
    assert not (killed / "metrics.json").exists(), "the run was not killed mid-way"
    step_killed = int((killed / "checkpoints" / "latest").read_text().split("_")[1])
    assert 0 < step_killed < STEPS
    run_cli(_args(data_root, killed), tmp_path)  # trainer.resume=auto is the default
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["steps"] == a["steps"] == STEPS
    assert b["final_train_loss"] == a["final_train_loss"]
    for split in ("valid", "test"):
        for key in ("auc", "logloss", "ne", "calibration", "accuracy"):
            assert b[split][key] == a[split][key], (split, key)
    assert "resuming from" in (killed / "train.log").read_text()
