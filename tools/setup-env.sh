# Sourced by tools/demo.sh and tools/test.sh: a virtual environment in .venv with Python >= 3.11,
# installing Debian's python3-venv / python3-dev first when this machine lacks them.
set -euo pipefail

PY=${PYTHON:-python3}

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null; then
        echo "spikeline: please install: $*" >&2
        return 1
    fi
    echo "spikeline: installing $* from the distribution's packages" >&2
    if [ -z "${SPIKELINE_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        export SPIKELINE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "spikeline needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if ! "$PY" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    apt_install python3-dev
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3-venv
        "$PY" -m venv .venv
    fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
