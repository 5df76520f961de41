"""Hydra glue shared by the entry points: config dir, run-directory stamp, per-rank log names.

Under torchrun every rank runs Hydra; `${recsys_stamp:...}` makes them agree on one run
directory: the first rank to ask writes its start time into torchrun's own store (the one at
MASTER_ADDR:MASTER_PORT) and every rank reads that value.
"""

from __future__ import annotations

import datetime
import functools
import os
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from recsys.config import register_configs

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
_STAMP_KEY = "recsys/run_stamp"


@functools.cache
def _run_start() -> datetime.datetime:
    now = datetime.datetime.now().replace(microsecond=0)
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        return now
    import torch.distributed as dist

    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    agreed = store.compare_set(f"{_STAMP_KEY}/{run_id}", "", now.isoformat()).decode()
    return datetime.datetime.fromisoformat(agreed)


def _stamp(pattern: str) -> str:
    return _run_start().strftime(pattern)


def _log_name(job: str) -> str:
    rank = int(os.environ.get("RANK", "0"))
    return f"{job}.log" if rank == 0 else f"{job}_rank{rank}.log"


def setup() -> None:
    """Register structured configs and resolvers (idempotent); quiet torchrec's deprecation
    notices about its own internals, which users cannot act on."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    register_configs()
    if not OmegaConf.has_resolver("recsys_stamp"):
        OmegaConf.register_new_resolver("recsys_stamp", _stamp)
        OmegaConf.register_new_resolver("recsys_log_name", _log_name)
