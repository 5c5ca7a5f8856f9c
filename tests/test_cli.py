"""The `mqttd` command, run for real as `python -m mqttd` in a subprocess.

Every broker these tests start runs in its own process group in a temporary directory and
is killed at the end of its test, whatever happens.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mqttd import __version__
from mqttd.ops.logging import setup_logging

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "mqttd.toml"

READY_TIMEOUT = 20.0
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
LISTENING = re.compile(r"mqttd (\S+) listening on mqtt://([^\s:]+):(\d+)")

# MQTT 3.1.1 CONNECT (clean session, keep alive 60, empty client id) and its CONNACK.
CONNECT_311 = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
CONNACK_311 = b"\x20\x02\x00\x00"
# MQTT 5.0 CONNECT, same fields, no properties.
CONNECT_50 = b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"


def mqttd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mqttd", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mqttd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m mqttd ARGS` to completion (commands that exit by themselves)."""
    return subprocess.run(
        mqttd_command(*args),
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


class Broker:
    """A running `python -m mqttd`; stderr is collected by a thread."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            mqttd_command(*args),
            cwd=cwd,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = READY_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.1))

    def address(self) -> tuple[str, int]:
        """Wait for `mqttd ready`; (host, port) from the listening line before it."""
        self.wait_for_line(r'mqttd ready($|"})')  # a text line, or a JSON one
        match = LISTENING.search(self.wait_for_line(LISTENING.pattern))
        assert match is not None
        return match.group(2), int(match.group(3))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(5)


#: `start([...args])`: the fixture below, a Broker whose cwd defaults to tmp_path.
StartBroker = Callable[..., Broker]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartBroker]:
    """`start([...args])` runs a broker in tmp_path; all are killed at the end of the test."""
    started: list[Broker] = []

    class Started(Broker):
        def __init__(self, args: list[str], cwd: Path = tmp_path) -> None:
            super().__init__(args, cwd)
            started.append(self)

    yield Started
    for broker in started:
        broker.kill()


def mqtt_connect(host: str, port: int, connect: bytes = CONNECT_311) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(connect)
    return sock


def read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT packet (fixed header and body)."""
    head = recv_exactly(sock, 2)
    length, shift, last = head[1] & 0x7F, 7, head[1]
    header = bytearray(head)
    while last & 0x80:
        last = recv_exactly(sock, 1)[0]
        header.append(last)
        length |= (last & 0x7F) << shift
        shift += 7
    return bytes(header) + recv_exactly(sock, length)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {data!r}")
        data += chunk
    return data


# -- commands that exit by themselves --------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = mqttd("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"mqttd {__version__}\n")


def test_help_lists_every_option(tmp_path: Path) -> None:
    result = mqttd("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in (
        "-c FILE",
        "--config",
        "--host ADDR",
        "-p N",
        "--port",
        "--db PATH",
        "-v",
        "--verbose",
        "--log-format",
        "--version",
        "check-config",
        "0.0.0.0",
    ):
        assert option in result.stdout, option


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "abc"], "argument -p/--port: invalid int value: 'abc'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
        (["serve"], "invalid choice: 'serve'"),
        (["check-config"], "the following arguments are required: FILE"),
    ],
)
def test_bad_usage_exits_2_with_usage(tmp_path: Path, args: list[str], message: str) -> None:
    result = mqttd(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: mqttd" in result.stderr
    assert message in result.stderr


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    result = mqttd("check-config", str(EXAMPLE), cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{EXAMPLE}: OK\n", "")


def test_check_config_says_what_bounds_a_cluster_nodes_packets(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[cluster]\nenabled = true\nnode = "a"\n[limits]\nmax_packet_size = 2000000\n')
    result = mqttd("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ok, note = result.stdout.splitlines()
    assert ok == f"{path}: OK"
    # NATS's max_payload is known once the node connects: the rule, and the default's figure.
    assert "limits.max_packet_size (2000000 bytes) or what fits NATS's max_payload" in note
    assert "default max_payload of 1 MiB that is 1047517 bytes" in note


def test_check_config_prints_one_line_per_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[limits]\nmax_inflight_mesages = 5\nreceive_maximum = 0\n[log]\nformat = "xml"\n'
    )
    result = mqttd("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "config error: limits.max_inflight_mesages: unknown key "
        "(did you mean limits.max_inflight_messages?)",
        "config error: limits.receive_maximum: 0 is out of range (allowed: 1 to 65535)",
        'config error: log.format: "xml" is not allowed (allowed: "text", "json")',
    ]


def test_check_config_reads_the_tls_files(tmp_path: Path) -> None:
    path = tmp_path / "tls.toml"
    path.write_text('[[listeners]]\nport = 8883\n[listeners.tls]\ncertfile = "missing.crt"\n')
    result = mqttd("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "config error: listeners[0].tls: cannot load 'missing.crt': No such file or directory"
    ]


def test_check_config_reads_the_bridge_tls_files(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[[bridge]]\nname = "cloud"\naddresses = ["127.0.0.1:8883"]\n'
        '[bridge.tls]\ncafile = "missing-ca.pem"\n'
        '[[bridge.topics]]\npattern = "#"\n'
    )
    result = mqttd("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("config error: bridge") and "missing-ca.pem" in line


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = mqttd("check-config", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "config error: nope.toml: cannot read: No such file or directory\n"


def test_an_invalid_config_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[limits]\nconnect_timeout = -1\n")
    result = mqttd("-c", str(path), "-p", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "config error: limits.connect_timeout: -1 is out of range (allowed: 0.1 to 3600)\n"
    )


def test_a_bad_port_option_is_a_config_error(tmp_path: Path) -> None:
    result = mqttd("-p", "70000", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "config error: listeners[0].port: 70000 is out of range (allowed: 0 to 65535)\n"
    )


# -- a running broker ------------------------------------------------------------------------


def test_runs_answers_connect_and_stops_on_sigterm(start: StartBroker, tmp_path: Path) -> None:
    broker = start(["-p", "0", "--host", "127.0.0.1", "--db", str(tmp_path / "x.db")])
    host, port = broker.address()
    assert port != 0
    text = broker.stderr
    assert re.search(
        rf"^{TIMESTAMP} INFO mqttd: mqttd {re.escape(__version__)} listening on "
        rf"mqtt://127\.0\.0\.1:{port}$",
        text,
        re.MULTILINE,
    ), text
    assert re.search(rf"^{TIMESTAMP} INFO mqttd: mqttd ready$", text, re.MULTILINE), text
    with mqtt_connect(host, port) as sock:
        assert read_packet(sock) == CONNACK_311
    began = time.monotonic()
    assert broker.stop(signal.SIGTERM) == 0
    assert time.monotonic() - began < 8
    assert "mqttd stopped" in broker.stderr


def test_sigint_tells_mqtt5_clients_server_shutting_down(start: StartBroker) -> None:
    broker = start(["-p", "0", "--host", "127.0.0.1"])
    host, port = broker.address()
    with mqtt_connect(host, port, CONNECT_50) as sock:
        assert read_packet(sock)[0] == 0x20  # CONNACK
        broker.proc.send_signal(signal.SIGINT)
        disconnect = read_packet(sock)
        assert disconnect[0] == 0xE0 and disconnect[2] == 0x8B  # Server shutting down
        assert sock.recv(1) == b""  # then the socket is closed
    assert broker.proc.wait(10) == 0


def test_port_zero_gives_each_broker_its_own_port(start: StartBroker, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start(["-p", "0"], tmp_path / "a")
    second = start(["-p", "0"], tmp_path / "b")
    assert first.address()[1] != second.address()[1]


def test_a_port_in_use_exits_1_saying_why(start: StartBroker, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mqttd("-p", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on mqtt://127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_format(start: StartBroker) -> None:
    broker = start(["-p", "0", "--log-format", "json"])
    broker.address()
    entries = [json.loads(line) for line in broker.lines]
    ready = [e for e in entries if e["message"] == "mqttd ready"]
    assert ready and ready[0]["level"] == "INFO" and ready[0]["logger"] == "mqttd"
    assert any(
        e["message"].startswith(f"mqttd {__version__} listening on mqtt://") for e in entries
    )
    assert broker.stop() == 0


# -- logging set-up in-process ---------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_text_log_lines() -> None:
    out = io.StringIO()
    setup_logging("info", "text", out)
    logging.getLogger("mqttd").info("hello %s", "there")
    logging.getLogger("mqttd.net").debug("not shown at info")
    assert re.fullmatch(rf"{TIMESTAMP} INFO mqttd: hello there\n", out.getvalue())


@pytest.mark.usefixtures("restore_logging")
def test_json_log_lines_carry_extras_and_exceptions() -> None:
    out = io.StringIO()
    setup_logging("debug", "json", out)
    logging.getLogger("mqttd.broker").debug("client %s", "c1", extra={"client_id": "c1"})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("mqttd").exception("failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "DEBUG" and first["logger"] == "mqttd.broker"
    assert first["message"] == "client c1" and first["client_id"] == "c1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert second["message"] == "failed" and "ValueError: boom" in second["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_verbose_does_not_turn_on_library_debug_logs() -> None:
    out = io.StringIO()
    setup_logging("debug", "text", out)
    logging.getLogger("asyncio").debug("selector noise")
    logging.getLogger("mqttd.net").debug("ours")
    assert "selector noise" not in out.getvalue()
    assert "ours" in out.getvalue()


def test_check_config_reports_key_errors_and_file_errors_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "both.toml"
    path.write_text(
        "[limits]\nreceive_maximum = 0\n"
        '[auth]\npassword_file = "missing-passwd"\n'
        '[admin]\nenabled = true\napi_key_file = "missing-keys"\n'
        '[[listeners]]\nport = 8883\n[listeners.tls]\ncertfile = "missing.crt"\n'
    )
    result = mqttd("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "config error: limits.receive_maximum: 0 is out of range (allowed: 1 to 65535)"
    )
    text = "\n".join(lines)
    for named in ("missing.crt", "missing-passwd", "missing-keys"):
        assert named in text, text
