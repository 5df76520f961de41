"""This process's C library, for the few glibc / Linux calls recsys makes through ctypes
(`mallopt`, `madvise`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def c_function(name: str, argtypes: tuple, restype: type) -> ctypes._CFuncPtr | None:
    """The C library's function `name` with its types set (errno kept for `ctypes.get_errno`),
    or None where there is no such library or function (not glibc, not Linux)."""
    try:
        fn = getattr(
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name
        )
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = list(argtypes), restype
    return fn
