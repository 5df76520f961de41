"""Process-group set-up refuses a backend or device the machine cannot run, with a one-line
error before any rank starts waiting for the others."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from recsys.distributed.env import init_distributed
from recsys.errors import ConfigError
from tests.conftest import run_cli

needs_no_nccl = pytest.mark.skipif(dist.is_nccl_available(), reason="this torch has NCCL")


@pytest.mark.parametrize(
    ("backend", "device", "message"),
    [
        ("mpi", "cpu", "dist.backend must be 'gloo' or 'nccl', got 'mpi'"),
        ("gloo", "tpu", "dist.device must be 'cpu' or 'cuda', got 'tpu'"),
    ],
)
def test_unknown_backend_or_device(backend, device, message):
    with pytest.raises(ConfigError, match=message):
        init_distributed(backend, device, 10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_gpu():
    with pytest.raises(ConfigError, match="dist.device=cuda but no CUDA device is visible"):
        init_distributed("gloo", "cuda", 10)


@needs_no_nccl
def test_big_basin_on_a_cpu_machine_is_a_one_line_error(tmp_path):
    proc = run_cli(["dist=big_basin", f"hydra.run.dir={tmp_path}"], tmp_path, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "recsys-train: error: dist.backend=nccl but this torch build has no NCCL (use dist=cpu)"
    )
    assert "Traceback" not in proc.stderr
