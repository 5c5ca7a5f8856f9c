"""Child servers the tests start (mosquitto, nats-server), free ports, paho clients.

`ChildServer` is what every such process needs: started in its own process group with
its output in a log file, waited for until it accepts TCP connections (the log is shown
if it never does), and killed as a group at teardown. Subclasses only say which command
to run. `paho_factory` is the fixture of connected paho clients closed at teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.paho_client import PahoClient

__all__ = ["START_TIMEOUT", "ChildServer", "PahoFactory", "free_port", "paho_factory"]

START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildServer:
    """A server process on 127.0.0.1:`port` logging to `log`; subclasses give `command()`."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        raise NotImplementedError

    def start(self) -> ChildServer:
        """Start it and wait until it accepts connections (RuntimeError with its log if not)."""
        log = open(self.log, "ab")  # noqa: SIM115 (the child keeps it open)
        try:
            self.proc = subprocess.Popen(
                self.command(),
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
                    name = Path(self.command()[0]).name
                    text = self.log.read_text()
                    raise RuntimeError(f"{name} did not start:\n{text}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal its process group and wait (SIGKILL after 10 s)."""
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
        """SIGKILL its process group and wait for it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


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
