"""Build hook: the pure-Python packages come from pyproject.toml; this file adds the C++ kernels.

Kernels are compiled ahead of time by `make install` (pip, no build isolation) against the venv's
torch, so a serving process never compiles anything at first call. PEP 517 backends do not put
the project directory on sys.path, so it is added here to read kernels/build.py.
"""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels.build import kernel_extensions  # noqa: E402

ext_modules, cmdclass = kernel_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
