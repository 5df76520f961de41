"""recsys-plan: sharding plans on paper (torchrec's planner on a described topology, no GPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from recsys.builders import build_model
from recsys.cli.hydra_support import CONF_DIR, setup
from recsys.config import ModelConfig
from recsys.data.features import DatasetManifest, SparseFeature
from recsys.data.synthetic import dense_names
from recsys.distributed.paper_plan import PlanDoesNotFit, plan_on_paper
from recsys.distributed.sharding import planner_constraints
from recsys.distributed.topology import HostSpec
from recsys.training.optim import attach_embedding_optimizer

REPO = Path(__file__).resolve().parents[2]
GPU_TYPES = ["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"]


def _model(sizes: list[int], dim: int, optimizer: str = "rowwise_adagrad"):
    features = [SparseFeature(f"C{i + 1}", n) for i, n in enumerate(sizes)]
    model = build_model(ModelConfig(embedding_dim=dim), DatasetManifest("t", dense_names(4),
                                                                        features, {}))  # fmt: skip
    ebc = model.embedding_bag_collection
    attach_embedding_optimizer(ebc.parameters(), optimizer, 0.05, 1e-8)
    return model, list(ebc.embedding_bag_configs())


def _spec(gpus: int, hbm_gb: float) -> HostSpec:
    return HostSpec("test_host", "cuda", gpus, hbm_gb, 64.0, 900.0, 300.0, 12.5)


@pytest.mark.parametrize("optimizer, state_bytes_per_row", [("rowwise_adagrad", 4), ("sgd", 0)])
def test_table_wise_memory_matches_hand_arithmetic(optimizer: str, state_bytes_per_row: int):
    """HBM per table-wise table = fp32 weights + optimizer state + one batch of IO buffers.

    torchrec's estimate (calculate_shard_storages) counts, per shard: the weights (rows x dim x
    4 bytes); the optimizer state as a multiple of the weights (row-wise Adagrad: 1/dim of them,
    i.e. one fp32 per row; SGD: none); and, with no pipeline, the shard's input ids (batch x
    world x pooling factor 1 x 8 bytes) plus its pooled outputs (batch x world x dim x 4).
    The dense layers and the KJT copies are not per table: they are the planner's reservation.
    """
    sizes, dim, batch, gpus = [1000, 2048, 4096], 16, 512, 2
    model, tables = _model(sizes, dim, optimizer)
    pins = {t.name: "table_wise" for t in tables}
    constraints = planner_constraints(tables, GPU_TYPES, "fused", pins)
    plan = plan_on_paper(model, tables, _spec(gpus, 1.0), 1, constraints, batch)
    io = batch * gpus * 8 + batch * gpus * dim * 4
    for table, rows in zip(plan.tables, sizes, strict=True):
        assert table.sharding_type == "table_wise" and len(table.shards) == 1
        shard = table.shards[0]
        assert (shard.rows, shard.cols) == (rows, dim)
        assert shard.hbm_bytes == rows * dim * 4 + rows * state_bytes_per_row + io
        assert shard.ddr_bytes == 0  # fused kernel on cuda: nothing in host memory
    for device in plan.devices:
        placed = [s for t in plan.tables for s in t.shards if s.rank == device.rank]
        assert device.hbm_bytes == sum(s.hbm_bytes for s in placed)
        assert device.perf_ms == pytest.approx(sum(s.perf_ms for s in placed))
        assert device.hbm_cap == 1024**3
        assert 0.15 * device.hbm_cap <= device.hbm_reserved < device.hbm_cap
    assert plan.step_ms == max(d.perf_ms for d in plan.devices) > 0


def test_row_wise_shards_split_rows_over_all_ranks():
    model, tables = _model([10_000], 8)
    constraints = planner_constraints(tables, GPU_TYPES, "fused", {tables[0].name: "row_wise"})
    plan = plan_on_paper(model, tables, _spec(4, 1.0), 2, constraints, 256)
    (table,) = plan.tables
    assert table.ranks == list(range(8))
    assert sum(s.rows for s in table.shards) == 10_000
    assert all(s.cols == 8 for s in table.shards)


def test_tables_that_cannot_fit_give_a_clear_error():
    model, tables = _model([200_000_000, 1000], 64)  # ~48 GB of weights on 2 x 1 GB
    constraints = planner_constraints(tables, GPU_TYPES, "fused", {})
    with pytest.raises(PlanDoesNotFit) as err:
        plan_on_paper(model, tables, _spec(2, 1.0), 1, constraints, 512)
    message = str(err.value)
    assert "test_host 1x2" in message and "HBM 1 GB" in message
    assert "biggest table t_C1 200,000,000 x 64" in message and "\n" not in message


def _run_plan(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli.plan", f"hydra.run.dir={cwd}/run", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_writes_one_plan_per_topology(tmp_path: Path):
    out = tmp_path / "plan.json"
    args = ["dist=big_basin", "dist.hosts=[1,2]", "data=criteo_1tb_mlperf",
            "model.embedding_dim=64", f"plan.output={out}"]  # fmt: skip
    proc = _run_plan(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["data"], report["dist"], report["embedding_dim"]) == (
        "criteo_1tb_mlperf", "big_basin", 64)  # fmt: skip
    topologies = report["topologies"]
    assert [t["world_size"] for t in topologies] == [8, 16]
    for topo in topologies:
        assert topo["fits"] and len(topo["tables"]) == 26
        assert topo["tables"][0]["rows"] == 40_000_000
        used = [0] * topo["world_size"]
        for table in topo["tables"]:
            for shard in table["shards"]:
                used[shard["rank"]] += shard["hbm_bytes"]
        assert used == [d["hbm_bytes"] for d in topo["devices"]]
        assert all(d["hbm_bytes"] + d["hbm_reserved"] <= d["hbm_cap"] for d in topo["devices"])
        assert math.isclose(topo["step_ms"], max(d["perf_ms"] for d in topo["devices"]))
    assert "big_basin 2x8" in proc.stderr + proc.stdout


def test_cli_error_when_nothing_fits(tmp_path: Path):
    args = ["dist=big_basin_p100", "dist.hosts=[1]", "data=criteo_1tb_mlperf",
            "model.embedding_dim=512", f"plan.output={tmp_path}/plan.json"]  # fmt: skip
    proc = _run_plan(args, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("recsys-plan: error: the embedding tables do not fit on "
                           "big_basin_p100 1x8")  # fmt: skip
    assert "HBM 16 GB" in last and "biggest table t_C1" in last
    assert json.loads((tmp_path / "plan.json").read_text())["topologies"][0]["fits"] is False


@pytest.mark.parametrize(
    "override, named",
    [("dist.gpus_per_hots=8", "gpus_per_hots"), ("dist=big_basin_a100", "big_basin_a100")],
)
def test_unknown_dist_option_names_it(override: str, named: str):
    setup()
    from recsys.cli import plan  # noqa: F401  (registers plan_schema)

    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(HydraException, match=named),
    ):
        compose(config_name="plan", overrides=["dist=big_basin", override])


@pytest.mark.parametrize("dist", ["big_basin", "big_basin_p100", "big_basin_h100", "cpu"])
def test_plan_config_binds(dist: str):
    setup()
    from recsys.cli import plan  # noqa: F401

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="plan", overrides=[f"dist={dist}", "data=criteo_1tb_mlperf"])
    bound = OmegaConf.to_object(cfg)
    assert bound.dist.name == dist and len(bound.data.table_sizes) == 26
    assert bound.dist.gpus_per_host == (1 if dist == "cpu" else 8)
