"""Build hook: the pure-Python packages come from pyproject.toml; this file adds the C++ kernels.

Kernels are compiled ahead of time by `make install` (pip, no build isolation) against the venv's
torch, so a serving process never compiles anything at first call.
"""

from setuptools import setup

ext_modules: list = []
cmdclass: dict = {}
try:
    from kernels.build import kernel_extensions  # noqa: E402

    ext_modules, cmdclass = kernel_extensions()
except ImportError:  # kernels/build.py not present yet
    pass

setup(ext_modules=ext_modules, cmdclass=cmdclass)
