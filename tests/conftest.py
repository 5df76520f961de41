"""Shared fixtures: a tiny synthetic data set, a one-process group, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from recsys.config import SyntheticConfig

REPO = Path(__file__).resolve().parents[1]

TINY = SyntheticConfig(
    rows_train=40_000, rows_valid=8_000, rows_test=8_000, cardinality_scale=0.0002,
    chunk_rows=10_000, rows_per_file=16_384, seed=7,
)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_config() -> SyntheticConfig:
    return replace(TINY)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_config: SyntheticConfig):
    """(directory, manifest) of a small generated data set, shared by the session."""
    from recsys.data.synthetic import generate

    directory = tmp_path_factory.mktemp("tiny") / "synthetic"
    return directory, generate(tiny_config, directory)


@pytest.fixture(scope="session")
def dist_env():
    """A gloo process group of one, as `recsys-train` makes without torchrun."""
    from recsys.distributed.env import init_distributed

    return init_distributed("gloo", "cpu", 60)


def tiny_overrides(data_root: Path) -> list[str]:
    """Hydra overrides that shrink the default job to seconds."""
    return [
        f"data.root={data_root}",
        "data.synthetic.rows_train=40000",
        "data.synthetic.rows_valid=8000",
        "data.synthetic.rows_test=8000",
        "data.synthetic.cardinality_scale=0.0002",
        "data.synthetic.chunk_rows=10000",
        "data.synthetic.rows_per_file=16384",
        "trainer.batch_size=512",
        "trainer.eval_batch_size=4096",
        "trainer.log_every=10",
        "trainer.num_threads=1",
        "optim.warmup_steps=5",
    ]


def run_cli(args: list[str], cwd: Path, timeout: float = 300, check: bool = True):
    """Run `python -m recsys.train ARGS` in a fresh interpreter and return the process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"recsys.train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc
