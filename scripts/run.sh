#!/usr/bin/env bash
# Start mqttd with embedded defaults (or the arguments given), installing it first.
set -euo pipefail
. "$(dirname "$0")/venv.sh"
cd "$ROOT"
exec mqttd "$@"
