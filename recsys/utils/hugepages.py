"""Move a model's embedding tables onto transparent huge pages, in place (Linux `madvise`).

Every step reads and updates a few thousand random rows of tables that are gigabytes large
(2.2 GB for the Criteo-Kaggle shape). On 4 KiB pages nearly every such row access misses the
TLB and walks page tables that themselves no longer fit in cache; one 2 MiB page covers 512 of
them. `MADV_HUGEPAGE` marks the tables' memory for huge pages and `MADV_COLLAPSE` (Linux 6.1+)
moves the pages already written (the tables are initialized before this runs) into huge pages
right away, instead of leaving it to khugepaged's background scan. Measured on the 2-vCPU VM,
batch 2048 (docs/benchmarks.md): 1.02-1.04x on the training step. Where the kernel cannot
(THP set to `never`, an older kernel, not Linux) nothing changes: the tables stay where they
are and keep their values either way.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recsys.utils.libc import c_function

log = logging.getLogger(__name__)

HUGE_PAGE_BYTES = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h
_MADV_COLLAPSE = 25
_CHUNK_BYTES = 64 << 20  # collapsed a chunk at a time: a failure keeps what succeeded


def collapse_range(start: int, length: int) -> int:
    """Put the 2 MiB-aligned part of memory [start, start + length) on huge pages; returns the
    bytes now on them (0 where the kernel cannot)."""
    madvise = c_function("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int), ctypes.c_int)
    lo = -(-start // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    hi = (start + length) // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
    if madvise is None or hi <= lo or madvise(lo, hi - lo, _MADV_HUGEPAGE) != 0:
        return 0
    done = 0
    for at in range(lo, hi, _CHUNK_BYTES):
        size = min(_CHUNK_BYTES, hi - at)
        if madvise(at, size, _MADV_COLLAPSE) != 0:
            log.debug("MADV_COLLAPSE failed (errno %d) after %d bytes", ctypes.get_errno(), done)
            break
        done += size
    return done


def collapse_supported() -> bool:
    """Transparent huge pages not switched off, on a kernel with MADV_COLLAPSE (Linux 6.1+)."""
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if platform.system() != "Linux" or not mode.exists() or "[never]" in mode.read_text():
        return False
    version = re.match(r"(\d+)\.(\d+)", platform.release())
    return version is not None and (int(version[1]), int(version[2])) >= (6, 1)


def huge_page_bytes(start: int, length: int) -> tuple[int, int]:
    """(bytes on transparent huge pages, resident bytes) of this process's memory mappings that
    overlap [start, start + length), from /proc/self/smaps; (0, 0) without it (not Linux).
    Mappings count whole: a neighbour the kernel merged into one of them counts too."""
    return huge_page_bytes_of([(start, length)])[0]


def huge_page_bytes_of(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """huge_page_bytes of each (start, length) in `ranges`, from one read of /proc/self/smaps."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return [(0, 0)] * len(ranges)
    totals = [[0, 0] for _ in ranges]
    inside: list[int] = []
    for line in smaps.read_text().splitlines():
        if not line.strip():
            continue
        head = line.split(maxsplit=1)[0]
        if "-" in head and ":" not in head:  # a mapping's first line: "lo-hi perms ..."
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = [k for k, (start, length) in enumerate(ranges)
                      if lo < start + length and start < hi]  # fmt: skip
        elif inside and head in ("AnonHugePages:", "Rss:"):
            field, size = (0 if head == "AnonHugePages:" else 1), int(line.split()[1]) << 10
            for k in inside:
                totals[k][field] += size
    return [(huge, resident) for huge, resident in totals]  # tuples, as huge_page_bytes gives


def _cpu_tensors(values: Iterable[object]) -> Iterator[torch.Tensor]:
    """Plain CPU tensors in `values`, the local shards of sharded ones, nested dicts walked."""
    for v in values:
        if isinstance(v, ShardedTensor):
            yield from (s.tensor for s in v.local_shards() if s.tensor.device.type == "cpu")
        elif isinstance(v, torch.Tensor) and v.device.type == "cpu":
            yield v
        elif isinstance(v, dict):
            yield from _cpu_tensors(v.values())


def _merged_ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    """(start, end) address ranges of the tensors' memory, overlapping or touching ones merged
    (a table-batched module's tables lie back to back in one buffer)."""
    spans = sorted(
        (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
        for t in tensors
        if t.is_contiguous() and t.numel()
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def place_tables_on_huge_pages(model: torch.nn.Module, optimizer_state: dict | None = None) -> int:
    """Collapse the CPU memory of `model`'s state (embedding shards included) and of an
    optimizer's state (e.g. the fused embedding optimizer's row-wise Adagrad sums) into huge
    pages wherever it spans an aligned 2 MiB range (tables of one table-batched module lie back
    to back, so small tables count together). Returns the bytes collapsed."""
    tensors = list(_cpu_tensors(model.state_dict().values()))
    if optimizer_state is not None:
        tensors += _cpu_tensors(optimizer_state.values())
    ranges = [(s, e) for s, e in _merged_ranges(tensors) if e - s >= HUGE_PAGE_BYTES]
    return sum(collapse_range(start, end - start) for start, end in ranges)
