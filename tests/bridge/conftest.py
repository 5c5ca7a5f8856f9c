"""Fixtures of the bridge tests: real mosquitto processes, paho clients, TLS files.

`mosquitto_factory(conf, port=None, persistence_dir=None)` starts Debian's mosquitto
on a free port of 127.0.0.1 (or `port`, to restart one where it was) with `conf` added
to a generated configuration, waits until it accepts connections, and kills it (its
whole process group) at teardown. Its log goes to `mosquitto-N.log` in the test's
temporary directory, shown when a start fails.

`paho_factory(port, ...)` gives connected `PahoClient`s that are closed at teardown.

`tls_files` makes a CA and a server certificate for "localhost" / 127.0.0.1 with the
openssl command line, once per session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from integration.paho_client import PahoClient

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class Mosquitto:
    """One mosquitto process."""

    port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        log = open(self.log, "ab")  # noqa: SIM115 (the child keeps it open)
        try:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own group: teardown kills exactly it
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    text = self.log.read_text()
                    raise RuntimeError(f"mosquitto did not start:\n{text}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal it (SIGTERM: mosquitto saves its persistence file) and wait."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL its process group."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def restart(self) -> Mosquitto:
        """Start again on the same port with the same configuration."""
        self.stop()
        return self.start()


MosquittoFactory = Callable[..., Mosquitto]


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Start mosquitto processes; every one is killed at teardown."""
    started: list[Mosquitto] = []

    def factory(
        conf: str = "", port: int | None = None, persistence_dir: Path | None = None
    ) -> Mosquitto:
        n = len(started)
        port = port or free_port()
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "user root",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Room for a test's whole burst while a subscriber is away.
            "max_queued_messages 10000",
        ]
        if persistence_dir is None:
            lines.append("persistence false")
        else:
            lines += ["persistence true", f"persistence_location {persistence_dir}/"]
        path = tmp_path / f"mosquitto-{n}.conf"
        path.write_text("\n".join(lines) + "\n" + conf)
        instance = Mosquitto(port, path, tmp_path / f"mosquitto-{n}.log")
        started.append(instance)
        return instance.start()

    yield factory
    for instance in started:
        instance.kill()


PahoFactory = Callable[..., PahoClient]


@pytest.fixture
def paho_factory() -> Iterator[PahoFactory]:
    """Connected paho clients: ``paho_factory(port, client_id, protocol=V311, clean=True)``."""
    clients: list[PahoClient] = []

    def factory(port: int, client_id: str = "", **kw: Any) -> PahoClient:
        client = PahoClient("127.0.0.1", port, client_id, **kw)
        clients.append(client)
        client.connect()
        return client

    yield factory
    for client in clients:
        client.close()


@dataclass(frozen=True)
class TlsFiles:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing we serve


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Certificates made on the fly with the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=mqttd test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            cwd=d,
        )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr",
        cwd=d,
    )  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
        cwd=d,
    )  # fmt: skip
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem")
