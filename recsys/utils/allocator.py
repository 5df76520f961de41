"""Keep freed heap memory inside the training process (glibc malloc), so steps stop page-faulting.

A training step allocates and frees the same large activations and gradients every time
(megabytes each at batch 2048). With glibc's default settings much of that memory goes back to
the kernel when freed (large blocks are mmap'd, heap tops are trimmed, thread arenas shrink), and
the next step touches it again page by page: about 1,900 minor page faults per step for the
Criteo-Kaggle-shape DLRM at batch 2048 on the 2-vCPU VM, ~2 us each. Raising the mmap and trim
thresholds (what `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` or a caching allocator like
jemalloc would give) leaves it mapped: ~40-60 faults per step (measured 2026-11-28, with the
PyTorch dot interaction; with the fused kernel the default's faults fell to 0-190 per step as
well: docs/benchmarks.md). The process keeps its peak working set, which it needs again every
step anyway.
"""

from __future__ import annotations

import ctypes
import logging

from recsys.utils.libc import c_function

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 1 << 30


def retain_freed_memory(top_pad_bytes: int = 0) -> bool:
    """Set glibc's mmap threshold to 32 MiB and its trim threshold to 1 GiB for this process
    (and, when given, grow the heap `top_pad_bytes` at a time). Returns False (and changes
    nothing) where the C library has no `mallopt` (not glibc)."""
    mallopt = c_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    if mallopt is None:
        log.debug("no glibc mallopt: allocator left as it is")
        return False
    settings = {_M_MMAP_THRESHOLD: MMAP_THRESHOLD_BYTES, _M_TRIM_THRESHOLD: TRIM_THRESHOLD_BYTES}
    if top_pad_bytes:
        settings[_M_TOP_PAD] = top_pad_bytes
    return all([bool(mallopt(param, value)) for param, value in settings.items()])
