"""MQTT over WebSocket (ws:// and wss://), and the built-in dashboard on the same port.

Theory of operation. The `websockets` library does the HTTP upgrade, framing, masking,
permessage-deflate and close handshake; this module only moves bytes between a WebSocket and
one broker `Connection`, exactly as `net/tcp.py` does for a TCP socket (MQTT 5.0 section 6):

- Every request goes through `_Gate.process_request` first. A plain HTTP GET (no
  ``Upgrade: websocket``) gets the dashboard's static files, or a clear 404/405/426. An
  upgrade must name our path (default ``/mqtt``; ``/`` is always accepted too, as some
  clients use it), come from an allowed Origin (403 otherwise, see `_Gate.origin_allowed`)
  and offer the ``mqtt`` or ``mqttv3.1`` subprotocol (400 otherwise). Browsers fail the handshake
  unless the server echoes ``Sec-WebSocket-Protocol``, which `websockets` does once
  ``subprotocols`` is given.
- Inbound: each binary message is fed to `Connection.data_received` as is. MQTT packets
  need not be aligned on frames [MQTT-6.0.0-2]: one packet may span frames and one frame may
  hold several packets; the core's reader buffers. A text frame closes the connection
  (1003) [MQTT-6.0.0-1]. The library bounds frames and messages by ``max_size`` (default: the
  broker's maximum packet size) and closes with 1009 beyond it; until the broker has accepted
  the CONNECT the bound is the broker's ``max_connect_size``, so a client that has not
  authenticated cannot make the library buffer a large message.
- Outbound: `WebSocketSink.write` only appends to a list and sets an event; one writer task
  per connection wakes at most once per loop iteration, joins everything written meanwhile
  into one binary frame (or a few, never splitting one write) and awaits ``send``, which
  waits for the transport to drain. No task per message. When the bytes not yet handed to the
  transport pass the high-water mark the core hears ``writable_changed(False)``, and
  ``writable_changed(True)`` once they fall to the low-water mark.
- Backpressure on a publisher (`pause_reading`) simply stops the reader loop; the library's
  receive queue then fills and it stops reading the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import http
import logging
import ssl as ssl_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from importlib import resources
from typing import Any, Final, Protocol, runtime_checkable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.frames import CloseCode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .. import __version__
from ..auth.limits import is_loopback_host
from ..auth.tls import certificate_identity
from ..broker.settings import BrokerSettings
from .tcp import BrokerConnection, ConnectionFactory, format_peer

__all__ = [
    "MQTT_SUBPROTOCOLS",
    "WebSocketSink",
    "forwarded_for",
    "load_dashboard",
    "serve_ws",
]

logger = logging.getLogger("mqttd.ws")

# Preference order when a client offers both: "mqtt" is the name registered with IANA and
# used by 3.1.1 and 5.0 [MQTT-6.0.0-3]; "mqttv3.1" is what 3.1 clients (old Paho JS) offer.
MQTT_SUBPROTOCOLS: Final[tuple[Subprotocol, ...]] = (Subprotocol("mqtt"), Subprotocol("mqttv3.1"))

# Writes are joined into frames of about this size; one larger write goes out alone, so a
# packet is never split by us (some naive clients assume one packet per frame).
FRAME_TARGET: Final = 64 * 1024

# Bytes queued in the sink (not yet accepted by the transport) that make the connection
# "not writable" for the core, and the level at which it becomes writable again.
DEFAULT_HIGH_WATER: Final = 256 * 1024
DEFAULT_LOW_WATER: Final = 64 * 1024

STATIC_PACKAGE: Final = "mqttd.net"
STATIC_DIR: Final = "static"

# Served paths -> (file in static/, Content-Type). "/" is index.html.
_STATIC_FILES: Final[dict[str, tuple[str, str]]] = {
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/mqtt-client.js": ("mqtt-client.js", "text/javascript; charset=utf-8"),
    "/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

# The dashboard runs only our own scripts and talks only to its own origin (CSP 3 lets
# 'self' match ws:/wss: on the same host and port).
_STATIC_HEADERS: Final = (
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
)


class _LibraryLog(logging.LoggerAdapter[logging.Logger]):
    """websockets' own INFO lines, demoted to DEBUG.

    It logs "connection open/closed" for every socket and "connection rejected (200 OK)"
    for every dashboard file; the broker logs MQTT connections itself and this module logs
    refused upgrades, so at INFO those lines would only double the log.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        # `log`, not `info`: the library wraps this adapter in its own, which calls `log`.
        super().log(logging.DEBUG if level == logging.INFO else level, msg, *args, **kwargs)


