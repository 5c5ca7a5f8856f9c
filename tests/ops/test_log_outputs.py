"""[log] file (rotated by size) and syslog, and SIGHUP naming exactly what changed."""

from __future__ import annotations

import copy
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqttd.app import App, ephemeral_config
from mqttd.ops.logging import setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_log_file_rotates_by_size(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "mqttd.log"
    setup_logging("info", "json", file=str(path), max_bytes=2048, backups=2)
    log = logging.getLogger("mqttd.test")
    for i in range(100):
        log.info("line %d", i, extra={"client_id": f"c{i}"})
    assert path.exists() and (tmp_path / "mqttd.log.1").exists()
    assert not (tmp_path / "mqttd.log.3").exists()  # only `backups` files are kept
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["message"] == "line 99" and last["client_id"] == "c99"


def test_syslog_over_udp(restore_logging: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port = receiver.getsockname()[1]
        setup_logging("info", "text", syslog=f"127.0.0.1:{port}")
        logging.getLogger("mqttd").info("hello syslog")
        datagram = receiver.recv(4096).decode()
    assert datagram.startswith("<14>")  # facility user (1), severity info (6)
    assert "mqttd[" in datagram and "mqttd: hello syslog" in datagram


def test_a_bad_syslog_address_is_an_error(restore_logging: None) -> None:
    with pytest.raises(ValueError, match=r"log\.syslog"):
        setup_logging("info", "text", syslog="nowhere")


async def test_sighup_names_each_changed_setting_with_old_and_new_values(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="mqttd")
    config = ephemeral_config()
    config.sys.interval = 0
    app = App(config)
    await app.start()
    try:
        new = copy.deepcopy(app.config)
        new.dead_letter.max_rate = 5.0
        new.limits.max_connections = 10
        new.bridge = []
        changes = app.reload(new)
    finally:
        await app.stop()
    assert "dead_letter.max_rate 100.0 -> 5.0" in changes
    assert "limits.max_connections 0 -> 10 (applied at the next start)" in changes
    assert "reloaded: dead_letter.max_rate 100.0 -> 5.0" in caplog.text
    assert "applied at the next start: limits.max_connections 0 -> 10" in caplog.text
