"""A small MQTT client connection on our own codec: the two legs of every bridge.

Theory of operation. `MqttClient` is an `asyncio.Protocol` that speaks the client side
of MQTT 3.1.1 or 5.0 over any transport with `write`/`close`: a TCP or TLS socket to
the remote broker, or a `LoopbackTransport` to the local broker inside this process.
It does the connection-level work itself:

- CONNECT, then CONNACK (`connect()`); a 5.0 CONNACK's limits are kept
  (`receive_maximum`, `maximum_qos`, `retain_available`, `maximum_packet_size`,
  Server Keep Alive);
- SUBSCRIBE/UNSUBSCRIBE with their acknowledgements (`subscribe()`, `unsubscribe()`);
- keep alive: a PINGREQ whenever nothing was sent, or nothing received, for half the
  keep alive [MQTT-3.1.2-23]; a server that answers nothing for a whole keep alive
  after a PINGREQ is taken as gone and the transport is aborted;
- DISCONNECT from a 5.0 server, malformed input, protocol errors: the connection ends.

The QoS flows are NOT tracked here: the bridge owns them, because it mirrors each flow
from one leg onto the other with the same packet identifier (see bridge.py). So every
PUBLISH, PUBACK, PUBREC, PUBREL and PUBCOMP received goes to the handler as it is, and
the handler sends the acknowledgements it decides on with `send()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container, Sequence
from typing import Protocol, cast

from ..protocol.encoder import encode
from ..protocol.errors import MQTTError, ProtocolError
from ..protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from ..protocol.properties import Properties
from ..protocol.reader import DEFAULT_MAX_PACKET_SIZE, PacketReader
from ..protocol.reason_codes import ReasonCode

__all__ = [
    "ClientHandler",
    "ConnectRefused",
    "ConnectionClosed",
    "FlowPacket",
    "MqttClient",
    "Transport",
]

logger = logging.getLogger("mqttd.bridge")

FlowPacket = Publish | PubAck | PubRec | PubRel | PubComp
"""The packets of the QoS flows, handed to the handler as received."""

_FLOW_TYPES = (Publish, PubAck, PubRec, PubRel, PubComp)


class ConnectionClosed(Exception):
    """The connection ended before the awaited answer (CONNACK, SUBACK, ...) came."""


class ConnectRefused(Exception):
    """CONNACK refused the connection; `code` is its return (3.x) or reason (5.0) code."""

    def __init__(self, code: int, level: int) -> None:
        self.code = code
        self.level = level
        if level == 5:
            try:
                name = ReasonCode(code).name.lower().replace("_", " ")
            except ValueError:
                name = "unknown reason"
        else:
            name = _V3_REFUSALS.get(code, "unknown return code")
        super().__init__(f"CONNACK refused: 0x{code:02X} ({name})")


_V3_REFUSALS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class Transport(Protocol):
    """What a client writes to: an asyncio transport or a `LoopbackTransport`."""

    def write(self, data: bytes) -> None:
        """Send bytes to the server."""
        ...

    def close(self) -> None:
        """Flush and close."""
        ...

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        ...

    def is_closing(self) -> bool:
        """True once close or abort was called, or the peer went away."""
        ...

    def pause_reading(self) -> None:
        """Stop delivering data from the server (backpressure)."""
        ...

    def resume_reading(self) -> None:
        """Deliver data from the server again."""
        ...


class ClientHandler(Protocol):
    """Who gets what an `MqttClient` receives (the bridge)."""

    def flow_packet(self, client: MqttClient, packet: FlowPacket) -> None:
        """A PUBLISH or a QoS acknowledgement arrived (only after a successful CONNACK)."""
        ...

    def client_closed(self, client: MqttClient) -> None:
        """The connection ended; `client.close_reason` says why."""
        ...

    def client_writable(self, client: MqttClient, writable: bool) -> None:
        """The transport's write buffer crossed its high (False) or low (True) mark."""
        ...


