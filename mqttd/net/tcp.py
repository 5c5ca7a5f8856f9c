"""MQTT over TCP and TLS: one `asyncio.Protocol` per socket, feeding a broker Connection.

This layer only moves bytes. `MqttProtocol` asks the broker for a `Connection` when a
socket is accepted (after the TLS handshake, for mqtts), hands it every chunk read,
and tells it when the socket is gone or when the transport's write buffer crosses its
high/low water marks (`writable_changed`), so the core can stop feeding a slow reader.

Writes are coalesced: the Connection may call `TcpSink.write` many times while handling
one chunk (a CONNACK and queued messages, or one PUBLISH fanned out to this subscriber
from many publishers). The sink only appends to a list and arranges a single
`loop.call_soon(flush)`, so each socket gets one `transport.write` per loop iteration
however many packets it was sent.

Closing lingers (`TcpSink.close`): a socket closed while the client's bytes are still unread
makes the kernel answer with a reset, which may destroy our last packet (the CONNACK or
DISCONNECT saying why) before the client reads it. So when a packet is still on its way,
the write side is shut down after its last byte (FIN), and what the client still sends is
read and discarded until it closes its side or `LINGER` seconds pass; only then is the
socket closed. With nothing left to say (a 3.x protocol error, a CONNECT too large to
read) the socket closes at once. TLS has no half-close in asyncio, so an mqtts socket
closes at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Protocol, cast

from ..auth.tls import certificate_identity

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "ConnectionFactory",
    "ListenerConnections",
    "MqttProtocol",
    "TcpSink",
    "format_peer",
    "serve_tcp",
    "server_ssl_context",
]

logger = logging.getLogger("mqttd.net")

# Transport write-buffer marks. Above HIGH_WATER the transport calls pause_writing and
# the Connection is told it is not writable (it queues instead of writing); once the
# buffer drains below LOW_WATER it may write again.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

# Pending connections the kernel holds for us: a fleet reconnecting after an outage
# arrives all at once.
BACKLOG = 1024

# Seconds a closed socket keeps reading (and discarding) what the client still sends,
# waiting for its EOF, so our last packet is not lost to a reset (module docstring).
LINGER = 2.0


class Sink(Protocol):
    """What the network gives a Connection (mirrors `mqttd.broker.connection.Sink`)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class BrokerConnection(Protocol):
    """The part of `mqttd.broker.connection.Connection` this layer calls."""

    def data_received(self, data: bytes) -> None: ...
    def connection_lost(self) -> None: ...
    def writable_changed(self, writable: bool) -> None: ...


class ConnectionFactory(Protocol):
    """What serves the sockets: the Broker (or a test double)."""

    def connection(
        self, sink: Sink, peer: str, listener: str = ..., identity: str | None = ..., /
    ) -> BrokerConnection: ...


