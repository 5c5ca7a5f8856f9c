"""Process-level checks of the real ``mqttd`` command: start-up, signals, shutdown."""