@runtime_checkable
class _HasSettings(Protocol):
    """A Broker: its settings bound the WebSocket message size."""

    @property
    def settings(self) -> BrokerSettings: ...


class WebSocketSink:
    """The broker's `Sink` for one WebSocket: coalesced binary frames, one writer task.

    `write` never awaits and never creates a task: bytes join a list and the writer task is
    woken (the wake-up runs on the next loop iteration, by which time every write of this
    iteration is in the list). `close` flushes what was written, then closes with 1000.
    """

    __slots__ = (
        "_closing",
        "_connection",
        "_detached",
        "_high_water",
        "_low_water",
        "_pending",
        "_queued_bytes",
        "_reading",
        "_wakeup",
        "_writable",
        "_ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        *,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
    ) -> None:
        self._ws = ws
        self._connection: BrokerConnection | None = None
        self._pending: list[bytes] = []
        self._queued_bytes = 0  # in _pending plus the frame being sent
        self._high_water = high_water
        self._low_water = min(low_water, high_water)
        self._wakeup = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._writable = True
        self._closing = False  # close() was called: flush, then close the WebSocket
        self._detached = False  # the socket is gone: drop everything

    # -- the Sink protocol ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer; they leave in the next frame."""
        if self._closing or self._detached or not data:
            return
        self._pending.append(data)
        self._queued_bytes += len(data)
        self._wakeup.set()
        if self._writable and self._queued_bytes > self._high_water:
            self._writable = False
            if self._connection is not None:
                self._connection.writable_changed(False)

    def close(self) -> None:
        """Flush what was written, then close the WebSocket (idempotent).

        The close handshake lingers by itself: the library sends its close frame after
        ours, reads (the reader loop discards) until the client's close frame, then half-
        closes TCP. Reading resumes here so a paused client is drained to that frame.
        """
        if not self._closing:
            self._closing = True
            self._wakeup.set()
            self._reading.set()

    def pause_reading(self) -> None:
        """Stop feeding inbound frames to the broker (backpressure on a publisher)."""
        self._reading.clear()

    def resume_reading(self) -> None:
        """Feed inbound frames again."""
        self._reading.set()

    # -- used by the listener -------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once the broker asked to close this connection."""
        return self._closing

    @property
    def queued_bytes(self) -> int:
        """Bytes written by the broker and not yet accepted by the transport."""
        return self._queued_bytes

    def attach(self, connection: BrokerConnection) -> None:
        """Bind the broker Connection that hears `writable_changed`."""
        self._connection = connection

    async def wait_readable(self) -> None:
        """Return when reading is not paused."""
        if not self._reading.is_set():
            await self._reading.wait()

    def detach(self) -> None:
        """The socket is gone: drop queued bytes and let the writer task end."""
        self._detached = True
        self._pending.clear()
        self._wakeup.set()
        self._reading.set()

    def _take_frame(self) -> bytes:
        pending = self._pending
        if len(pending) == 1:
            frame = pending[0]
            pending.clear()
            return frame
        size = 0
        count = 0
        for chunk in pending:
            if count and size + len(chunk) > FRAME_TARGET:
                break
            size += len(chunk)
            count += 1
        if count == len(pending):
            frame = b"".join(pending)
            pending.clear()
        else:
            frame = b"".join(pending[:count])
            del pending[:count]
        return frame

    async def run_writer(self) -> None:
        """The connection's one writer task: send coalesced frames until closed."""
        ws = self._ws
        try:
            while not self._detached:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending and not self._detached:
                    frame = self._take_frame()
                    await ws.send(frame)  # waits while the transport is above write_limit
                    self._queued_bytes -= len(frame)
                    if not self._writable and self._queued_bytes <= self._low_water:
                        self._writable = True
                        if self._connection is not None:
                            self._connection.writable_changed(True)
                if self._closing and not self._pending:
                    await ws.close(CloseCode.NORMAL_CLOSURE)
                    return
        except ConnectionClosed:
            pass


