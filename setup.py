"""Build the Cython kernels in ext/ into spikeline._ext.

Flags: -O3 with no host-specific tuning by default, so a wheel built on one Pi runs on another;
SPIKELINE_MARCH_NATIVE=1 opts into -march=native. -ffp-contract=off keeps the compiled kernels
bit-identical to the numpy references (aarch64 GCC would otherwise fuse multiply-adds).
"""

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

flags = ["-O3", "-ffp-contract=off"]
if os.environ.get("SPIKELINE_MARCH_NATIVE") == "1":
    flags.append("-march=native")

# SPIKELINE_EXT_ONLY=name[,name] builds only those modules (developing one kernel while others are in flux):
#   SPIKELINE_EXT_ONLY=neurons python setup.py build_ext --inplace
only = {n for n in os.environ.get("SPIKELINE_EXT_ONLY", "").split(",") if n}

extensions = [
    Extension(
        f"spikeline._ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        extra_compile_args=flags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
    if not only or pyx.stem in only
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    )
)
