"""The real ``mqttd`` process: ready lines, serving clients, stopping on SIGTERM/SIGINT,
and the exit codes of a start that cannot work.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311, PahoClient
from mqtt_raw import RawClient, gen_publish

import mqttd

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(60)

STOP_WITHIN = 5.0  # seconds from the signal to the exit, with clients connected


def _mqttd_only(server: MqttdProcess | None = None) -> None:
    if (server is not None and server.reference) or os.environ.get("MQTTD_TEST_BROKER"):
        pytest.skip("checks mqttd's own command-line behaviour")


def test_ready_lines_name_version_and_a_connectable_port(mqttd_process: MqttdProcess) -> None:
    _mqttd_only(mqttd_process)
    assert mqttd_process.version == mqttd.__version__
    assert f"listening on mqtt://127.0.0.1:{mqttd_process.port}" in mqttd_process.stderr
    assert mqttd_process.port != 0
    stderr = mqttd_process.stderr
    assert stderr.index("mqttd ready") > stderr.rindex("listening on")  # ready comes last
    socket.create_connection((mqttd_process.host, mqttd_process.port), timeout=2).close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_and_v5_clients_get_server_shutting_down(
    mqttd_process: MqttdProcess, sig: signal.Signals
) -> None:
    server = mqttd_process
    subscriber = PahoClient(server.host, server.port, "sys-sub", protocol=V5)
    publisher = PahoClient(server.host, server.port, "sys-pub", protocol=V311)
    raw_v5 = RawClient(server.host, server.port)
    raw_v311 = RawClient(server.host, server.port)
    try:
        subscriber.connect()
        publisher.connect()
        subscriber.subscribe("system/test", 1)
        publisher.publish("system/test", b"before the signal", 1)
        assert subscriber.expect_message().payload == b"before the signal"
        raw_v5.connect("sys-raw5", proto_ver=5)
        raw_v311.connect("sys-raw311")

        start = time.monotonic()
        server.send_signal(sig)
        # 5.0: DISCONNECT 0x8B Server shutting down, then the close (5.0 4.13.2).
        raw_v5.expect_disconnect(0x8B, STOP_WITHIN)
        assert subscriber.wait_disconnected(STOP_WITHIN) == 0x8B
        assert raw_v311.expect_closed(STOP_WITHIN) == []  # 3.1.1 has no DISCONNECT to send
        code = server.proc.wait(STOP_WITHIN)
        elapsed = time.monotonic() - start
    finally:
        for client in (subscriber, publisher):
            client.close()
        raw_v5.close()
        raw_v311.close()
    assert code == 0, server.stderr
    assert elapsed < STOP_WITHIN
    assert "Traceback" not in server.stderr, server.stderr


def test_idle_broker_stops_at_once_on_sigterm(mqttd_process: MqttdProcess) -> None:
    start = time.monotonic()
    code = mqttd_process.stop(signal.SIGTERM, timeout=STOP_WITHIN)
    assert code == 0, mqttd_process.stderr
    assert time.monotonic() - start < 2.0


def test_client_that_stops_reading_does_not_hold_up_shutdown(mqttd_process: MqttdProcess) -> None:
    server = mqttd_process
    stuck = RawClient(server.host, server.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect("stuck", proto_ver=5)
    stuck.subscribe(1, "flood/#", 0, proto_ver=5)
    flooder = RawClient(server.host, server.port)
    try:
        flooder.connect("flooder")
        chunk = gen_publish("flood/x", payload=b"x" * 16_384)
        # Megabytes towards a subscriber that never reads: the broker's buffers fill up.
        flooder.sock.settimeout(2)
        sent = 0
        try:
            while sent < 8_000_000:
                flooder.send(chunk)
                sent += len(chunk)
        except OSError:  # includes the timeout: the broker paused reading us, fine
            pass
        start = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=15)
        elapsed = time.monotonic() - start
    finally:
        stuck.close()
        flooder.close()
    assert code == 0, f"mqttd was killed after ignoring SIGTERM:\n{server.stderr[-2000:]}"
    assert elapsed < 10, f"stopping took {elapsed:.1f}s"


def _run_mqttd(tmp_path: Path, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqttd", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_port_in_use_exits_1_with_a_message(mqttd_process: MqttdProcess, tmp_path: Path) -> None:
    _mqttd_only(mqttd_process)
    result = _run_mqttd(tmp_path, "--host", "127.0.0.1", "-p", str(mqttd_process.port))
    assert result.returncode == 1, result.stderr
    assert str(mqttd_process.port) in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    _mqttd_only()
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nconnect_timeout = -5\n")
    result = _run_mqttd(tmp_path, "-c", str(config), "-p", "0")
    assert result.returncode == 2, result.stderr
    assert "limits.connect_timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_flag_prints_the_version(tmp_path: Path) -> None:
    result = _run_mqttd(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mqttd {mqttd.__version__}"
