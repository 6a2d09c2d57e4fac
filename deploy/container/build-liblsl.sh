#!/usr/bin/env bash
# Build liblsl (the Lab Streaming Layer C++ library) from source and install it under PREFIX.
#
#   deploy/container/build-liblsl.sh [PREFIX]      (default /usr/local; lib/liblsl.so* and include/)
#
# Why: pylsl's wheels on PyPI bundle liblsl for Windows, macOS and Linux x86_64 only; on Linux aarch64
# (Raspberry Pi OS 64-bit, Jetson) pip installs the pure-Python wheel, which needs a liblsl on the system.
# Debian bookworm and Ubuntu 22.04 do not package liblsl. The build needs cmake, a C++ compiler, git and the
# network; liblsl bundles its Boost subset and pugixml, so nothing else. Then point pylsl at it with
# PYLSL_LIB=PREFIX/lib/liblsl.so, or run ldconfig for a PREFIX on the library path.
#
# Environment: LIBLSL_VERSION (git tag without the v, default 1.17.5; pylsl 1.18 needs >= 1.16),
#              LIBLSL_REPO (default https://github.com/sccn/liblsl.git), JOBS (default: all CPUs).
set -euo pipefail

prefix=${1:-/usr/local}
version=${LIBLSL_VERSION:-1.17.5}
repo=${LIBLSL_REPO:-https://github.com/sccn/liblsl.git}
jobs=${JOBS:-$(nproc)}

for tool in git cmake c++; do
    command -v "$tool" >/dev/null || { echo "build-liblsl.sh: $tool is missing (apt-get install git cmake g++)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git -c advice.detachedHead=false clone --quiet --depth 1 --branch "v$version" "$repo" "$work/liblsl"
# LSL_UNIXFOLDERS: lib/ and include/ directly under PREFIX; no unit tests or examples.
cmake -S "$work/liblsl" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DLSL_UNIXFOLDERS=ON -DLSL_BUILD_EXAMPLES=OFF -DLSL_UNITTESTS=OFF
cmake --build "$work/build" --parallel "$jobs"
cmake --install "$work/build"
echo "build-liblsl.sh: liblsl $version installed in $prefix/lib"
