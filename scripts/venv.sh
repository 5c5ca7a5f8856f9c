# Sourced by run.sh and test.sh: create ./.venv on first use and install mqttd into it.
# Usage: . scripts/venv.sh [extra]   (extra: "test" installs the test tools too)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
want="${1:-}"
stamp="$VENV/.installed${want:+-$want}"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q -e "$ROOT${want:+[$want]}"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
