"""Two ranks under torchrun (gloo, CPU) against one process: same training, same metrics, a dead
rank fails the job fast, and a 2-rank checkpoint reloads in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, tiny_overrides
from tests.distributed.steps_worker import config, predict

pytestmark = pytest.mark.dist

WORKERS = Path(__file__).resolve().parent
STEPS = 8
GLOBAL_BATCH = 128


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(nproc: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def train(data: Path, out: Path, nproc: int, sharding: str, optim: str = "sgd") -> Path:
    torchrun(nproc, str(WORKERS / "steps_worker.py"), "--data", str(data), "--out", str(out),
             "--batch", str(GLOBAL_BATCH // nproc), "--steps", str(STEPS),
             "--sharding", sharding, "--optim", optim)  # fmt: skip
    return out


def one_process_trainer(data: Path, run: Path, dist_env):
    """A world-size-1 trainer with the workers' config (table-wise: one full shard per table)."""
    import argparse

    from recsys.builders import build_trainer

    args = argparse.Namespace(data=str(data), out=str(run), sharding="table_wise", optim="sgd",
                              batch=GLOBAL_BATCH, steps=STEPS)  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    return build_trainer(config(args), run, dist_env, config_yaml="")


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a plain tensor (sharded tables assembled from their local shards)."""
    out = {}
    for key, value in model.state_dict().items():
        if hasattr(value, "local_shards"):
            full = torch.zeros(value.size())
            for shard in value.local_shards():
                (r, c), (h, w) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                full[r : r + h, c : c + w] = shard.tensor
            value = full
        out[key] = value.detach().clone()
    return out


def load_checkpoint(trainer, run: Path) -> dict[str, torch.Tensor]:
    trainer.checkpoints.load(run / "checkpoints" / "step_00000008", trainer.model,
                             trainer.optimizer)  # fmt: skip
    return full_state(trainer.model)


@pytest.fixture(scope="module")
def one_rank(tiny_dataset, tmp_path_factory):
    directory, _ = tiny_dataset
    return train(directory, tmp_path_factory.mktemp("one") / "run", 1, "table_wise")


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
def test_two_ranks_train_like_one_process(sharding, one_rank, tiny_dataset, tmp_path, dist_env):
    directory, _ = tiny_dataset
    two = train(directory, tmp_path / "two", 2, sharding)
    losses_1 = json.loads((one_rank / "losses.json").read_text())["losses"]
    losses_2 = json.loads((two / "losses.json").read_text())["losses"]
    assert len(losses_1) == len(losses_2) == STEPS
    assert losses_2 == pytest.approx(losses_1, rel=1e-5)
    assert losses_1[-1] < losses_1[0] - 0.05  # it did learn

    trainer = one_process_trainer(directory, tmp_path / "load", dist_env)
    params_1 = load_checkpoint(trainer, one_rank)
    params_2 = load_checkpoint(trainer, two)  # saved by 2 ranks, loaded by 1: resharded by DCP
    assert params_1.keys() == params_2.keys()
    tables = [k for k in params_1 if "embedding_bags" in k]
    assert len(tables) == 26
    for key in params_1:
        torch.testing.assert_close(params_2[key], params_1[key], rtol=1e-4, atol=1e-5, msg=key)


def test_two_rank_checkpoint_gives_same_predictions_in_one_process(tiny_dataset, tmp_path,
                                                                   dist_env):  # fmt: skip
    directory, _ = tiny_dataset
    two = train(directory, tmp_path / "two", 2, "table_wise", optim="default")
    trainer = one_process_trainer(directory, tmp_path / "load", dist_env)
    before = predict(trainer.model, str(directory))
    load_checkpoint(trainer, two)
    after = predict(trainer.model, str(directory))
    expected = torch.load(two / "predictions.pt")
    assert not torch.allclose(before, expected, atol=1e-3)  # loading changed the model
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-6)


def test_metrics_over_two_ranks_equal_one_process(tmp_path):
    torchrun(1, str(WORKERS / "metrics_worker.py"), str(tmp_path / "one.json"))
    torchrun(2, str(WORKERS / "metrics_worker.py"), str(tmp_path / "two.json"))
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one["rows"] == two["rows"] == 10_001
    for key in ("auc", "logloss", "ne", "calibration", "accuracy", "bayes_auc"):
        assert two[key] == pytest.approx(one[key], rel=1e-12, abs=1e-12), key


def _rank_pid(marker: str, rank: int) -> int | None:
    """PID of the worker of rank `rank` of the job whose environment holds `marker`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def test_dead_rank_fails_fast_then_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *tiny_overrides(tmp_path / "data"),
        "trainer.max_steps=60",
        "trainer.checkpoint_every=10",
        "trainer.batch_size=256",
        f"hydra.run.dir={run_dir}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:0",
        "-m",
        "recsys.train",
        *args,
    ]
    marker = f"RECSYS_TEST_JOB={run_dir}"
    env = _env() | {"RECSYS_TEST_JOB": str(run_dir)}
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not latest.exists():
        assert job.poll() is None, job.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    pid = _rank_pid(marker, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = job.communicate(timeout=60)  # torchrun must notice and stop the job
    assert job.returncode != 0
    assert time.monotonic() - killed_at < 60
    assert "Signal 9" in stderr or "SIGKILL" in stderr or "exitcode" in stderr, stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()

    resumed = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                             timeout=240)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["world_size"] == 2
    assert "resuming from" in (run_dir / "train.log").read_text()
