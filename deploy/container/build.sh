#!/usr/bin/env bash
# Build spikeline (its Cython kernels compiled) into a virtual environment.
# The container files run this, and so can a Raspberry Pi or a Jetson directly (docs/install.md).
#
#   deploy/container/build.sh [SRC [PREFIX]]
#     SRC     the spikeline source tree (default: the repository this script is in); never written to
#     PREFIX  the virtual environment to create or update (default /opt/spikeline)
#
# Environment:
#   PYTHON                  interpreter the environment is made from (default python3; >= 3.11, with its headers)
#   SPIKELINE_EXTRAS        extras to install with it, e.g. "onnx,xdf" (default: none)
#   SPIKELINE_NO_DEPS=1     install spikeline alone, without its runtime dependencies (tests)
#   SPIKELINE_MARCH_NATIVE=1  compile for this very CPU (-march=native); never for an image or a wheel that
#                           another machine runs
#   SPIKELINE_EXT_ONLY=a,b  compile only these kernels (setup.py); the others fall back to numpy
#   PIP_*                   pip's own settings (PIP_NO_CACHE_DIR=1, PIP_INDEX_URL, ...)
#
# The build runs in a clean copy of SRC (no stale build/ objects, no in-place .so files), without build
# isolation: the build requirements of pyproject.toml are installed into PREFIX first, so that pip never
# pulls anything else to build. pip runs verbosely: the compiler command lines go to the output.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "${1:-$here/../..}" && pwd)
prefix=${2:-/opt/spikeline}
py=${PYTHON:-python3}

die() { echo "build.sh: $*" >&2; exit 1; }

[ -f "$src/setup.py" ] && [ -f "$src/pyproject.toml" ] || die "$src is not a spikeline source tree"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "spikeline needs Python >= 3.11; $py is $("$py" --version 2>&1) (set PYTHON=)"
"$py" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    2>/dev/null || die "Python.h not found for $py: install python3-dev (or python3.11-dev)"
command -v "${CC:-cc}" >/dev/null || die "no C compiler: install gcc"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/src" "$stage/dist"

# A clean copy of the source: tracked files and anything new, never build products or environments.
tar -C "$src" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./artifacts \
    --exclude='*.egg-info' --exclude='*.so' --exclude='./ext/*.c' --exclude='__pycache__' \
    --exclude='.*_cache' --exclude=./.hypothesis . \
    | tar -C "$stage/src" -xf -

if [ ! -x "$prefix/bin/python" ]; then
    echo "== build.sh: virtual environment $prefix ($("$py" --version 2>&1))"
    "$py" -m venv "$prefix"
fi
vpy="$prefix/bin/python"

# Build requirements, straight from pyproject.toml's [build-system]
mapfile -t build_reqs < <("$vpy" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))' "$stage/src/pyproject.toml")
echo "== build.sh: build requirements: ${build_reqs[*]}"
# pip >= 23.1 reads the metadata that setuptools >= 77 writes (the pip of Ubuntu 22.04's python3.11 is older)
"$vpy" -m pip install -q --disable-pip-version-check "pip>=23.1"
"$vpy" -m pip install -q --disable-pip-version-check "${build_reqs[@]}"

echo "== build.sh: compiling (SPIKELINE_MARCH_NATIVE=${SPIKELINE_MARCH_NATIVE:-0}" \
     "SPIKELINE_EXT_ONLY=${SPIKELINE_EXT_ONLY:-all})"
"$vpy" -m pip wheel -v --disable-pip-version-check --no-build-isolation --no-deps \
    -w "$stage/dist" "$stage/src"
wheels=("$stage"/dist/spikeline-*.whl)
[ -f "${wheels[0]}" ] || die "no wheel was built"

"$vpy" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "${wheels[0]}"
if [ "${SPIKELINE_NO_DEPS:-0}" != 1 ]; then
    req="${wheels[0]}"
    [ -z "${SPIKELINE_EXTRAS:-}" ] || req="spikeline[$SPIKELINE_EXTRAS] @ file://${wheels[0]}"
    "$vpy" -m pip install -q --disable-pip-version-check "$req"
fi

# Every compiled kernel must import here, on this machine.
"$vpy" - <<'PY'
import importlib, pkgutil
import spikeline, spikeline._ext as ext
names = [m.name for m in pkgutil.iter_modules(ext.__path__)]
for n in names:
    importlib.import_module(f"spikeline._ext.{n}")
print(f"== build.sh: spikeline {spikeline.__version__}, compiled kernels: {', '.join(names) or 'none'}")
PY