class MqttClient(asyncio.Protocol):
    """The client side of one MQTT connection (see the module docstring)."""

    def __init__(
        self,
        name: str,
        protocol_level: int,
        handler: ClientHandler,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        self.name = name
        self.protocol_level = protocol_level
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._reader = PacketReader(max_packet_size, protocol_level=protocol_level)
        self._transport: Transport | None = None
        self._connack: asyncio.Future[Connack] | None = None
        self._connect: Connect | None = None
        self._acks: dict[int, asyncio.Future[SubAck | UnsubAck]] = {}
        self._next_control_id = 1
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._last_sent = self._last_received = time.monotonic()
        self._ping_sent_at: float | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.close_reason = ""
        self.connected = False  # between a successful CONNACK and the end
        self.writable = True
        # What the server's CONNACK said (5.0 properties; 3.x keeps these defaults).
        self.session_present = False
        self.keep_alive = 0
        self.receive_maximum = 65_535
        self.maximum_qos = 2
        self.retain_available = True
        self.maximum_packet_size = DEFAULT_MAX_PACKET_SIZE
        self.assigned_client_id: str | None = None
        #: Packet ids the owner's PUBLISH flows use: SUBSCRIBE/UNSUBSCRIBE avoid them
        #: (one id space per direction [MQTT-2.2.1-3]).
        self.packet_ids_in_use: Container[int] = ()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed" if self.closed.done() else "opening"
        return f"<MqttClient {self.name} {state}>"

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket (or loopback) is open: CONNECT may be sent."""
        self._transport = cast(Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Bytes from the server: decode and dispatch every complete packet."""
        self._last_received = time.monotonic()
        self._ping_sent_at = None  # any packet shows the server is alive
        try:
            packets = self._reader.feed(data)
        except MQTTError as exc:
            self._fail(f"invalid packet from the server: {exc}")
            return
        for packet in packets:
            if self.closed.done():
                return
            try:
                self._dispatch(packet)
            except MQTTError as exc:
                self._fail(str(exc))
            except Exception:
                logger.exception("%s: internal error handling %r", self.name, packet)
                self._fail("internal error")

    def connection_lost(self, exc: Exception | None) -> None:
        """The transport is gone: fail whatever waits, tell the handler."""
        if self.closed.done():
            return
        if not self.close_reason:
            self.close_reason = f"connection lost: {exc}" if exc else "closed by the server"
        self._finish()

    def pause_writing(self) -> None:
        """The transport's buffer is full: stop feeding it."""
        self.writable = False
        self._handler.client_writable(self, False)

    def resume_writing(self) -> None:
        """The transport's buffer drained."""
        self.writable = True
        self._handler.client_writable(self, True)

    # -- operations ------------------------------------------------------------------------

    async def connect(self, packet: Connect, timeout: float) -> Connack:
        """Send CONNECT and wait for CONNACK; raise `ConnectRefused` when it refuses.

        Raises `ConnectionClosed` when the connection ends first and `TimeoutError`
        (after aborting the transport) when CONNACK takes longer than `timeout`.
        """
        self._connack = self._loop.create_future()
        self._connect = packet
        self.send(packet)
        try:
            connack = await asyncio.wait_for(asyncio.shield(self._connack), timeout)
        except TimeoutError:
            self.abort("no CONNACK in time")
            raise
        if connack.reason_code:
            self.abort(f"CONNACK 0x{connack.reason_code:02X}")
            raise ConnectRefused(connack.reason_code, self.protocol_level)
        return connack

    def _accept(self, packet: Connect, connack: Connack) -> None:
        self.connected = True
        self.session_present = connack.session_present
        self.keep_alive = packet.keep_alive
        props = connack.properties
        if props is not None:
            if props.server_keep_alive is not None:
                # [MQTT-3.2.2-21]: the client uses the Server Keep Alive instead of its own.
                self.keep_alive = props.server_keep_alive
            if props.receive_maximum is not None:
                self.receive_maximum = props.receive_maximum
            if props.maximum_qos is not None:
                self.maximum_qos = props.maximum_qos
            if props.retain_available is not None:
                self.retain_available = bool(props.retain_available)
            if props.maximum_packet_size is not None:
                self.maximum_packet_size = props.maximum_packet_size
            self.assigned_client_id = props.assigned_client_identifier
        if self.keep_alive:
            self._schedule_keepalive()

    async def subscribe(
        self,
        subscriptions: Sequence[Subscription],
        timeout: float,
        properties: Properties | None = None,
    ) -> list[int]:
        """SUBSCRIBE and wait for SUBACK; return its codes, one per subscription."""
        packet_id, future = self._control_future()
        self.send(Subscribe(packet_id, list(subscriptions), properties))
        ack = await self._await_ack(packet_id, future, timeout)
        return list(ack.reason_codes)

    async def unsubscribe(self, topic_filters: Sequence[str], timeout: float) -> list[int]:
        """UNSUBSCRIBE and wait for UNSUBACK; return its 5.0 codes (empty for 3.x)."""
        packet_id, future = self._control_future()
        self.send(Unsubscribe(packet_id, list(topic_filters)))
        ack = await self._await_ack(packet_id, future, timeout)
        return list(ack.reason_codes)

    def _control_future(self) -> tuple[int, asyncio.Future[SubAck | UnsubAck]]:
        # SUBSCRIBE/UNSUBSCRIBE ids only need to be unique among what awaits an answer
        # here; the bridge sends them before its QoS flows start (bridge.py).
        packet_id = self._next_control_id
        in_use = self.packet_ids_in_use
        while packet_id in self._acks or packet_id in in_use:
            packet_id = packet_id % 65_535 + 1
        self._next_control_id = packet_id % 65_535 + 1
        future: asyncio.Future[SubAck | UnsubAck] = self._loop.create_future()
        self._acks[packet_id] = future
        return packet_id, future

    async def _await_ack(
        self, packet_id: int, future: asyncio.Future[SubAck | UnsubAck], timeout: float
    ) -> SubAck | UnsubAck:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self.abort("no SUBACK/UNSUBACK in time")
            raise
        finally:
            self._acks.pop(packet_id, None)

    def send(self, packet: Packet) -> None:
        """Encode `packet` at this connection's level and write it (dropped once closed)."""
        self.write(encode(packet, self.protocol_level))

    def send_publish(self, packet: Publish) -> bool:
        """Write a PUBLISH; False (nothing sent) when it exceeds the server's maximum
        packet size (5.0 3.1.2.11.4 says such a message is discarded, not split)."""
        data = encode(packet, self.protocol_level)
        if len(data) > self.maximum_packet_size:
            return False
        self.write(data)
        return True

    def write(self, data: bytes) -> None:
        """Write encoded bytes (dropped once the connection is closing)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._last_sent = time.monotonic()
        transport.write(data)

    def pause_reading(self) -> None:
        """Stop reading from the server until `resume_reading`."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the server again."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def disconnect(self, reason_code: int = ReasonCode.SUCCESS) -> None:
        """Send DISCONNECT and close (3.x: the reason code is not sent)."""
        if not self.closed.done():
            self.send(Disconnect(reason_code))
            self.close_reason = self.close_reason or "disconnected"
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (no DISCONNECT)."""
        if not self.close_reason:
            self.close_reason = reason
        if self._transport is not None:
            self._transport.abort()
        # A loopback or a transport that was never opened reports nothing back.
        self._finish()

    # -- incoming packets ----------------------------------------------------------------

    def _dispatch(self, packet: Packet) -> None:
        if isinstance(packet, _FLOW_TYPES):
            if not self.connected:
                raise ProtocolError(f"{type(packet).__name__} before CONNACK")
            self._handler.flow_packet(self, packet)
        elif type(packet) is PingResp:
            pass
        elif type(packet) is Connack:
            waiter = self._connack
            if waiter is None or waiter.done() or self._connect is None:
                raise ProtocolError("unexpected CONNACK")
            if not packet.reason_code:
                # Accepted now, not when connect() resumes: the server may send the
                # session's messages in the same read as CONNACK.
                self._accept(self._connect, packet)
            waiter.set_result(packet)
        elif type(packet) is SubAck or type(packet) is UnsubAck:
            future = self._acks.get(packet.packet_id)
            if future is not None and not future.done():
                future.set_result(packet)
        elif type(packet) is Disconnect:
            self.close_reason = f"DISCONNECT 0x{packet.reason_code:02X} from the server"
            if self._transport is not None:
                self._transport.close()
            self._finish()
        elif type(packet) is Auth:
            raise ProtocolError("AUTH: no enhanced authentication was asked for")
        else:
            raise ProtocolError(f"{type(packet).__name__} is sent by clients only")

    def _fail(self, reason: str) -> None:
        logger.warning("%s: %s", self.name, reason)
        if self.connected and self.protocol_level == 5:
            self.send(Disconnect(ReasonCode.PROTOCOL_ERROR))
        self.abort(reason)

    def _finish(self) -> None:
        if self.closed.done():
            return
        self.connected = False
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        closed = ConnectionClosed(self.close_reason or "connection closed")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(closed)
            self._connack.exception()  # retrieved: no "never retrieved" warning
        for future in self._acks.values():
            if not future.done():
                future.set_exception(closed)
                future.exception()
        self.closed.set_result(None)
        self._handler.client_closed(self)

    # -- keep alive ----------------------------------------------------------------------

    def _schedule_keepalive(self) -> None:
        self._keepalive_handle = self._loop.call_later(
            max(self.keep_alive / 2, 0.5), self._on_keepalive
        )

    def _on_keepalive(self) -> None:
        self._keepalive_handle = None
        if self.closed.done():
            return
        now = time.monotonic()
        half = self.keep_alive / 2
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at >= self.keep_alive:
                self.abort(f"no answer to PINGREQ within the keep alive ({self.keep_alive} s)")
                return
        elif now - self._last_sent >= half or now - self._last_received >= half:
            self._ping_sent_at = now
            self.send(PingReq())
        self._schedule_keepalive()
