"""recsys's compiled C++ kernels (`kernels.ops`), for the training code that can run without them.

Training uses three of them where they are faster (the fused dot interaction, the embedding
backward, the MLP layers' ReLU and bias backward); each falls back to a PyTorch or fbgemm path
computing the same thing when the extension was not built, with one warning saying so.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

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
