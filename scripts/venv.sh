# Sourced by run.sh and test.sh: create ./.venv on first use and install mqttd into it.
# Usage: [VENV_EXTRA=test] . scripts/venv.sh   (VENV_EXTRA=test installs the test tools too;
# a variable, not an argument: a sourced script sees its caller's arguments)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
want="${VENV_EXTRA:-}"
stamp="$VENV/.installed${want:+-$want}"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q -e "$ROOT${want:+[$want]}"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
