"""`recsys-preprocess`: raw Criteo files -> a recsys Parquet data set (conf/preprocess.yaml)."""

from __future__ import annotations

import logging

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from recsys.cli.hydra_support import CONF_DIR, setup
from recsys.config import DataConfig, PreprocessJobConfig
from recsys.errors import RecsysError

log = logging.getLogger("recsys.preprocess")
setup()
ConfigStore.instance().store(name="preprocess_schema", node=PreprocessJobConfig)


def run(cfg: DictConfig) -> str:
    """Preprocess; return the data set directory. Errors end the run with a one-line message."""
    from recsys.data.registry import dataset_dir
    from recsys.preprocess.pipeline import preprocess

    data: DataConfig = OmegaConf.to_object(cfg.data)
    try:
        if data.kind != "parquet":
            raise RecsysError(f"data={data.name} is not a Parquet data set (kind={data.kind})")
        out = dataset_dir(data)
        manifest = preprocess(data.name, out, data.raw, data.preprocess)
    except RecsysError as e:
        log.error("%s", e)
        raise SystemExit(f"recsys-preprocess: error: {e}") from None
    rows = {k: v.rows for k, v in manifest.splits.items()}
    log.info("data set %s at %s: rows %s, rejected %s; train with `recsys-train data=%s`",
             data.name, out, rows, manifest.rejects or "none", data.name)  # fmt: skip
    return str(out)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="preprocess")
def _main(cfg: DictConfig) -> str:
    return run(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
