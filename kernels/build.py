"""Build description of the C++ kernels, used by setup.py at install time (never at import).

The extension is compiled by `pip install --no-build-isolation -e .` (the Makefile's install
step) against the venv's torch. One binary serves every x86-64 CPU: the AVX2 and AVX-512 paths
are compiled with per-function target attributes and chosen at run time by CPUID.
"""

from __future__ import annotations

from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = [
    "ops.cpp",
    "bindings.cpp",
    "dispatch.cpp",
    "memory.cpp",
    "embedding_bag_ref.cpp",
    "embedding_bag_avx2.cpp",
    "embedding_bag_avx512.cpp",
    "interaction_ops.cpp",
    "interaction_scalar.cpp",
    "interaction_avx2.cpp",
    "interaction_avx512.cpp",
    "tbe_common.cpp",
    "tbe_backward.cpp",
    "tbe_lookup.cpp",
    "tbe_forward.cpp",
    "mlp_ops.cpp",
    "mlp_scalar.cpp",
    "mlp_avx512.cpp",
    "mlp_stack.cpp",
    "dlrm_forward.cpp",
    "loss.cpp",
    "mkl_bf16.cpp",
    "fpenv.cpp",
]


def kernel_extensions() -> tuple[list, dict]:
    """(ext_modules, cmdclass) for setuptools."""
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    ext = CppExtension(
        name="kernels._C",
        sources=[f"kernels/csrc/{s}" for s in SOURCES],
        # -fopenmp: at::parallel_for expands to OpenMP pragmas in this translation unit; torch's
        # own libgomp.so.1 is already loaded, so the threads are torch's (set_num_threads holds).
        extra_compile_args=[
            "-O3",
            "-fopenmp",
            "-std=c++20",
            "-Wno-psabi",
            "-Wno-maybe-uninitialized",
        ],
        extra_link_args=["-fopenmp"],
    )
    # Ninja (when installed) compiles the sources in parallel and, in-place, incrementally.
    return [ext], {"build_ext": BuildExtension}
