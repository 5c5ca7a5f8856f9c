"""MQTT over plain TCP without transports: one epoll per listener, a bare socket per client.

An asyncio (or uvloop) transport costs about 1,200 bytes per socket before the broker
holds anything (docs/benchmarks.md, "idle connections"), which alone is most of what an
idle MQTT client may cost. So a plain-TCP listener serves its sockets itself: one
`select.epoll` of ours is registered in the event loop once (`loop.add_reader` on its
fd), every accepted socket is only a non-blocking fd in that epoll and an entry
fd -> `EpollSocket` in the listener's `ListenerConnections`, and the reader callback
asks the epoll which sockets are ready (`poll(0)`, never blocking: the loop already knows
one is) and reads each once. No loop handle, transport or socket object per client.

`EpollSocket` is both what the broker's `Connection` writes to (the `Sink`) and what feeds
it, with `net/tcp.py`'s behaviour:

- Writes are coalesced: `write` only appends to a list; the first write of an iteration
  puts the socket on its listener's dirty list, and one `loop.call_soon` per listener
  and iteration sends every dirty socket's bytes with one `send` each. What the kernel
  does not take waits in the socket's own buffer, and only then is EPOLLOUT asked for.
- Back-pressure: when that buffer passes `HIGH_WATER` the Connection is told it is not
  writable (`writable_changed(False)`), below `LOW_WATER` again that it is.
- `pause_reading`/`resume_reading` take EPOLLIN out and back in (a socket wanting neither
  reading nor EPOLLOUT leaves the epoll: level-triggered, a hung-up socket would be
  reported at every poll otherwise).
- Closing lingers as in tcp.py: with a last packet still on its way the write side is
  shut down after its last byte, what the client still sends is read and discarded until
  its EOF or `tcp.LINGER` seconds, then the socket closes; with nothing to say it closes at
  once. A client that has not read our last bytes when the linger ends loses them.
- `connection_lost` reaches the Connection from the loop (`call_soon`), never from inside
  the call that closed the socket, as with transports.

TLS and WebSocket listeners keep asyncio's transports (tcp.py, ws.py); without epoll (not
Linux) plain TCP does too (`AVAILABLE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
from collections.abc import Callable
from typing import cast

from . import tcp
from .tcp import (
    BACKLOG,
    HIGH_WATER,
    LOW_WATER,
    BrokerConnection,
    ConnectionFactory,
    ListenerConnections,
    format_peer,
)

__all__ = ["AVAILABLE", "EpollServer", "EpollSocket", "serve_epoll_tcp"]

logger = logging.getLogger("mqttd.net")

#: True where the kernel has epoll (Linux): only there are plain-TCP listeners served here.
AVAILABLE = hasattr(select, "epoll")

# Bytes asked of one read. Below glibc's mmap threshold (128 KiB) on purpose: a read of
# 256 KiB allocates its bytes object with mmap and shrinks it with mremap, 13 us per read
# instead of 1.8 (measured with a socketpair); what is left is read at the next poll.
READ_SIZE = 65536

# Seconds the accept loop rests after running out of file descriptors (as asyncio does).
ACCEPT_RETRY_DELAY = 1.0

_IN = select.EPOLLIN if AVAILABLE else 1
_OUT = select.EPOLLOUT if AVAILABLE else 4
_ERR_HUP = (select.EPOLLERR | select.EPOLLHUP) if AVAILABLE else 24
_READ_EVENTS = _IN | _ERR_HUP
_WRITE_EVENTS = _OUT | _ERR_HUP

# EpollSocket._state bits.
_CLOSED = 1  # close or abort was called, or the socket went away: writes are dropped
_GONE = 2  # the fd is closed and out of the epoll
_PAUSED = 4  # the Connection asked us not to read
_UNWRITABLE = 8  # the unsent buffer passed HIGH_WATER and the Connection was told
_SHUT_PENDING = 16  # closing lingeringly: shut the write side once the buffer is sent
_REGISTERED = 32  # the fd is in the epoll

_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Serving:
    """What every socket of one listener shares (one object, not a slot per socket)."""

    __slots__ = ("broker", "connections", "dirty", "epoll", "fds", "loop", "name", "on_empty")

    def __init__(
        self,
        broker: ConnectionFactory,
        name: str,
        connections: ListenerConnections,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.broker = broker
        self.name = name
        self.connections = connections
        self.loop = loop
        self.epoll = select.epoll()
        # fd -> socket: the listener's open-socket dict itself, not a second one.
        self.fds = cast("dict[object, EpollSocket]", connections.sockets)
        # Sockets written to in this iteration; one call_soon flushes them all.
        self.dirty: list[EpollSocket] = []
        # Called when the last socket is gone (the server waits for it once closed).
        self.on_empty: Callable[[], None] | None = None

    def flush_dirty(self) -> None:
        """Send what every socket written to in this iteration has queued."""
        dirty = self.dirty
        self.dirty = []
        for sock in dirty:
            sock.flush()

    def ready(self) -> None:
        """The epoll's fd is readable: serve every socket it reports ready."""
        fds = self.fds
        for fd, events in self.epoll.poll(0):
            sock = fds.get(fd)
            if sock is None:
                continue  # closed earlier in this batch
            if events & _WRITE_EVENTS and sock._unsent is not None:
                sock._send_unsent()
            if events & _READ_EVENTS:
                sock._read()


