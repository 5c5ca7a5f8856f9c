"""The per-client MQTT state machine: bytes in, packets decoded, bytes out (sans-IO).

Theory of operation. The network shell creates one `Connection` per socket through
`Broker.connection(sink, peer)` and feeds it whatever bytes arrive; everything the
connection says goes to the `Sink`. Time comes from the broker's clock and every timer
lives in the broker's one `Scheduler`.

States (`State`), and every transition in one table, as h11 keeps its own
(`TRANSITIONS` at the bottom: (state, packet class) -> handler):

    AWAIT_CONNECT --CONNECT, plain auth--> CONNECTED --DISCONNECT, error--> CLOSING
          |  CONNECT naming an Authentication Method          ^
          v                                                   |
    AUTHENTICATING --AUTH exchange succeeds----------------------+
          (a cluster: into CONNECTED through CLAIMING, once the claim is answered)

- AWAIT_CONNECT: the first packet must be CONNECT [MQTT-3.1.0-1], within
  `settings.connect_timeout`; anything else closes (0x82, no CONNACK for 3.x).
  handshake.py checks the CONNECT, authenticates and answers CONNACK.
- AUTHENTICATING (5.0 enhanced authentication, 4.12): only AUTH or DISCONNECT
  [MQTT-3.1.2-30]; a second CONNECT, or anything else, is a protocol error (0x82).
- CLAIMING (a cluster only): the cluster claims the client id before the CONNACK
  (`Broker.claim_before_connack`); packets after the CONNECT wait until CONNECTED.
  A CONNECTED connection whose SUBSCRIBE waits for the cluster (subscribe.py) holds
  its later packets the same way (CLAIMING's row of the table) until its SUBACK.
- CONNECTED: every client packet; a second CONNECT is a protocol error
  [MQTT-3.1.0-2], and so is a packet only servers send. AUTH re-authenticates.
- CLOSING: the sink was told to close (it flushes what was written); input is ignored.

Any `MQTTError` raised while decoding or handling ends the connection with that
error's reason code: a 5.0 client gets DISCONNECT (or CONNACK before the session
starts), a 3.x client just sees the socket close (3.x has no way to say why).

Every packet from the client moves its connection to the tail of its keepalive lane
(keepalive.py, O(1), no timer of its own): a client silent for 1.5 x Keep Alive is
disconnected [MQTT-3.1.2-24] (5.0: DISCONNECT 0x8D first). Reading stops while the
client is over `max_publish_rate` or its receivers are saturated (flow.py).

Acknowledgements of the client's PUBLISH flows leave in the order the PUBLISH packets
came, some after a store commit (inbound.py's `send_ack`; `send_ready_acks` here).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol.encoder import encode
from ..protocol.errors import MQTTError, ProtocolError, UnsupportedProtocolVersion
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
    UnsubAck,
    Unsubscribe,
)
from ..protocol.reader import PacketReader
from ..protocol.reason_codes import ReasonCode
from .flow import HOLD_CLAIM, HOLD_SUBACK
from .handshake import Handshake, refuse_protocol_version
from .inbound import (
    on_puback,
    on_pubcomp,
    on_publish,
    on_pubrec,
    on_pubrel,
    register_commit_wait,
)
from .outbound import PublisherAck
from .rare import RareFields
from .reason_strings import reason_properties
from .subscribe import on_subscribe, on_unsubscribe

if TYPE_CHECKING:
    from ..auth.limits import TokenBucket
    from .broker import Broker
    from .keepalive import KeepaliveLane, Keeper
    from .scheduler import Scheduler
    from .session import Session

__all__ = ["TRANSITIONS", "Connection", "Sink", "State"]

logger = logging.getLogger("mqttd.connection")


class State(enum.IntEnum):
    """Where a connection is in its life (see the module docstring)."""

    AWAIT_CONNECT = 0
    AUTHENTICATING = 1
    CONNECTED = 2
    CLOSING = 3
    CLAIMING = 4

    @property
    def label(self) -> str:
        """The state as a log line says it."""
        return ("awaiting CONNECT", "authenticating", "connected", "closing", "claiming")[self]


# Module-level names, as websockets has them: on Python 3.11 `State.CLOSING` is a
# slow class attribute (about 75 ns), and the states are tested once per read. (An
# IntEnum, not an Enum, because Enum hashes in Python: `_enter`'s lookup.)
AWAIT_CONNECT = State.AWAIT_CONNECT
AUTHENTICATING = State.AUTHENTICATING
CONNECTED = State.CONNECTED
CLOSING = State.CLOSING
CLAIMING = State.CLAIMING

_PINGRESP = b"\xd0\x00"


class Sink(Protocol):
    """What the network shell gives a Connection: where its bytes go."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer (bytes-like; the shell coalesces writes)."""
        ...

    def close(self) -> None:
        """Flush then close the transport. Idempotent."""
        ...

    def pause_reading(self) -> None:
        """Stop reading from the peer (backpressure on a publisher)."""
        ...

    def resume_reading(self) -> None:
        """Read from the peer again."""
        ...


