"""Per-table pins of the sharding type (dist.pin_sharding) and of the compute kernel
(dist.pin_kernel), planned on paper for an 8-GPU host, and the errors for bad pins."""

from __future__ import annotations

import pytest

from recsys.builders import build_model
from recsys.config import ModelConfig
from recsys.data.features import DatasetManifest, SparseFeature
from recsys.data.synthetic import dense_names
from recsys.distributed.paper_plan import plan_on_paper
from recsys.distributed.sharding import planner_constraints
from recsys.distributed.topology import HostSpec
from recsys.errors import ConfigError
from recsys.training.optim import attach_embedding_optimizer

SIZES = [4_000_000, 50_000, 1_000]
DIM = 64
TYPES = ["table_wise", "row_wise", "column_wise", "table_row_wise"]
HOST = HostSpec("host", "cuda", gpus_per_host=8, hbm_gb=16.0, ddr_gb=256.0, hbm_bw_gbps=900.0,
                intra_host_bw_gbps=300.0, inter_host_bw_gbps=12.5)  # fmt: skip


def _model():
    features = [SparseFeature(f"C{i + 1}", n) for i, n in enumerate(SIZES)]
    manifest = DatasetManifest("t", dense_names(4), features, {})
    model = build_model(ModelConfig(embedding_dim=DIM), manifest)
    ebc = model.embedding_bag_collection
    attach_embedding_optimizer(ebc.parameters(), "rowwise_adagrad", 0.05, 1e-8)
    return model, list(ebc.embedding_bag_configs())


def _plan(pins: dict[str, str], kernel_pins: dict[str, str]):
    model, tables = _model()
    constraints = planner_constraints(tables, TYPES, "fused", pins, kernel_pins)
    return {t.name: t for t in plan_on_paper(model, tables, HOST, 1, constraints, 2048).tables}


def test_pinned_kernel_and_data_parallel_table():
    model, tables = _model()
    big, small = tables[0].name, tables[2].name
    plan = _plan({small: "data_parallel"}, {big: "fused_uvm_caching"})
    weights = SIZES[0] * DIM * 4
    cached = plan[big]
    assert cached.compute_kernel == "fused_uvm_caching"
    assert sum(s.ddr_bytes for s in cached.shards) >= weights  # the table lives in host memory
    assert sum(s.hbm_bytes for s in cached.shards) < weights / 2  # HBM holds a cache of it
    replicated = plan[small]
    assert (replicated.sharding_type, replicated.compute_kernel) == ("data_parallel", "dense")
    assert replicated.ranks == list(range(8))  # a full copy on every GPU
    assert all(s.rows == SIZES[2] and s.cols == DIM for s in replicated.shards)
    assert plan[tables[1].name].compute_kernel == "fused"  # unpinned: dist.compute_kernel


def test_pinned_sharding_type_is_followed():
    _, tables = _model()
    plan = _plan({tables[0].name: "column_wise", tables[1].name: "row_wise"}, {})
    assert plan[tables[0].name].sharding_type == "column_wise"
    assert plan[tables[1].name].sharding_type == "row_wise"
    assert sum(s.rows for s in plan[tables[1].name].shards) == SIZES[1]


@pytest.mark.parametrize(
    ("pins", "kernel_pins", "message"),
    [
        ({"t_C1": "rowwise"}, {}, r"dist.pin_sharding: unknown value\(s\) \['rowwise'\]"),
        ({}, {"t_C1": "uvm"}, r"dist.pin_kernel: unknown value\(s\) \['uvm'\].*fused_uvm_caching"),
        ({}, {"t_C99": "fused"}, r"dist.pin_kernel names unknown tables \['t_C99'\]"),
    ],
)
def test_bad_pins_are_config_errors(pins, kernel_pins, message):
    _, tables = _model()
    assert tables[0].name == "t_C1"
    with pytest.raises(ConfigError, match=message):
        planner_constraints(tables, TYPES, "fused", pins, kernel_pins)


def test_unknown_sharding_type_in_the_list_is_a_config_error():
    _, tables = _model()
    with pytest.raises(ConfigError, match=r"dist.sharding_types: unknown value\(s\) \['rw'\]"):
        planner_constraints(tables, ["table_wise", "rw"], "fused", {})


def test_pins_from_the_command_line(tmp_path):
    """The documented override syntax reaches the plan (a pin adds a key to a dict: `+`)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "plan.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.cli.plan", "dist=big_basin", "data=criteo_1tb_mlperf",
         "+dist.pin_sharding.t_C1=row_wise", "+dist.pin_kernel.t_C10=fused_uvm_caching",
         f"plan.output={out}", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = {t["name"]: t for t in json.loads(out.read_text())["topologies"][0]["tables"]}
    assert tables["t_C1"]["sharding_type"] == "row_wise"
    assert tables["t_C10"]["compute_kernel"] == "fused_uvm_caching"
