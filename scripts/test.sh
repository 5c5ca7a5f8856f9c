#!/usr/bin/env bash
# Run the whole test suite, installing first everything it needs:
# Debian packages (as root, when missing: mosquitto, nats-server, ...), the Python test
# extra, MQTT.js for Node.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# The cluster tests' backplane: NATS with JetStream (tests/cluster).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing Debian packages: ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "!! not root: tests needing ${need_apt[*]} will be skipped"
    fi
fi

# MQTT.js for the Node and browser tests, in a folder git ignores.
if command -v npm >/dev/null 2>&1 && [ ! -d .test-deps/node_modules/mqtt ]; then
    echo "== installing MQTT.js into .test-deps/"
    mkdir -p .test-deps
    npm install --silent --no-audit --no-fund --prefix .test-deps mqtt@5 >/dev/null
fi

VENV_EXTRA=test . scripts/venv.sh

echo "== ruff"
ruff check mqttd tests scripts setup.py
ruff format --check mqttd tests scripts setup.py
echo "== mypy --strict"
mypy
echo "== pytest"
exec python -m pytest "$@"
