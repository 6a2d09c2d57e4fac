#!/usr/bin/env bash
# Set up spikeline in .venv and run the demo (Ctrl-C stops it). Extra arguments go to `spikeline demo`,
# e.g. `bash tools/demo.sh --duration 30` or `bash tools/demo.sh --mqtt mqtt://127.0.0.1:1883`.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup-env.sh
python -m pip install -q ".[embedded-broker]"
exec spikeline demo "$@"
