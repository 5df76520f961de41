"""`recsys-train` under torchrun with 2 ranks: one Hydra run directory for both ranks (rank 0
writes metrics and TensorBoard, each rank its own log), and a resume from a 2-rank checkpoint at
the same world size that ends exactly like the uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli, tiny_overrides

pytestmark = pytest.mark.dist

STEPS = 20


def _recsys_train_2_ranks(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
           "-m", "recsys.train", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _args(data_root: Path) -> list[str]:
    return [*tiny_overrides(data_root), f"trainer.max_steps={STEPS}", "trainer.checkpoint_every=10",
            "trainer.batch_size=256", "trainer.eval_batch_size=2048",
            "trainer.log_every=25"]  # fmt: skip  # one logging window: it spans the checkpoint


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, run directory) of an uninterrupted 2-rank run in Hydra's default directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    data_root = cwd / "data"
    _recsys_train_2_ranks(cwd, *_args(data_root))
    runs = [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs  # both ranks agreed on one stamped directory
    return data_root, runs[0]


def test_one_run_directory_for_all_ranks(straight_run):
    _, run = straight_run
    assert (run / "train.log").is_file() and (run / "train_rank1.log").is_file()
    assert "TEST  auc" in (run / "train.log").read_text()  # rank 0 reports
    assert "TEST  auc" not in (run / "train_rank1.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1  # one writer pid: rank 0
    assert (run / "sharding_plan.txt").read_text().strip()
    assert (run / ".hydra" / "config.yaml").is_file()
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert checkpoints == ["step_00000010", "step_00000020"]
    assert not list((run / "checkpoints").glob(".*staging"))
    for step in checkpoints:  # every rank saved its RNG state
        assert {p.name for p in (run / "checkpoints" / step).glob("rng_rank*.pt")} == {
            "rng_rank0.pt", "rng_rank1.pt"}  # fmt: skip


def test_resume_from_two_rank_checkpoint_matches_uninterrupted(straight_run, tmp_path):
    data_root, straight = straight_run
    resumed = tmp_path / "resumed"
    checkpoint = straight / "checkpoints" / "step_00000010"
    _recsys_train_2_ranks(tmp_path, *_args(data_root), f"trainer.resume={checkpoint}",
                          f"hydra.run.dir={resumed}")  # fmt: skip
    assert f"resuming from {checkpoint}" in (resumed / "train.log").read_text()
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert b["steps"] == a["steps"] == STEPS
    assert b["final_train_loss"] == a["final_train_loss"]
    for split in ("valid", "test"):
        for key in ("auc", "logloss", "ne", "calibration", "accuracy"):
            assert b[split][key] == a[split][key], (split, key)


def test_two_rank_checkpoint_continues_in_one_process(straight_run, tmp_path):
    """Resharded resume at another world size: 1 process with the same global batch (2 x 256)
    continues the 2-rank run from its step-10 checkpoint and ends where the 2 ranks ended,
    up to float summation order (gradients averaged by DDP vs one batch mean)."""
    data_root, straight = straight_run
    one = tmp_path / "one"
    checkpoint = straight / "checkpoints" / "step_00000010"
    run_cli([*_args(data_root), "trainer.batch_size=512", f"trainer.resume={checkpoint}",
             f"hydra.run.dir={one}"], tmp_path)  # fmt: skip
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((one / "metrics.json").read_text())
    assert b["steps"] == STEPS and b["world_size"] == 1
    assert b["final_train_loss"] == pytest.approx(a["final_train_loss"], rel=1e-5)
    for split in ("valid", "test"):
        for key in ("auc", "logloss", "ne", "calibration"):
            assert b[split][key] == pytest.approx(a[split][key], rel=1e-5), (split, key)
