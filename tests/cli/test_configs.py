"""Every shipped config composes and binds to its typed schema (without building anything)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recsys.cli.hydra_support import CONF_DIR, setup
from recsys.config import TrainConfig

GROUPS = ("data", "model", "optim", "trainer", "dist")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


CASES = [f"{g}={o}" for g in GROUPS for o in _options(g)]
CASES += [f"+experiment={o}" for o in _options("experiment")]


@pytest.mark.parametrize("override", CASES)
def test_shipped_config_binds_to_schema(override: str):
    setup()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[override])
    bound = OmegaConf.to_object(cfg)
    assert isinstance(bound, TrainConfig)
    group, _, option = override.lstrip("+").partition("=")
    if group == "data":  # the data set's directory is <data.root>/<data.name>
        assert bound.data.name == option


def test_every_group_has_options():
    for group in GROUPS:
        assert _options(group), f"conf/{group}/ has no YAML"
