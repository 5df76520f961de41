"""`recsys-train`: train a model from the Hydra config in conf/train.yaml."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recsys.cli.hydra_support import CONF_DIR, setup
from recsys.config import TrainConfig
from recsys.errors import RecsysError

log = logging.getLogger("recsys.train")
setup()


def run(cfg: DictConfig) -> float:
    """Train, write metrics.json; return the validation AUC (the value sweeps optimise)."""
    try:
        return _train(cfg)
    except RecsysError as e:
        log.error("%s", e)
        raise SystemExit(f"recsys-train: error: {e}") from None


def _train(cfg: DictConfig) -> float:
    from recsys.builders import build_trainer
    from recsys.distributed.env import init_distributed, shutdown_distributed

    train_cfg: TrainConfig = OmegaConf.to_object(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    d = train_cfg.dist
    env = init_distributed(d.backend, d.device, d.timeout_s)
    try:
        trainer = build_trainer(train_cfg, run_dir, env, OmegaConf.to_yaml(cfg))
        results = trainer.fit()
        results["world_size"] = env.world_size
        results["run_dir"] = str(run_dir)
        hparams = _flat_hparams(train_cfg)
        trainer.reporter.finish(results, hparams)
        if env.is_main:
            _summary(results)
        return float(results["valid"]["auc"])
    finally:
        shutdown_distributed()


def _flat_hparams(cfg: TrainConfig) -> dict[str, float | int | str | bool]:
    flat: dict[str, float | int | str | bool] = {}
    for group in ("model", "optim", "trainer"):
        for k, v in OmegaConf.to_container(OmegaConf.structured(getattr(cfg, group))).items():
            if isinstance(v, dict):
                flat.update({f"{group}.{k}.{k2}": v2 for k2, v2 in v.items() if _scalar(v2)})
            elif _scalar(v):
                flat[f"{group}.{k}"] = v
            elif isinstance(v, list):
                flat[f"{group}.{k}"] = str(v)
    flat["data.name"] = cfg.data.name
    return flat


def _scalar(v: object) -> bool:
    return isinstance(v, bool | int | float | str)


def _summary(results: dict) -> None:
    test = results["test"]
    line = f"TEST  auc {test['auc']:.4f}  NE {test['ne']:.4f}  logloss {test['logloss']:.5f}"
    if "bayes_auc" in test:
        line += (
            f"  | Bayes-optimal auc {test['bayes_auc']:.4f}  NE {test['bayes_ne']:.4f}"
            f"  | AUC gap to 0.5 closed: {100 * test['auc_gap_closed']:.1f}%"
        )
    log.info(line)
    log.info("train %.0f samples/s (data wait %.1f%%); results in %s/metrics.json",
             results["train_samples_per_s"], 100 * results["data_wait_fraction"],
             results["run_dir"])  # fmt: skip


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float:
    return run(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
