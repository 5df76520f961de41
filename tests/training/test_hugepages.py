"""trainer.huge_page_tables: table memory collapsed into 2 MiB pages in place, values untouched."""

from __future__ import annotations

import pytest
import torch

from recsys.utils.hugepages import (
    HUGE_PAGE_BYTES,
    _merged_ranges,
    collapse_range,
    collapse_supported,
    huge_page_bytes,
    place_tables_on_huge_pages,
)

MIB = 1 << 20


def test_collapse_keeps_values_and_reports_aligned_bytes():
    table = torch.arange(12 * MIB // 4, dtype=torch.float32)  # 12 MiB, written (pages present)
    expected = table.clone()
    done = collapse_range(table.data_ptr(), table.nbytes)
    assert done % HUGE_PAGE_BYTES == 0 and 0 <= done <= table.nbytes
    assert torch.equal(table, expected)
    if collapse_supported():
        assert done >= 8 * MIB  # at least the aligned 2 MiB ranges inside 12 MiB but the ends
        assert huge_page_bytes(table.data_ptr() + 6 * MIB, 1)[0] >= done


def test_range_shorter_than_a_huge_page_is_left_alone():
    small = torch.ones(HUGE_PAGE_BYTES // 8, dtype=torch.float32)  # 1 MiB
    assert collapse_range(small.data_ptr(), small.nbytes) == 0


def test_tables_in_one_buffer_merge_into_one_range():
    buffer = torch.zeros(6 * MIB // 4)
    tables = [buffer[: MIB // 4], buffer[MIB // 4 : 4 * MIB // 4], buffer[4 * MIB // 4 :]]
    other = torch.zeros(MIB // 4)
    ranges = _merged_ranges([*tables, other])
    start = buffer.data_ptr()
    assert (start, start + buffer.nbytes) in ranges and len(ranges) == 2


@pytest.mark.parametrize("with_optimizer_state", [False, True])
def test_sharded_model_state_is_unchanged(tiny_dataset, dist_env, with_optimizer_state):
    from recsys.builders import build_model, build_sharded_model
    from recsys.config import TrainConfig

    directory, manifest = tiny_dataset
    cfg = TrainConfig()
    cfg.model.bottom_mlp, cfg.model.top_mlp = [16], [16]
    cfg.model.embedding_dim = 256  # ~7.5k rows: ~7.7 MB of tables in one buffer
    dmp, _ = build_sharded_model(build_model(cfg.model, manifest), cfg.optim, cfg.dist,
                                 dist_env, seed=0)  # fmt: skip
    before = {k: v.local_shards()[0].tensor.clone() if hasattr(v, "local_shards") else v.clone()
              for k, v in dmp.state_dict().items()}  # fmt: skip
    state = dmp.fused_optimizer.state_dict()["state"] if with_optimizer_state else None
    moved = place_tables_on_huge_pages(dmp, state)
    assert moved % HUGE_PAGE_BYTES == 0 and moved >= 0
    if collapse_supported():
        assert moved >= 4 * MIB
    for k, v in dmp.state_dict().items():
        now = v.local_shards()[0].tensor if hasattr(v, "local_shards") else v
        assert torch.equal(now, before[k]), k


def test_memory_that_is_not_mapped_is_no_error():
    """madvise refuses an unmapped range: nothing collapsed, no crash, no exception."""
    assert collapse_range(0, 8 * MIB) == 0
    assert collapse_range(HUGE_PAGE_BYTES, -HUGE_PAGE_BYTES) == 0  # empty or negative length


def test_wrong_type_for_the_setting_is_a_config_error():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from recsys.cli.hydra_support import CONF_DIR, setup

    setup()
    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(ConfigCompositionException, match="huge_page_tables") as info,
    ):
        compose(config_name="train", overrides=["trainer.huge_page_tables=sometimes"])
    assert "not a valid bool" in str(info.value.__cause__)


def test_huge_page_bytes_of_unmapped_memory_is_nothing():
    """An address range no mapping of this process covers (page 0) counts no bytes at all."""
    assert huge_page_bytes(0, 4096) == (0, 0)
