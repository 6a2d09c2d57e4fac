#!/usr/bin/env bash
# Set up everything the test suite needs and run all of it:
#   .venv with spikeline[dev] (Cython kernels compiled), lint (ruff, mypy, cython-lint), mosquitto, chromium and systemd-analyze
#   from the distribution's packages,
#   then the whole suite with the compiled kernels, then the kernel tests again with SPIKELINE_NO_EXT=1
#   (pure-numpy references). Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup-env.sh

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    apt_install mosquitto
fi
# The tests start their own mosquitto on a free loopback port; a packaged service is not needed.
# The operator page is tested in Debian's chromium (headless); the systemd unit with systemd-analyze.
if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi
if ! command -v systemd-analyze >/dev/null; then
    apt_install systemd
fi

python -m pip install -q -e ".[dev]"

echo "== lint: ruff, mypy (strict, on the package), cython-lint"
ruff check runtime tests tools
mypy
cython-lint ext/

# Broker and LSL tests may not skip: their resources were just installed. Tests that need the
# recordings in ../shared/data skip with a reason on a fresh clone, but never in CI.
export SPIKELINE_REQUIRE_ALL=1
if [ "${CI:-}" != "true" ] && [ ! -d ../shared/data ] && [ -z "${SPIKELINE_DATA:-}" ]; then
    export SPIKELINE_REQUIRE_DATA=0
fi

echo "== spikeline tests (compiled kernels)"
python -m pytest "$@"
echo "== kernel tests with the pure-numpy references (SPIKELINE_NO_EXT=1)"
SPIKELINE_NO_EXT=1 python -m pytest -m kernel "$@"