class TcpSink:
    """The Sink of one socket: coalesces writes into one `transport.write` per iteration."""

    __slots__ = ("_buffer", "_closed", "_linger", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        # What waits for the flush; None when nothing does (then no flush is scheduled).
        # No list is kept between flushes: an idle connection holds none.
        self._buffer: list[bytes] | None = None
        self._closed = False
        self._linger: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        """True once `close` was called or the socket went away."""
        return self._closed

    def write(self, data: bytes) -> None:
        """Queue `data`; it goes out with everything else written in this iteration."""
        if self._closed:
            return  # the peer is gone; the Connection learns it from connection_lost
        buffer = self._buffer
        if buffer is None:
            self._buffer = [data]
            self._loop.call_soon(self.flush)
        else:
            buffer.append(data)

    def flush(self) -> None:
        """Hand everything queued to the transport now (one write)."""
        buffer = self._buffer
        if buffer is None or self._closed:
            return
        self._buffer = None
        # One join and one write rather than writelines: on 3.11 and uvloop both end in
        # one send of one buffer anyway, and this keeps a single code path.
        self._transport.write(buffer[0] if len(buffer) == 1 else b"".join(buffer))

    def close(self) -> None:
        """Flush what is queued, then close lingeringly (module docstring). Idempotent."""
        if self._closed:
            return
        transport = self._transport
        # Lingering only helps when a last packet (the reason) is still on its way.
        saying = self._buffer is not None or transport.get_write_buffer_size() > 0
        self.flush()
        self._closed = True
        if not saying or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        # FIN once the buffer is sent; MqttProtocol discards what still arrives, and the
        # transport closes itself at the client's EOF (eof_received) or after LINGER.
        transport.write_eof()
        if not transport.is_reading():
            transport.resume_reading()
        self._linger = self._loop.call_later(LINGER, transport.close)

    def abort(self) -> None:
        """Drop the socket now, unsent bytes included."""
        self._closed = True
        self._buffer = None
        self._stop_lingering()
        self._transport.abort()

    def _stop_lingering(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def pause_reading(self) -> None:
        """Stop reading from this socket (backpressure on a publisher)."""
        if not self._closed and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from this socket again."""
        if not self._closed and not self._transport.is_closing():
            self._transport.resume_reading()

    def lost(self) -> None:
        """The socket is gone: drop what was queued, ignore further writes."""
        self._closed = True
        self._buffer = None
        self._stop_lingering()


class Abortable(Protocol):
    """An open socket as its listener sees it: something to drop at the end of a shutdown."""

    def abort(self) -> None: ...


class ListenerConnections:
    """The open sockets of one listener: enforces `max_connections`, aborts at shutdown.

    Each socket is kept under a key: the `TcpSink` itself here, its fd for the epoll
    listener (net/epoll_tcp.py), which looks sockets up by fd in this same dict.
    """

    __slots__ = ("_drained", "_open", "max_connections")

    def __init__(self, max_connections: int = 0) -> None:
        self.max_connections = max_connections  # 0 = unlimited
        self._open: dict[object, Abortable] = {}
        self._drained: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._open)

    @property
    def sockets(self) -> dict[object, Abortable]:
        """The open sockets by key (the dict itself, for the epoll listener's lookups)."""
        return self._open

    def admit(self, sink: Abortable, key: object = None) -> bool:
        """Count a new socket in (under `key`, else itself), unless the listener is full."""
        if self.max_connections and len(self._open) >= self.max_connections:
            return False
        self._open[sink if key is None else key] = sink
        return True

    def remove(self, key: object) -> None:
        """Count a closed socket out (by the key it was admitted under)."""
        self._open.pop(key, None)
        if not self._open and self._drained is not None:
            self._drained.set()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every socket to close; True if they did."""
        if not self._open:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def abort_all(self) -> None:
        """Drop every socket still open (the end of a shutdown that waited long enough)."""
        for sink in list(self._open.values()):
            sink.abort()


class _Serving:
    """What every socket of one listener shares: the broker, the listener's name and its
    open sockets (one object per listener, not three slots per socket)."""

    __slots__ = ("broker", "connections", "name")

    def __init__(
        self, broker: ConnectionFactory, name: str, connections: ListenerConnections
    ) -> None:
        self.broker = broker
        self.name = name
        self.connections = connections


class MqttProtocol(TcpSink, asyncio.Protocol):
    """One accepted socket (TCP or TLS): bytes in to the Connection, backpressure signals.

    The protocol is its own socket's `TcpSink` (set up in `connection_made`): one object
    per socket instead of two, 56 bytes less per idle connection (docs/benchmarks.md).
    """

    __slots__ = ("_conn", "_serving")

    def __init__(
        self, broker: ConnectionFactory, listener: str, connections: ListenerConnections
    ) -> None:
        self._serving = _Serving(broker, listener, connections)
        self._conn: BrokerConnection | None = None
        self._closed = True  # no sink until connection_made admits the socket

    @classmethod
    def factory(
        cls, broker: ConnectionFactory, listener: str, connections: ListenerConnections
    ) -> Callable[[], MqttProtocol]:
        """A protocol factory whose protocols share one `_Listener`."""
        serving = _Serving(broker, listener, connections)

        def make() -> MqttProtocol:
            protocol = cls.__new__(cls)
            protocol._serving = serving
            protocol._conn = None
            protocol._closed = True
            return protocol

        return make

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set the socket up and ask the broker for a Connection."""
        tcp = cast(asyncio.Transport, transport)
        serving = self._serving
        TcpSink.__init__(self, tcp, asyncio.get_running_loop())
        peer = format_peer(tcp.get_extra_info("peername"))
        if not serving.connections.admit(self):
            logger.warning(
                "%s: refused %s: max_connections (%d) reached",
                serving.name,
                peer,
                serving.connections.max_connections,
            )
            self.abort()
            return
        # No TCP_NODELAY here: asyncio and uvloop both set it on every TCP socket they
        # accept, and asking for the socket object (get_extra_info) to set it again was
        # a tenth of the cost of a connection.
        tcp.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        try:
            # A verified client certificate's CN (use_identity_as_username); test
            # doubles without TLS get the three-argument call they know.
            identity = certificate_identity(tcp.get_extra_info("peercert"))
            if identity is None:
                self._conn = serving.broker.connection(self, peer, serving.name)
            else:
                self._conn = serving.broker.connection(self, peer, serving.name, identity)
        except Exception:
            logger.exception("%s: Broker.connection failed for %s", serving.name, peer)
            self.abort()

    def data_received(self, data: bytes) -> None:
        """Feed the Connection; a bug in the core closes this socket, not the listener."""
        conn = self._conn
        if conn is None or self._closed:
            return  # closing lingeringly: read and discarded
        try:
            conn.data_received(data)
        except Exception:
            logger.exception(
                "%s: Connection.data_received failed; dropping the socket", self._serving.name
            )
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is gone (EOF, reset, or our own close)."""
        conn = self._conn
        self._conn = None
        if not hasattr(self, "_transport"):
            return  # connection_made never ran
        self.lost()
        self._serving.connections.remove(self)
        if conn is not None:
            try:
                conn.connection_lost()
            except Exception:
                logger.exception("%s: Connection.connection_lost failed", self._serving.name)

    def pause_writing(self) -> None:
        """The transport's buffer passed HIGH_WATER: the peer reads slower than we write."""
        if self._conn is not None:
            self._conn.writable_changed(False)

    def resume_writing(self) -> None:
        """The transport's buffer drained below LOW_WATER."""
        if self._conn is not None:
            self._conn.writable_changed(True)


def format_peer(peername: object) -> str:
    """`host:port` of a socket address (`[v6]:port` for IPv6), or `?` when unknown."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "?" if not peername else str(peername)


def server_ssl_context(
    certfile: str,
    keyfile: str = "",
    cafile: str = "",
    require_certificate: bool = False,
    min_version: str = "1.2",
) -> ssl.SSLContext:
    """A server-side TLS context for an mqtts/wss listener.

    With `cafile`, client certificates are verified when presented, and with
    `require_certificate` a client without one is refused in the handshake.
    Raises OSError or ssl.SSLError when a file cannot be read or does not match.
    """
    if require_certificate and not cafile:
        raise ValueError("require_certificate needs a cafile to verify client certificates")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = {
        "1.2": ssl.TLSVersion.TLSv1_2,
        "1.3": ssl.TLSVersion.TLSv1_3,
    }[min_version]
    context.load_cert_chain(certfile, keyfile or None)
    if cafile:
        context.load_verify_locations(cafile)
        context.verify_mode = ssl.CERT_REQUIRED if require_certificate else ssl.CERT_OPTIONAL
    return context


# OpenSSL's reasons when the first bytes are not a TLS ClientHello at all.
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL"}
)


def log_failed_handshakes(context: ssl.SSLContext, listener: str) -> None:
    """Log a line for every TLS handshake that fails on `context` (one listener's).

    asyncio and uvloop drop a failed server handshake silently (they log it only in debug
    mode), so an operator whose device speaks plain MQTT to the mqtts port saw nothing.
    `sslobject_class` is the ssl module's documented hook on the object both loops use for
    the handshake; the loops do not tell it the client's address, so the line names the
    listener and the reason.
    """

    class _LoggedHandshake(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # not finished yet, not failed
            except ssl.SSLError as exc:
                reason = exc.reason or str(exc)
                hint = (
                    ": not TLS, a plain MQTT (or HTTP) client on this TLS port?"
                    if reason in _NOT_TLS
                    else ""
                )
                logger.info("%s: TLS handshake failed (%s)%s", listener, reason, hint)
                raise

    context.sslobject_class = _LoggedHandshake


async def serve_tcp(
    broker: ConnectionFactory,
    host: str,
    port: int,
    *,
    ssl: ssl.SSLContext | None = None,
    name: str = "mqtt",
    connections: ListenerConnections | None = None,
    ssl_handshake_timeout: float = 10.0,
) -> asyncio.Server:
    """Listen on `host:port` (0 = a free port) and serve MQTT on every accepted socket.

    `ssl` makes it an mqtts listener (the same protocol after the handshake). `name` is
    the listener name the broker sees. `connections` tracks the open sockets (and holds
    the `max_connections` limit); pass one to be able to abort them at shutdown.
    """
    tracked = connections if connections is not None else ListenerConnections()
    if ssl is not None:
        log_failed_handshakes(ssl, name)

    factory = MqttProtocol.factory(broker, name, tracked)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        factory,
        host,
        port,
        ssl=ssl,
        backlog=BACKLOG,
        ssl_handshake_timeout=ssl_handshake_timeout if ssl is not None else None,
    )
