"""recsys's compiled C++ kernels (`kernels.ops`), for the training code that can run without them.

Training uses three of them where they are faster (the fused dot interaction, the embedding
backward, the MLP layers' ReLU and bias backward); each falls back to a PyTorch or fbgemm path
computing the same thing when the extension was not built, with one warning saying so.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

import torch

log = logging.getLogger(__name__)


@functools.cache
def kernel_ops() -> ModuleType | None:
    """`kernels.ops` (importing it registers torch.ops.recsys_kernels.*), or None if the
    extension is not built."""
    try:
        from kernels import ops
    except ImportError as e:
        log.warning("%s; the PyTorch / fbgemm paths run instead", e)
        return None
    return ops


def flush_denormals() -> bool:
    """Subnormal floats flushed to zero (x86 FTZ + DAZ) on every thread of torch's pool, by the
    kernels' op; on the calling thread only (torch's switch) when they are not built. False
    where the CPU has no such mode."""
    ops = kernel_ops()
    if ops is not None:
        return ops.set_flush_denormal(True) > 0
    return torch.set_flush_denormal(True)