class Connection(RareFields):
    """One client connection: packets in, packets out (see the module docstring).

    Its public fields are also what handshake.py (the CONNECT), inbound.py (PUBLISH
    from the client and the acks it gets), subscribe.py (SUBSCRIBE, UNSUBSCRIBE) and
    flow.py (holding reading) work on: the parts of this machine kept in files of
    their own.
    """

    __slots__ = (
        "_handlers",
        "_reader",
        "_reading_held",
        "_state",
        "acks",
        "broker",
        "client_id",
        "close_reason",
        "connected_at",
        "handshake",
        "keep_alive",
        "keepalive_deadline",
        "keepalive_lane",
        "keepalive_next",
        "keepalive_prev",
        "listener",
        "max_topic_length",
        "max_topic_levels",
        "maximum_qos",
        "peer",
        "protocol_level",
        "publish_bucket",
        "qos1_unacked",
        "retain_available",
        "session",
        "settings",
        "sink",
        "stats",
        "username",
    )

    def __init__(
        self,
        broker: Broker,
        sink: Sink,
        peer: str,
        listener: str = "tcp",
        identity: str | None = None,
    ) -> None:
        # The rarely set fields (the will, topic aliases, the throttle, 5.0's CONNECT
        # properties...) are `RareField`s of RareFields (rare.py): no slot of their own.
        self._rare = None
        self.broker = broker
        self.settings = settings = broker.settings
        self.stats = broker.stats
        self.maximum_qos = settings.maximum_qos
        self.max_topic_length = settings.max_topic_length
        self.max_topic_levels = settings.max_topic_levels
        self.retain_available = settings.retain_available
        self.sink = sink
        self.peer = peer
        self.listener = listener
        #: Unix time the socket was accepted (the admin API's "connected since").
        self.connected_at = broker.clock.wall()
        # Until the CONNECT is accepted a socket gets only `max_connect_size` bytes (the
        # CONNECT, and AUTH packets of an exchange): an unauthenticated client cannot
        # make us buffer or decode much (issue 14). `established` lifts it.
        connect_limit = settings.max_connect_size or settings.max_packet_size
        self._reader = PacketReader(min(connect_limit, settings.max_packet_size))
        self._state = AWAIT_CONNECT
        self._handlers = _HANDLERS[AWAIT_CONNECT]
        self.protocol_level = 4
        self.client_id: str | None = None
        if identity is not None:
            self.identity = identity
        #: The user name this client acts as once accepted (for ACLs, session ownership).
        self.username: str | None = None
        #: The CONNECT and AUTH exchange (handshake.py); None once CONNECTED without an
        #: Authentication Method (nothing can re-authenticate then).
        self.handshake: Handshake | None = Handshake(self, broker)
        #: `max_publish_rate`'s bucket (flow.py's `throttle`), set by the handshake.
        self.publish_bucket: TokenBucket | None = None
        # Why the socket is not read: flow.HOLD_* bits (throttle, back-pressure); 0 = reading.
        self._reading_held = 0
        self.session: Session | None = None
        self.keep_alive = 0
        #: The keepalive (keepalive.py): this client's lane, None with Keep Alive 0; its
        #: deadline and neighbours there, set when it joins.
        self.keepalive_lane: KeepaliveLane | None = None
        self.keepalive_deadline = 0.0
        self.keepalive_prev: Keeper | None = None
        self.keepalive_next: Keeper | None = None
        # Why the connection ended, for the disconnect log line.
        self.close_reason = "connection lost"
        #: Acks queued behind a store commit or an end-to-end delivery, in order
        #: (inbound.py's `send_ack` queues them, `send_ready_acks` sends them).
        self.acks: deque[PublisherAck] | None = None
        self.qos1_unacked = 0  # inbound QoS 1 not yet acknowledged (Receive Maximum)

    def __repr__(self) -> str:
        return f"<Connection {self.client_id!r} {self.peer} {self._state.label}>"

    @property
    def scheduler(self) -> Scheduler:
        """The broker's one timer heap (flow.py's throttle arms its timer there)."""
        return self.broker.scheduler

    @property
    def state(self) -> State:
        """Where the connection is in its life (the transition table's first key)."""
        return self._state

    @property
    def closed(self) -> bool:
        """True once the connection has ended (the sink was told to close)."""
        return self._state is CLOSING

    @property
    def connected(self) -> bool:
        """True between CONNACK and the end of the connection."""
        return self._state is CONNECTED

    def _enter(self, state: State) -> None:
        # The one place a state changes, with the row of the table it selects.
        self._state = state
        self._handlers = _HANDLERS[state]

    # -- for the handshake (handshake.py) ----------------------------------------------

    def authenticating(self) -> None:
        """An enhanced-authentication exchange started: only AUTH or DISCONNECT now."""
        self._enter(AUTHENTICATING)

    def claiming(self) -> None:
        """The cluster claims the client id: no CONNACK and nothing read until `claimed`."""
        self._enter(CLAIMING)
        self.hold_reading(HOLD_CLAIM)

    def claimed(self) -> None:
        """The CONNACK ended CLAIMING: read again, handle what was held."""
        held, self.held_packets = self.held_packets, None
        self.release_reading(HOLD_CLAIM)
        try:
            for packet in held or ():
                self._handlers[type(packet)](self, packet)
        except MQTTError as exc:
            self.fail(exc.reason_code, str(exc))

    def _hold(self, packet: Packet) -> None:
        held = self.held_packets
        if held is None:
            held = self.held_packets = []
        held.append(packet)

    # -- for a SUBSCRIBE that waits for the cluster (subscribe.py) ---------------------

    def hold_packets(self) -> None:
        """Hold the client's next packets, unread and unhandled, until `release_packets`
        (a SUBACK waits for the cluster): they keep their order, acks included."""
        self._handlers = _HANDLERS[CLAIMING]
        self.hold_reading(HOLD_SUBACK)

    def release_packets(self) -> None:
        """Handle the packets held since `hold_packets` (the first may hold again)."""
        if self._state is not CONNECTED:
            return
        self._handlers = _HANDLERS[CONNECTED]
        held, self.held_packets = self.held_packets, None
        try:
            for packet in held or ():
                self._handlers[type(packet)](self, packet)
        except MQTTError as exc:
            self.fail(exc.reason_code, str(exc))
        except Exception:
            logger.exception("internal error on %r", self)
            self.fail(ReasonCode.UNSPECIFIED_ERROR, "internal error")
        if self._handlers is _HANDLERS[CONNECTED]:
            self.release_reading(HOLD_SUBACK)

    def established(self, keep_alive: int) -> None:
        """The CONNACK accepting the client went out: lift the pre-CONNECT size bound,
        count the client and arm its keepalive [MQTT-3.1.2-24]."""
        self._enter(CONNECTED)
        self._reader.max_packet_size = self.settings.max_packet_size
        stats = self.stats
        stats.clients_connected += 1
        stats.clients_total += 1
        if keep_alive:
            self.broker.keepalive.join(self, keep_alive)

    # -- input from the shell ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer. Never raises for bad bytes: it answers or closes.

        A socket read goes straight to the reader and the transition table, no call
        in between (one call less per read, measured on pairs-q1: docs/benchmarks.md,
        ninth round)."""
        if self._state is CLOSING:
            return
        self.stats.bytes_received += len(data)
        reader = self._reader
        try:
            packets = reader.feed(data)
        except UnsupportedProtocolVersion as exc:
            refuse_protocol_version(self, self.broker, exc)
            return
        except MQTTError as exc:
            self.fail(exc.reason_code, str(exc))
            return
        if not packets:
            return  # (a reader that stopped returned its CONNECT: never empty)
        self.stats.packets_received += len(packets)
        lane = self.keepalive_lane
        if lane is not None:
            lane.touch(self, self.broker.clock.now())
        wait = self.broker.commit_wait
        # Saved and put back: a handler may feed another connection (in-process).
        reading, acks, patient = wait.reading, wait.acks, wait.patient
        wait.reading = self
        wait.acks = None
        try:
            for packet in packets:
                # The transition table: this state's handler for this packet's class.
                self._handlers[type(packet)](self, packet)
        except MQTTError as exc:
            self.fail(exc.reason_code, str(exc))
        except Exception:
            logger.exception("internal error on %r", self)
            self.fail(ReasonCode.UNSPECIFIED_ERROR, "internal error")
        finally:
            if wait.acks is not None:
                register_commit_wait(self)
            wait.reading, wait.acks, wait.patient = reading, acks, patient
        if reader.stopped and self._state is not CLOSING:
            # The reader stopped after the CONNECT: go on with the bytes that followed
            # it, now under the limits its answer set (pre-CONNECT bound, issue 14).
            self.data_received(b"")

    def connection_lost(self) -> None:
        """The socket is gone (EOF, reset, or our own close). Publishes the will if any."""
        if self._state is CLOSING:
            return
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r: connection lost", self)
        self.close(publish_will=True)

    def writable_changed(self, writable: bool) -> None:
        """The transport crossed its high (False) or low (True) water mark."""
        session = self.session
        if session is not None:
            session.set_writable(writable)

    # -- ending the connection ---------------------------------------------------------

    def disconnect(
        self, reason_code: int, publish_will: bool = True, reason: str | None = None
    ) -> None:
        """End the connection from the server side; 5.0 clients get DISCONNECT first.

        Used for takeover (0x8E), keepalive (0x8D), shutdown (0x8B) and protocol errors.
        The DISCONNECT carries `reason` (else the code's text) as its Reason String.
        """
        if self._state is CLOSING:
            return
        if self.close_reason == "connection lost":
            self.close_reason = f"server DISCONNECT 0x{reason_code:02X}"
        if self._state is CONNECTED and self.protocol_level == 5:
            props = reason_properties(reason_code, reason)
            self.write(self.encode_v5(Disconnect(reason_code, props)))
        self.close(publish_will)

    def fail(self, reason_code: int, why: str) -> None:
        """A protocol violation (or malformed bytes): say why if 5.0, then close."""
        if self._state is CLOSING:
            return
        self.stats.protocol_errors += 1
        if reason_code == ReasonCode.PACKET_TOO_LARGE and self.broker.clustered:
            # Said where it is decided (docs/cluster.md, "Large messages").
            why += " (in a cluster: limits.max_packet_size or what NATS's max_payload carries)"
        self.close_reason = f"{why} (0x{reason_code:02X})"
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r: closing: %s (0x%02X)", self, why, reason_code)
        if self._state is not CONNECTED:  # before CONNACK
            if self._reader.protocol_level == 5 and reason_code >= 0x80:
                # 5.0 [MQTT-4.13.1-1]: a CONNACK may carry the reason before closing.
                props = reason_properties(reason_code, why)
                self.write(self.encode_v5(Connack(False, reason_code, props)))
            self.close(publish_will=False)
            return
        self.disconnect(reason_code, publish_will=True, reason=why)

    def close(self, publish_will: bool) -> None:
        """Enter CLOSING: stop the timers, close the sink, tell the broker."""
        was_connected = self._state is CONNECTED
        self._enter(CLOSING)
        if self.handshake is not None:
            self.handshake.cancel_timer()
        if self.keepalive_lane is not None:
            self.keepalive_lane.remove(self)
        if self.throttle_timer is not None:
            self.throttle_timer.cancel()
            self.throttle_timer = None
        if self.blocked_on is not None:
            self.broker.flow.forget(self)
        self.sink.close()
        self.broker.connection_closed(self, was_connected, publish_will)

    def keepalive_expired(self, now: float) -> None:
        """Nothing came for 1.5 x Keep Alive (its lane says so, keepalive.py)."""
        if self._state is not CONNECTED:
            return  # its lane drops it
        if self._reading_held and self.keepalive_lane is not None:
            # We are not reading: the client's packets wait in our socket, unseen.
            self.keepalive_lane.touch(self, now)
            return
        self.stats.keepalive_timeouts += 1
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r: keepalive of %d s expired", self, self.keep_alive)
        self.disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT, publish_will=True)

    # -- output ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(data)
        self.sink.write(data)

    def encode_v5(
        self, packet: Connack | Disconnect | PubAck | PubRec | PubRel | PubComp | SubAck
    ) -> bytes:
        """Encode a 5.0 packet; its Reason String goes if the packet would then exceed
        the client's Maximum Packet Size [MQTT-3.1.2-25] [MQTT-3.2.2-19]."""
        data = encode(packet, 5)
        props = packet.properties
        if len(data) > self.peer_max_packet and props is not None:
            props = replace(props, reason_string=None, user_property=())
            packet.properties = None if props.is_empty() else props
            data = encode(packet, 5)
        return data

    def send_ready_acks(self) -> None:
        """Send the queued acks that are ready, up to the first that is not: they
        leave in the order the PUBLISH packets came [MQTT-4.6.0-2] [MQTT-4.6.0-3]."""
        acks = self.acks
        while acks and acks[0].ready:
            ack = acks.popleft()
            if ack.qos1:
                self.qos1_unacked -= 1
            if self._state is CONNECTED:
                self.write(ack.data)
            ack.sent()

    def hold_reading(self, why: int) -> None:
        """Stop reading the client for `why` (a flow.HOLD_* bit; several may hold at once)."""
        held = self._reading_held
        self._reading_held = held | why
        if not held and self._state is not CLOSING:
            self.sink.pause_reading()

    def release_reading(self, why: int) -> None:
        """`why` no longer holds reading back; read again once nothing does."""
        held = self._reading_held
        if not held & why:
            return
        held = self._reading_held = held & ~why
        if not held and self._state is CONNECTED:
            self.sink.resume_reading()
            lane = self.keepalive_lane
            if lane is not None:
                # What the client sent meanwhile is read only now: not its silence.
                lane.touch(self, self.broker.clock.now())

    # -- the other packets -------------------------------------------------------------

    def _on_pingreq(self, packet: PingReq) -> None:
        self.write(_PINGRESP)

    def _on_disconnect(self, packet: Disconnect) -> None:
        publish_will = False
        if self.protocol_level == 5:
            props = packet.properties
            if props is not None and props.session_expiry_interval is not None:
                session = self.session
                assert session is not None
                # The CONNECT's value counts, not what we granted (3.14.2.2.2).
                if self.requested_expiry == 0 and props.session_expiry_interval != 0:
                    raise ProtocolError(
                        "DISCONNECT sets a Session Expiry Interval after 0 [MQTT-3.14.2-2]"
                    )
                self.broker.set_session_expiry(session, props.session_expiry_interval)
            # [MQTT-3.14.4-3]: only reason 0x00 deletes the will; 0x04 asks for it.
            publish_will = packet.reason_code != ReasonCode.SUCCESS
        self.close_reason = f"DISCONNECT 0x{packet.reason_code:02X}"
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r: DISCONNECT 0x%02X received", self, packet.reason_code)
        if not publish_will:
            self.will = None
        self.close(publish_will)

    def _on_auth(self, packet: Auth) -> None:
        handshake = self.handshake
        if handshake is None:
            raise ProtocolError(
                "AUTH from a client that named no Authentication Method [MQTT-4.12.0-7]"
            )
        handshake.on_auth(packet)  # the exchange, or re-authentication

    def _on_connect(self, packet: Connect) -> None:
        assert self.handshake is not None
        self.handshake.on_connect(packet)

    def _on_second_connect(self, packet: Connect) -> None:
        raise ProtocolError("second CONNECT [MQTT-3.1.0-2]")

    def _on_server_packet(self, packet: Packet) -> None:
        raise ProtocolError(f"{type(packet).__name__} is sent by servers only")

    def _not_connect(self, packet: Packet) -> None:
        # [MQTT-3.1.0-1]: nothing before CONNECT; just close.
        self.fail(ReasonCode.PROTOCOL_ERROR, "first packet is not CONNECT")

    def _not_auth(self, packet: Packet) -> None:
        why = "only AUTH or DISCONNECT before CONNACK [MQTT-3.1.2-30]"
        self.fail(ReasonCode.PROTOCOL_ERROR, why)

    def _quit_authentication(self, packet: Disconnect) -> None:
        self.close(publish_will=False)

    def _ignore(self, packet: Packet) -> None:
        pass  # CLOSING: what followed in the same read is dropped


Handler = Callable[[Connection, Any], None]

# CONNECTED: every packet class the reader makes, each with its handler.
_CONNECTED: dict[type, Handler] = {
    Connect: Connection._on_second_connect,
    Publish: on_publish,
    PubAck: on_puback,
    PubRec: on_pubrec,
    PubRel: on_pubrel,
    PubComp: on_pubcomp,
    Subscribe: on_subscribe,
    Unsubscribe: on_unsubscribe,
    PingReq: Connection._on_pingreq,
    Disconnect: Connection._on_disconnect,
    Auth: Connection._on_auth,
    Connack: Connection._on_server_packet,
    SubAck: Connection._on_server_packet,
    UnsubAck: Connection._on_server_packet,
    PingResp: Connection._on_server_packet,
}

TRANSITIONS: dict[tuple[State, type], Handler] = {
    **{(AWAIT_CONNECT, cls): Connection._not_connect for cls in _CONNECTED},
    (AWAIT_CONNECT, Connect): Connection._on_connect,
    **{(AUTHENTICATING, cls): Connection._not_auth for cls in _CONNECTED},
    (AUTHENTICATING, Connect): Connection._on_second_connect,
    (AUTHENTICATING, Auth): Connection._on_auth,
    (AUTHENTICATING, Disconnect): Connection._quit_authentication,
    **{(CONNECTED, cls): handler for cls, handler in _CONNECTED.items()},
    **{(CLOSING, cls): Connection._ignore for cls in _CONNECTED},
    **{(CLAIMING, cls): Connection._hold for cls in _CONNECTED},
    (CLAIMING, Connect): Connection._on_second_connect,
}
"""(state, packet class) -> handler: every transition of the machine, for every packet
class the reader makes. A handler that ends the connection enters CLOSING; the
handshake enters AUTHENTICATING and CONNECTED (`authenticating`, `established`)."""

# Per state, so the hot path looks a packet up in one dict, as before the table.
_HANDLERS: dict[State, dict[type, Handler]] = {
    state: {cls: h for (s, cls), h in TRANSITIONS.items() if s is state} for state in State
}
