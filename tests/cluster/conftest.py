"""Fixtures of the cluster tests: a real nats-server with JetStream, mqttd nodes, paho clients.

`nats_server` starts Debian's nats-server (`-js`) on a free port of 127.0.0.1 with its
own store directory in the test's temporary directory, waits until it accepts clients,
and kills it (its whole process group) at teardown: every test has its own server.

`cluster_node(name)` starts one mqttd process joined to that server as node `name` of
cluster "t" (persistence off, fast heartbeats) and returns it once it is ready.

`paho_factory(port, client_id, ...)` gives connected `PahoClient`s closed at teardown.
`routed(publisher, topic, *subscribers)` waits until messages on `topic` cross from one
node to the others (a node's NATS subscription takes a round trip after its SUBACK).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import PahoClient
from support.servers import ChildServer
from support.servers import PahoFactory as PahoFactory  # the tests import it from here
from support.servers import free_port as free_port  # and this
from support.servers import paho_factory as paho_factory  # a fixture of these tests

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer(ChildServer):
    """One nats-server process, with JetStream (its store in `store`) unless told not to,
    and `settings` (nats-server's config file syntax) when given."""

    def __init__(
        self, port: int, store: Path, log: Path, jetstream: bool = True, settings: str = ""
    ) -> None:
        super().__init__(port, log)
        self.store = store
        self.jetstream = jetstream
        self.settings = settings

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store)]
        if self.settings:
            conf = self.store.with_suffix(".conf")
            conf.write_text(self.settings)
            cmd += ["-c", str(conf)]
        return cmd

    def start(self) -> NatsServer:
        super().start()
        return self

    def restart(self) -> NatsServer:
        """Kill it and start it again on the same port with the same store."""
        self.kill()
        return self.start()


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Start nats-server processes (JetStream unless told otherwise); all killed at teardown."""
    if not os.path.exists(NATS_SERVER):
        pytest.skip("nats-server is not installed (scripts/test.sh installs it as root)")
    started: list[NatsServer] = []

    def factory(jetstream: bool = True, settings: str = "") -> NatsServer:
        n = len(started)
        store = tmp_path / f"nats-store-{n}"
        store.mkdir()
        log = tmp_path / f"nats-server-{n}.log"
        server = NatsServer(free_port(), store, log, jetstream, settings)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.kill()


@pytest.fixture
def nats_server(nats_factory: Callable[..., NatsServer]) -> NatsServer:
    """A fresh nats-server -js on a free port, with its store in this test's tmp_path."""
    return nats_factory()


def node_toml(nats_url: str, node: str, extra: str = "", node_timeout: float = 4.0) -> str:
    """The config of node `node` of test cluster "t".

    A node whose heartbeats stall for `node_timeout` less half a heartbeat fences itself
    (closes its clients): on this shared machine the default leaves room for load; the
    node-failure tests pass a shorter one.
    """
    return f"""
[persistence]
enabled = false

[cluster]
enabled = true
name = "t"
node = "{node}"
urls = ["{nats_url}"]
heartbeat_interval = 0.5
node_timeout = {node_timeout}
{extra}
"""


NodeFactory = Callable[..., "MqttdProcess"]


@pytest.fixture
def cluster_node(nats_server: NatsServer, mqttd_factory: MqttdFactory) -> NodeFactory:
    """Start mqttd node `name` of cluster "t" on the test's nats-server."""

    def start(name: str, extra: str = "", node_timeout: float = 4.0) -> MqttdProcess:
        return mqttd_factory(config=node_toml(nats_server.url, name, extra, node_timeout))

    return start


def routed(
    publisher: PahoClient, topic: str, *subscribers: PahoClient, timeout: float = 10
) -> None:
    """Publish probes on `topic` until every one of `subscribers` got one, then drain them.

    Each subscriber must hold a subscription matching `topic` and receive nothing else
    meanwhile.
    """
    deadline = time.monotonic() + timeout
    waiting = list(subscribers)
    while waiting:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing on {topic!r} crossed the cluster within {timeout}s")
        publisher.publish(topic, b"probe")
        time.sleep(0.1)
        for subscriber in list(waiting):
            try:
                got = subscriber.expect_message(0.05)
            except AssertionError:
                continue
            assert got.payload == b"probe", got
            waiting.remove(subscriber)
    time.sleep(0.3)  # probes still on their way
    for subscriber in subscribers:
        while True:
            try:
                got = subscriber.expect_message(0.05)
            except AssertionError:
                break
            assert got.payload == b"probe", got


class NatsLink:
    """A TCP forwarder between one node and nats-server that a test cuts and heals.

    Cut, it drops every forwarded connection and closes new ones at once: to the node,
    NATS is unreachable while the other nodes still reach it (a partition). Stalled, it
    forwards nothing to the node for a while, with small socket buffers on its side: to
    nats-server the node reads too slowly (a slow consumer). With `delay`, what the node
    sends reaches nats-server `delay` seconds late (a slow link).
    """

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._open = True
        self._stalled = threading.Event()
        self._stopped = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open:
                conn.close()
                continue
            try:
                upstream = socket.socket()
                # Small, so that a stall backs up into nats-server soon.
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                upstream.settimeout(2)
                upstream.connect(("127.0.0.1", self.target_port))
            except OSError:
                upstream.close()
                conn.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [conn, upstream]
            for src, dst, stalls in ((conn, upstream, False), (upstream, conn, True)):
                args = (src, dst, stalls)
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, stalls: bool) -> None:
        try:
            while data := src.recv(65536):
                while stalls and self._stalled.is_set():
                    time.sleep(0.01)
                if self.delay and not stalls:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop the forwarded connections and refuse new ones."""
        self._open = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stall(self, seconds: float) -> None:
        """Forward nothing to the node for `seconds` (in the background)."""
        self._stalled.set()
        threading.Timer(seconds, self._stalled.clear).start()

    def heal(self) -> None:
        """Forward again."""
        self._open = True

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()


@pytest.fixture
def nats_link(nats_server: NatsServer) -> Iterator[Callable[..., NatsLink]]:
    """Forwarders to the test's nats-server (`NatsLink`), closed at teardown."""
    links: list[NatsLink] = []

    def factory(delay: float = 0.0) -> NatsLink:
        link = NatsLink(nats_server.port, delay)
        links.append(link)
        return link

    yield factory
    for link in links:
        link.close()