@dataclass(slots=True, frozen=True)
class _StaticFile:
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = _STATIC_HEADERS


def load_dashboard(ws_path: str, admin_api: str | None = None) -> dict[str, _StaticFile]:
    """Read the dashboard's files from the package; index.html learns the MQTT path.

    The page connects to a URL *relative* to itself, so it keeps working behind a reverse
    proxy that mounts the listener under a prefix. `admin_api` is the admin API as
    "scheme:port" (e.g. "http:9884"): the page calls it on the host it was loaded from,
    and the Content-Security-Policy lets it do so (and nothing else).
    """
    root = resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR)
    headers: tuple[tuple[str, str], ...] = _STATIC_HEADERS
    if admin_api:
        scheme, _, port = admin_api.partition(":")
        headers = tuple(
            (name, value.replace("connect-src 'self'", f"connect-src 'self' {scheme}://*:{port}"))
            for name, value in _STATIC_HEADERS
        )
    files: dict[str, _StaticFile] = {}
    for url_path, (name, content_type) in _STATIC_FILES.items():
        body = root.joinpath(name).read_bytes()
        if name == "index.html":
            relative = ws_path.lstrip("/") or "."
            body = body.replace(b"{{MQTT_PATH}}", html.escape(relative).encode())
            body = body.replace(b"{{ADMIN_API}}", html.escape(admin_api or "").encode())
        files[url_path] = _StaticFile(body, content_type, headers)
    files["/"] = files["/index.html"]
    return files


