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

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.servers import ChildServer
from support.servers import PahoFactory as PahoFactory  # the tests import it from here
from support.servers import free_port as free_port  # and this
from support.servers import paho_factory as paho_factory  # a fixture of these tests

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto(ChildServer):
    """One mosquitto process running `conf`."""

    def __init__(self, port: int, conf: Path, log: Path) -> None:
        super().__init__(port, log)
        self.conf = conf

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.conf)]

    def start(self) -> Mosquitto:
        super().start()
        return self

    def restart(self) -> Mosquitto:
        """Stop it (SIGTERM: mosquitto saves its persistence file), start it again."""
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
