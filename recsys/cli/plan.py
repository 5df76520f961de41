"""`recsys-plan`: shard the model on paper for each topology in dist.hosts (conf/plan.yaml).

Runs torchrec's sharding planner for hosts x dist.gpus_per_host ranks of the described hardware
without any GPU or process group, prints each plan (tables, placement, memory per rank against
its caps, the planner's step estimate) and writes them all as JSON.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recsys.cli.hydra_support import CONF_DIR, setup
from recsys.config import PlanJobConfig
from recsys.errors import RecsysError

log = logging.getLogger("recsys.plan")
setup()
ConfigStore.instance().store(name="plan_schema", node=PlanJobConfig)


def run(cfg: DictConfig) -> str:
    """Plan every topology, write the JSON report; return its path."""
    try:
        return _plan(OmegaConf.to_object(cfg))
    except RecsysError as e:
        log.error("%s", e)
        raise SystemExit(f"recsys-plan: error: {e}") from None


def _plan(cfg: PlanJobConfig) -> str:
    from recsys.builders import build_model, host_spec
    from recsys.data.paper import paper_manifest
    from recsys.distributed.paper_plan import PlanDoesNotFit, plan_on_paper
    from recsys.distributed.plan_report import (
        failure_to_json,
        format_plan,
        format_summary,
        plan_to_json,
    )
    from recsys.distributed.sharding import planner_constraints
    from recsys.training.optim import attach_embedding_optimizer

    spec = host_spec(cfg.dist)
    manifest, source = paper_manifest(cfg.data)
    model = build_model(cfg.model, manifest)  # tables on the meta device: no memory used
    ebc = model.embedding_bag_collection
    e = cfg.optim.embedding
    attach_embedding_optimizer(ebc.parameters(), e.name, e.lr, e.eps)  # counts its state
    tables = list(ebc.embedding_bag_configs())
    d = cfg.dist
    constraints = planner_constraints(tables, list(d.sharding_types), d.compute_kernel,
                                      dict(d.pin_sharding), dict(d.pin_kernel))  # fmt: skip
    log.info("data=%s: %d tables from %s; model.embedding_dim=%d, optim.embedding=%s",
             cfg.data.name, len(tables), source, cfg.model.embedding_dim, e.name)  # fmt: skip
    entries, errors = [], []
    for hosts in d.hosts:
        try:
            plan = plan_on_paper(model, tables, spec, hosts, constraints, cfg.plan.batch_size,
                                 cfg.plan.hbm_reserve_fraction)  # fmt: skip
        except PlanDoesNotFit as err:
            errors.append(str(err))
            log.info("== %s: does not fit: %s", spec.label(hosts), err)
            entries.append(failure_to_json(spec.label(hosts), hosts, spec.gpus_per_host, str(err)))
            continue
        log.info("%s", format_plan(plan))
        entries.append(plan_to_json(plan))
    out = _write(cfg, spec.name, entries)
    log.info("summary:\n%s\nplans written to %s", format_summary(entries), out)
    if len(errors) == len(entries):
        raise PlanDoesNotFit(errors[-1])
    return str(out)


def _write(cfg: PlanJobConfig, dist_name: str, entries: list[dict]) -> Path:
    default = Path(HydraConfig.get().runtime.output_dir) / "plan.json"
    out = Path(cfg.plan.output).expanduser() if cfg.plan.output else default
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "data": cfg.data.name,
        "dist": dist_name,
        "embedding_dim": cfg.model.embedding_dim,
        "embedding_optimizer": cfg.optim.embedding.name,
        "batch_size_per_rank": cfg.plan.batch_size,
        "topologies": entries,
    }
    out.write_text(json.dumps(report, indent=1))
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="plan")
def _main(cfg: DictConfig) -> str:
    return run(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