def _plain_response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: Iterable[tuple[str, str]] = (),
    *,
    head: bool = False,
) -> Response:
    headers = Headers(
        [
            ("Date", formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            *extra,
        ]
    )
    return Response(status.value, status.phrase, headers, b"" if head else body)


def _refuse(status: http.HTTPStatus, text: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    return _plain_response(status, (text + "\n").encode(), extra=extra)


def _is_upgrade(request: Request) -> bool:
    return any(
        token.strip().lower() == "websocket"
        for value in request.headers.get_all("Upgrade")
        for token in value.split(",")
    )


def _offered_subprotocols(request: Request) -> list[Subprotocol]:
    offered: list[Subprotocol] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        offered.extend(parse_subprotocol(value))
    return offered


def forwarded_for(request: Request) -> str | None:
    """The client address a trusted proxy put last in X-Forwarded-For.

    Only the last entry is the proxy's own observation; earlier ones came from the client
    and may be forged, so with one trusted proxy in front the last one is the truth.
    """
    entries = [
        entry.strip()
        for value in request.headers.get_all("X-Forwarded-For")
        for entry in value.split(",")
        if entry.strip()
    ]
    return entries[-1] if entries else None


class _Gate:
    """Decides each HTTP request: dashboard file, refusal, or WebSocket upgrade."""

    __slots__ = (
        "allowed_origins",
        "any_origin",
        "dashboard",
        "loopback",
        "name",
        "subprotocols",
        "trust_proxy",
        "ws_path",
        "ws_paths",
    )

    def __init__(
        self,
        name: str,
        trust_proxy: bool,
        ws_path: str,
        subprotocols: Sequence[Subprotocol],
        allowed_origins: Sequence[str] | None,
        dashboard: dict[str, _StaticFile] | None,
        loopback: bool = False,
    ) -> None:
        self.name = name
        self.trust_proxy = trust_proxy
        self.ws_path = ws_path
        self.subprotocols = tuple(subprotocols)
        self.ws_paths = frozenset({ws_path, "/"})
        self.allowed_origins = frozenset(allowed_origins or ())
        self.any_origin = "*" in self.allowed_origins
        #: The listener is bound to a loopback address (its pages are on localhost).
        self.loopback = loopback
        self.dashboard = dashboard

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """May a browser page from `origin` open this WebSocket (`host`: the Host header)?

        Cross-site WebSocket hijacking: any page a user opens may try to connect to the
        broker from the user's browser, which sends the page's Origin. Allowed are the
        configured origins (``"*"``: all), and the page's own origin: one whose host and
        port are those the browser addressed us by (the Host header), as the built-in
        dashboard's are. On a loopback listener that host must be a loopback one too, so
        a page whose name was rebound to 127.0.0.1 (DNS rebinding) is not "same origin".
        """
        if self.any_origin or origin in self.allowed_origins:
            return True
        own = _origin_address(origin)
        if own is None or host is None:
            return False
        hostname, port = own
        asked_host, _, asked_port = host.strip().lower().rpartition(":")
        if not asked_host or asked_port.endswith("]") or not asked_port.isdigit():
            asked_host, asked_port = host.strip().lower(), ""  # no port in Host
        if asked_host != hostname:
            return False
        if asked_port and int(asked_port) != port:
            return False
        if not asked_port and port not in (80, 443):
            return False
        return not self.loopback or is_loopback_host(hostname.strip("[]"))

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """`websockets` hook: a Response ends the exchange; None goes on with the upgrade."""
        path = request.path.split("?", 1)[0]
        if not _is_upgrade(request):
            return self._plain_http(request, path)
        refusal = self._check_upgrade(request, path)
        if refusal is not None:
            logger.info(
                "%s: refused a WebSocket upgrade from %s: %d %s",
                self.name,
                _peer_of(ws, self.trust_proxy),
                refusal.status_code,
                refusal.body.decode(errors="replace").strip(),
            )
        return refusal

    def _check_upgrade(self, request: Request, path: str) -> Response | None:
        if path not in self.ws_paths:
            return _refuse(
                http.HTTPStatus.NOT_FOUND,
                f"No MQTT WebSocket endpoint at {path}; connect to {self.ws_path}.",
            )
        origin = request.headers.get("Origin")
        # A browser always sends Origin; other clients (paho, mosquitto) send none and cannot
        # be used for cross-site WebSocket hijacking, so only a present Origin is checked.
        if origin is not None and not self.origin_allowed(origin, request.headers.get("Host")):
            return _refuse(
                http.HTTPStatus.FORBIDDEN,
                f"Origin {origin} is not allowed on this MQTT WebSocket listener "
                "(listeners[].allowed_origins).",
            )
        try:
            offered = _offered_subprotocols(request)
        except InvalidHeader as exc:
            return _refuse(http.HTTPStatus.BAD_REQUEST, f"Invalid Sec-WebSocket-Protocol: {exc}.")
        expected = " or ".join(self.subprotocols)
        if not offered:
            return _refuse(
                http.HTTPStatus.BAD_REQUEST,
                "Missing Sec-WebSocket-Protocol header: this endpoint speaks MQTT over "
                f"WebSocket; offer the subprotocol {expected}.",
            )
        if not any(proto in self.subprotocols for proto in offered):
            return _refuse(
                http.HTTPStatus.BAD_REQUEST,
                f"Unsupported WebSocket subprotocol {', '.join(offered)}: this endpoint "
                f"speaks MQTT; offer {expected}.",
            )
        return None

    def _plain_http(self, request: Request, path: str) -> Response:
        head = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            return _refuse(
                http.HTTPStatus.METHOD_NOT_ALLOWED,
                f"Method {request.method} not allowed.",
                extra=[("Allow", "GET, HEAD")],
            )
        if self.dashboard is not None:
            static = self.dashboard.get(path)
            if static is not None:
                return _plain_response(
                    http.HTTPStatus.OK,
                    static.body,
                    static.content_type,
                    static.headers,
                    head=head,
                )
        if path in self.ws_paths:
            return _refuse(
                http.HTTPStatus.UPGRADE_REQUIRED,
                f"This is an MQTT over WebSocket endpoint: connect to {self.ws_path} with an "
                "MQTT client (WebSocket subprotocol mqtt).",
                extra=[("Upgrade", "websocket")],
            )
        return _refuse(http.HTTPStatus.NOT_FOUND, f"Not found: {path}.")


def _set_max_message_size(ws: ServerConnection, size: int) -> None:
    """Change the largest message the library accepts (read for each frame it parses)."""
    protocol = ws.protocol
    # websockets >= 15 splits max_size into message and fragment bounds.
    name = "max_message_size" if hasattr(protocol, "max_message_size") else "max_size"
    setattr(protocol, name, size)


async def _handle(
    ws: ServerConnection,
    broker: ConnectionFactory,
    name: str,
    trust_proxy: bool,
    high_water: int,
    low_water: int,
    max_size: int,
    connect_size: int,
) -> None:
    """One WebSocket after a successful upgrade: feed the broker until either side closes."""
    peer = _peer_of(ws, trust_proxy)
    # Until the CONNECT is accepted, messages are bounded by the broker's max_connect_size.
    bounded = connect_size < max_size
    if bounded:
        _set_max_message_size(ws, connect_size)
    sink = WebSocketSink(ws, high_water=high_water, low_water=low_water)
    # A verified client certificate's CN (use_identity_as_username), as on mqtts.
    identity = certificate_identity(ws.transport.get_extra_info("peercert"))
    if identity is None:
        conn = broker.connection(sink, peer, name)
    else:
        conn = broker.connection(sink, peer, name, identity)
    sink.attach(conn)
    writer = asyncio.create_task(sink.run_writer(), name=f"mqttd-ws-writer {peer}")
    try:
        while True:
            await sink.wait_readable()
            message = await ws.recv()
            if isinstance(message, str):
                logger.info("%s sent a text frame; MQTT needs binary frames, closing", peer)
                await ws.close(
                    CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames [MQTT-6.0.0-1]"
                )
                break
            if not sink.closing:
                try:
                    conn.data_received(message)
                except Exception:
                    # A bug in the core drops this socket, not the listener (as in tcp.py).
                    logger.exception("%s: Connection.data_received failed; dropping", name)
                    ws.transport.abort()
                    break
                if bounded and getattr(conn, "connected", True):
                    bounded = False
                    _set_max_message_size(ws, max_size)
    except ConnectionClosed:
        pass
    finally:
        # Either the peer went away or we closed: in both cases nothing more can be sent.
        # A writer still flushing after close() ends as soon as the socket is gone.
        if not sink.closing:
            sink.detach()
        try:
            conn.connection_lost()
        except Exception:
            logger.exception("%s: Connection.connection_lost failed", name)
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await writer
            if not writer.done():
                sink.detach()
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer


def _origin_address(origin: str) -> tuple[str, int] | None:
    """(host, port) of an Origin like ``http://127.0.0.1:8080``; None if not http(s)."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    default = {"http": 80, "https": 443}.get(scheme)
    if not sep or default is None or not rest or "/" in rest:
        return None  # "null" (a file or a sandboxed frame), another scheme, or garbage
    host, _, port = rest.rpartition(":")
    if not host or port.endswith("]") or not port.isdigit():
        return rest, default
    return host, int(port)


def _peer_of(ws: ServerConnection, trust_proxy: bool) -> str:
    if trust_proxy and ws.request is not None:
        forwarded = forwarded_for(ws.request)
        if forwarded is not None:
            return forwarded
    return format_peer(ws.remote_address)


async def serve_ws(
    broker: ConnectionFactory,
    host: str | None,
    port: int,
    *,
    path: str = "/mqtt",
    subprotocols: Sequence[str] = MQTT_SUBPROTOCOLS,
    ssl: ssl_module.SSLContext | None = None,
    name: str = "ws",
    allowed_origins: Sequence[str] | None = None,
    trust_proxy: bool = False,
    dashboard: bool = True,
    admin_api: str | None = None,
    max_size: int | None = None,
    compression: bool = False,
    ping_interval: float | None = None,
    open_timeout: float | None = 10.0,
    close_timeout: float | None = 2.0,
    high_water: int = DEFAULT_HIGH_WATER,
    low_water: int = DEFAULT_LOW_WATER,
) -> Server:
    """Listen for MQTT over WebSocket on host:port (wss when ``ssl`` is given).

    Args:
        broker: feeds each accepted WebSocket to ``broker.connection(sink, peer, name)``.
        path: the upgrade path (``/`` is accepted too); the dashboard connects here.
        subprotocols: accepted WebSocket subprotocols, preferred first; the chosen one is
            echoed (browsers fail the handshake otherwise), a client offering none is refused.
        name: the listener name the broker sees (logs, ACLs, $SYS).
        allowed_origins: origins a browser (one that sends Origin) may connect from
            besides the page's own (e.g. ``"https://ops.example.com"``; ``"*"``: any);
            others get 403. Clients that send no Origin are not checked.
        trust_proxy: take the client address from X-Forwarded-For (last entry).
        dashboard: serve the live dashboard on plain GET ``/``.
        admin_api: the admin API as "scheme:port" for the dashboard's admin pages.
        max_size: largest WebSocket frame and message accepted (1009 beyond);
            default the broker's ``max_packet_size``. Before the CONNECT is accepted,
            the broker's ``max_connect_size`` if smaller.
        compression: negotiate permessage-deflate when a client offers it. Off by default:
            MQTT payloads are small and compressing every frame costs CPU on the hot path;
            declining is always legal and browsers cope.
        ping_interval: WebSocket pings; None by default since MQTT has its own keepalive.
        open_timeout: seconds for the HTTP upgrade (the TLS handshake included for wss).
        close_timeout: seconds to wait for the peer's close frame after ours before the
            socket is dropped; short, so a peer that stopped reading cannot hold up a
            graceful stop (browsers answer at once).
        high_water, low_water: bytes queued in the sink that make the connection not
            writable for the core, and writable again.

    Returns:
        The `websockets` Server: ``.sockets``, ``.close()``, ``.wait_closed()``.
    """
    if not path.startswith("/"):
        raise ValueError(f"WebSocket path must start with '/': {path!r}")
    if not subprotocols:
        raise ValueError("at least one WebSocket subprotocol is needed (MQTT uses 'mqtt')")
    accepted = [Subprotocol(name) for name in subprotocols]
    settings = broker.settings if isinstance(broker, _HasSettings) else BrokerSettings()
    limit = max_size if max_size is not None else settings.max_packet_size
    connect_limit = min(limit, settings.max_connect_size or limit)
    gate = _Gate(
        name,
        trust_proxy,
        path,
        accepted,
        allowed_origins,
        load_dashboard(path, admin_api) if dashboard else None,
        loopback=host is not None and is_loopback_host(host),
    )

    async def handler(ws: ServerConnection) -> None:
        await _handle(ws, broker, name, trust_proxy, high_water, low_water, limit, connect_limit)

    server = await serve(
        handler,
        host,
        port,
        ssl=ssl,
        subprotocols=accepted,  # validated here: a bad token raises ValueError
        process_request=gate.process_request,
        compression="deflate" if compression else None,
        server_header=f"mqttd/{__version__}",
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=None if ping_interval is None else ping_interval,
        max_size=limit,
        logger=_LibraryLog(logging.getLogger("mqttd.ws.websockets")),
    )
    return server
