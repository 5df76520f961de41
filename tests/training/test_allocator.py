"""trainer.retain_freed_memory: a freed large block stays mapped, so using it again does not
page-fault (glibc's defaults hand it back to the kernel)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

# Minor page faults of each of three rounds of malloc + write + free of one 24 MiB block, in a
# fresh process, with glibc's defaults or after retain_freed_memory(). Deterministic: plain
# malloc from one thread. (A whole training step's faults depend on thread timing and
# alignment slop; its time is measured in benchmarks/, not asserted here.)
WORKLOAD = """
import ctypes, ctypes.util, resource, sys
from recsys.utils.allocator import retain_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def round_faults(size=24 << 20):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    libc.memset(p, 1, size)
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(round_faults(), round_faults(), round_faults(), applied)
"""
PAGES = (24 << 20) // 4096


def rounds(mode: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", WORKLOAD, mode], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.split()  # fmt: skip


def test_retained_memory_is_reused_without_page_faults():
    default, retained = rounds("default"), rounds("retain")
    assert retained[3] == "True"  # glibc (this project's Linux targets)
    # First use faults in every page either way.
    assert int(default[0]) >= PAGES * 0.9 and int(retained[0]) >= PAGES * 0.9
    # glibc's defaults unmap the freed block, so the second round faults every page again;
    # retained, the block stays in the heap and the second round reuses it.
    assert int(default[1]) >= PAGES * 0.9, default
    assert int(retained[1]) < PAGES * 0.05 and int(retained[2]) < PAGES * 0.05, retained