class EpollSocket:
    """One accepted plain-TCP socket: the Connection's `Sink`, and its reader.

    Six slots, 80 bytes (docs/benchmarks.md): the fd, the Connection, the listener's
    shared part, the state bits, and the two write buffers (both None while idle).
    """

    __slots__ = ("_buffer", "_conn", "_fd", "_serving", "_state", "_unsent")

    def __init__(self, fd: int, serving: _Serving) -> None:
        self._fd = fd
        self._serving = serving
        self._conn: BrokerConnection | None = None
        self._state = 0
        # Written in this iteration, waiting for the flush (None: nothing is).
        self._buffer: list[bytes] | None = None
        # What the kernel did not take; EPOLLOUT is watched while it is not None.
        self._unsent: bytearray | None = None

    @property
    def closed(self) -> bool:
        """True once `close` or `abort` was called or the socket went away."""
        return bool(self._state & _CLOSED)

    @property
    def fd(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._state & _GONE else self._fd

    # -- the Sink ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue `data`; it goes out with everything else written in this iteration."""
        if self._state & _CLOSED:
            return  # the peer is gone; the Connection learns it from connection_lost
        buffer = self._buffer
        if buffer is None:
            self._buffer = [data]
            serving = self._serving
            dirty = serving.dirty
            dirty.append(self)
            if len(dirty) == 1:
                serving.loop.call_soon(serving.flush_dirty)
        else:
            buffer.append(data)

    def flush(self) -> None:
        """Send everything queued now (one `send`); keep what the kernel does not take."""
        buffer = self._buffer
        if buffer is None:
            return
        self._buffer = None
        if self._state & _GONE:
            return
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        unsent = self._unsent
        if unsent is not None:  # still waiting for EPOLLOUT: keep the order
            unsent += data
            self._check_high_water(unsent)
            return
        try:
            sent = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._teardown()  # reset or broken pipe: the peer is gone
            return
        if sent < len(data):
            unsent = self._unsent = bytearray(memoryview(data)[sent:])
            self._watch()
            self._check_high_water(unsent)

    def close(self) -> None:
        """Flush what is queued, then close lingeringly (module docstring). Idempotent."""
        if self._state & _CLOSED:
            return
        saying = self._buffer is not None or self._unsent is not None
        self.flush()
        if self._state & _GONE:
            return  # the flush found the peer gone
        self._state |= _CLOSED
        if not saying:
            self._teardown()
            return
        if self._unsent is None:
            self._shutdown_write()
        else:
            self._state |= _SHUT_PENDING
        self._watch()  # read (and discard) until the client's EOF, paused or not
        self._serving.loop.call_later(tcp.LINGER, self._linger_over)  # one knob for both

    def abort(self) -> None:
        """Drop the socket now, unsent bytes included."""
        if self._state & _GONE:
            return
        self._state |= _CLOSED
        self._buffer = None
        self._teardown()

    def pause_reading(self) -> None:
        """Stop reading from this socket (backpressure on a publisher)."""
        state = self._state
        if not state & (_CLOSED | _PAUSED):
            self._state = state | _PAUSED
            self._watch()

    def resume_reading(self) -> None:
        """Read from this socket again."""
        state = self._state
        if state & _PAUSED and not state & _CLOSED:
            self._state = state & ~_PAUSED
            self._watch()

    # -- events --------------------------------------------------------------------------

    def _read(self) -> None:
        """The socket is readable (or hung up): feed the Connection one read's bytes."""
        state = self._state
        if state & _GONE or (state & _PAUSED and not state & _CLOSED):
            return  # closed, or paused earlier in this batch
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset: the same as EOF for us
        if not data:
            self._teardown()
            return
        if state & _CLOSED:
            return  # closing lingeringly: read and discarded
        conn = self._conn
        if conn is None:
            return
        try:
            conn.data_received(data)
        except Exception:
            logger.exception(
                "%s: Connection.data_received failed; dropping the socket", self._serving.name
            )
            self.abort()

    def _send_unsent(self) -> None:
        """EPOLLOUT: send more of what the kernel did not take before."""
        unsent = self._unsent
        if unsent is None or self._state & _GONE:
            return
        try:
            sent = os.write(self._fd, unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._teardown()
            return
        del unsent[:sent]
        state = self._state
        if state & _UNWRITABLE and len(unsent) <= LOW_WATER:
            self._state = state = state & ~_UNWRITABLE
            self._tell_writable(True)
        if unsent:
            return
        self._unsent = None
        if state & _SHUT_PENDING:
            self._state = state & ~_SHUT_PENDING
            self._shutdown_write()
        self._watch()

    def _check_high_water(self, unsent: bytearray) -> None:
        if len(unsent) > HIGH_WATER and not self._state & _UNWRITABLE:
            self._state |= _UNWRITABLE
            self._tell_writable(False)

    def _tell_writable(self, writable: bool) -> None:
        conn = self._conn
        if conn is None or self._state & _CLOSED:
            return
        try:
            conn.writable_changed(writable)
        except Exception:
            logger.exception("%s: Connection.writable_changed failed", self._serving.name)

    def _linger_over(self) -> None:
        if not self._state & _GONE:
            self._teardown()

    # -- the fd --------------------------------------------------------------------------

    def _watch(self) -> None:
        """Make the epoll watch what the state asks for: EPOLLIN unless paused (closing
        reads regardless), EPOLLOUT while bytes are unsent; out of the epoll if neither."""
        state = self._state
        if state & _GONE:
            return
        mask = _IN if not state & _PAUSED or state & _CLOSED else 0
        if self._unsent is not None:
            mask |= _OUT
        epoll = self._serving.epoll
        try:
            if state & _REGISTERED:
                if mask:
                    epoll.modify(self._fd, mask)
                else:
                    epoll.unregister(self._fd)
                    self._state = state & ~_REGISTERED
            elif mask:
                epoll.register(self._fd, mask)
                self._state = state | _REGISTERED
        except OSError:
            logger.exception("%s: epoll refused a socket; dropping it", self._serving.name)
            self.abort()

    def _shutdown_write(self) -> None:
        """Send FIN after the last byte (the socket stays open for reading)."""
        sock = socket.socket(fileno=self._fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already reset: the next read says so
        finally:
            sock.detach()

    def _teardown(self) -> None:
        """Close the fd now; the Connection hears of it from the loop."""
        state = self._state
        if state & _GONE:
            return
        self._state = state | _CLOSED | _GONE
        self._buffer = None
        self._unsent = None
        serving = self._serving
        fd = self._fd
        if state & _REGISTERED:
            with contextlib.suppress(OSError):
                serving.epoll.unregister(fd)
        # Out of the fd map before the fd is closed: the kernel may hand the same number
        # to the next accepted socket.
        serving.loop.call_soon(self._lost)
        serving.connections.remove(fd)
        os.close(fd)
        if serving.on_empty is not None and not serving.fds:
            serving.on_empty()

    def _lost(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            try:
                conn.connection_lost()
            except Exception:
                logger.exception("%s: Connection.connection_lost failed", self._serving.name)


class EpollServer:
    """A plain-TCP listener's listening sockets and its epoll; `asyncio.Server`'s
    `sockets`, `close` and `wait_closed` for the app."""

    def __init__(self, serving: _Serving, sockets: list[socket.socket]) -> None:
        self._serving = serving
        self.sockets = sockets
        self._accepting = False
        self._closed = False
        self._released: asyncio.Event | None = None
        self._retry: asyncio.TimerHandle | None = None

    def _start(self) -> None:
        loop = self._serving.loop
        loop.add_reader(self._serving.epoll.fileno(), self._serving.ready)
        self._listen()

    def _listen(self) -> None:
        self._retry = None
        if self._closed:
            return
        loop = self._serving.loop
        for listener in self.sockets:
            loop.add_reader(listener.fileno(), self._accept, listener)
        self._accepting = True

    def _stop_listening(self) -> None:
        if self._accepting:
            loop = self._serving.loop
            for listener in self.sockets:
                loop.remove_reader(listener.fileno())
            self._accepting = False

    def _accept(self, listener: socket.socket) -> None:
        """Accept every pending connection (up to BACKLOG at a time)."""
        accept = listener._accept  # type: ignore[attr-defined]
        serving = self._serving
        for _ in range(BACKLOG):
            try:
                fd, address = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCES:
                    logger.error(
                        "%s: cannot accept (%s); trying again in %.0f s",
                        serving.name,
                        exc.strerror,
                        ACCEPT_RETRY_DELAY,
                    )
                    self._stop_listening()
                    self._retry = serving.loop.call_later(ACCEPT_RETRY_DELAY, self._listen)
                    return
                continue  # aborted before we took it: the next one
            self._serve(fd, address)

    def _serve(self, fd: int, address: object) -> None:
        serving = self._serving
        connections = serving.connections
        peer = format_peer(address)
        limit = connections.max_connections
        if limit and len(connections) >= limit:
            logger.warning(
                "%s: refused %s: max_connections (%d) reached", serving.name, peer, limit
            )
            os.close(fd)
            return
        # Non-blocking for our reads and writes. TCP_NODELAY needs no call: Linux hands
        # an accepted socket the listening socket's options, and ours has it.
        os.set_blocking(fd, False)
        sock = EpollSocket(fd, serving)
        connections.admit(sock, fd)
        try:
            serving.epoll.register(fd, _IN)
        except OSError:
            logger.exception("%s: epoll refused %s", serving.name, peer)
            sock.abort()
            return
        sock._state = _REGISTERED
        try:
            sock._conn = serving.broker.connection(sock, peer, serving.name)
        except Exception:
            logger.exception("%s: Broker.connection failed for %s", serving.name, peer)
            sock.abort()

    def close(self) -> None:
        """Stop accepting (the open sockets stay; `wait_closed` waits for them)."""
        if self._closed:
            return
        self._closed = True
        self._stop_listening()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for listener in self.sockets:
            listener.close()
        self._serving.on_empty = self._release
        if not self._serving.fds:
            self._release()

    def _release(self) -> None:
        """Closed and no socket left: the epoll leaves the loop."""
        serving = self._serving
        serving.on_empty = None
        if serving.epoll.closed:
            return
        serving.loop.remove_reader(serving.epoll.fileno())
        serving.epoll.close()
        if self._released is not None:
            self._released.set()

    def is_serving(self) -> bool:
        """True until `close`."""
        return not self._closed

    async def wait_closed(self) -> None:
        """Return once closed and every socket is gone."""
        if self._serving.epoll.closed:
            return
        if self._released is None:
            self._released = asyncio.Event()
        await self._released.wait()


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for `host:port` as `loop.create_server`
    makes them: every address `host` resolves to ("" = all), SO_REUSEADDR, IPv6 only on
    an IPv6 socket; TCP_NODELAY set here so every accepted socket inherits it."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: {exc.strerror}",
                ) from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve_epoll_tcp(
    broker: ConnectionFactory,
    host: str,
    port: int,
    *,
    name: str = "mqtt",
    connections: ListenerConnections | None = None,
) -> EpollServer:
    """Listen on `host:port` (0 = a free port) and serve plain MQTT on every accepted
    socket through one epoll (module docstring). `connections` as for `serve_tcp`."""
    tracked = connections if connections is not None else ListenerConnections()
    loop = asyncio.get_running_loop()
    sockets = _listening_sockets(host, port)
    server = EpollServer(_Serving(broker, name, tracked, loop), sockets)
    server._start()
    return server
