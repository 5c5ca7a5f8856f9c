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
# Reinstall only when what the install builds changed since the last one: pyproject.toml,
# setup.py, or the codec's source (setup.py compiles mqttd/protocol in place).
if [ ! -f "$stamp" ] || [ -n "$(find "$ROOT/pyproject.toml" "$ROOT/setup.py" \
        "$ROOT/mqttd/protocol" \( -name '*.py' -o -name '*.toml' \) -newer "$stamp" -print -quit)" ]; then
    "$VENV/bin/python" -m pip install -q -e "$ROOT${want:+[$want]}"
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
