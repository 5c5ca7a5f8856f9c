"""The per-client MQTT state machine: bytes in, packets decoded, bytes out (sans-IO).

Theory of operation. The network shell creates one `Connection` per socket through
`Broker.connection(sink, peer)` and feeds it whatever bytes arrive; everything the
connection says goes to the `Sink`. Time comes from the broker's clock and every timer
lives in the broker's one `Scheduler`.

States: AWAIT_CONNECT -> CONNECTED -> CLOSED. The first packet must be CONNECT
[MQTT-3.1.0-1] and must arrive within `settings.connect_timeout`; a second CONNECT is
a protocol error [MQTT-3.1.0-2]. Packets are dispatched through a table keyed by packet
class. Any `MQTTError` raised while decoding or handling ends the connection with that
error's reason code: a 5.0 client gets DISCONNECT (or CONNACK before the session
starts), a 3.x client just sees the socket close (3.x has no way to say why).

Every packet from the client moves the keepalive deadline (`Timer.postpone`, O(1)): a
client silent for 1.5 x Keep Alive is disconnected [MQTT-3.1.2-24] (5.0: DISCONNECT
0x8D first).

Acknowledgement order. A PUBACK/PUBREC for a message that was recorded in the store is
sent only from `store.after_commit` (the persistence contract). Once one ack waits for
a commit, later acks wait too, so acks leave in the order the PUBLISH packets came
[MQTT-4.6.0-2], [MQTT-4.6.0-3].
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from ..auth.hooks import ConnectInfo
from ..auth.limits import TokenBucket, address_of
from ..protocol.encoder import encode
from ..protocol.errors import (
    MQTTError,
    ProtocolError,
    TopicNameInvalid,
    UnsupportedProtocolVersion,
)
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
from ..protocol.properties import Properties
from ..protocol.reader import PacketReader
from ..protocol.reason_codes import ConnackReturnCode, ReasonCode, connack_code_for_v3
from ..protocol.topics import validate_topic_name
from ..store.base import OutboundState
from .dead_letter import DropReason
from .delivery import MATCHED, RECORDED
from .enhanced_auth import on_auth, start_connect_auth
from .flow import HOLD_CLAIM, HOLD_THROTTLE
from .message import Message
from .reason_strings import REASON_TEXT, reason_properties

if TYPE_CHECKING:
    from .broker import Broker
    from .enhanced_auth import AuthExchange
    from .scheduler import Timer
    from .session import Session

__all__ = ["Connection", "Sink"]

logger = logging.getLogger("mqttd.connection")

_AWAIT_CONNECT = 0
_CONNECTED = 1
_CLOSED = 2

_MAX_PACKET_SIZE = 268_435_455
_MAX_PACKET_SIZE_UNLIMITED = 268_435_460  # above anything the wire can carry
_U32 = 0xFFFF_FFFF  # a session expiry interval that never ends
_PINGRESP = b"\xd0\x00"

# Why reading a client is held back (`Connection.hold_reading`): bits, so a throttle
# ending does not resume a client that back-pressure still holds, and the reverse.

# First bytes of the acknowledgements the server sends.
_PUBACK = 0x40
_PUBREC = 0x50
_PUBREL = 0x62
_PUBCOMP = 0x70
_ACK_CLASS: dict[int, type[PubAck | PubRec | PubRel | PubComp]] = {
    _PUBACK: PubAck,
    _PUBREC: PubRec,
    _PUBREL: PubRel,
    _PUBCOMP: PubComp,
}


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


class Connection:
    """One client connection: packets in, packets out (see the module docstring)."""

    __slots__ = (
        "_acks_waiting",
        "_alias_max",
        "_aliases",
        "_broker",
        "_claim_held",
        "_connect_timer",
        "_connect_username",
        "_keepalive_grace",
        "_keepalive_timer",
        "_max_topic_length",
        "_max_topic_levels",
        "_maximum_qos",
        "_peer_max_packet",
        "_problem_info",
        "_publish_bucket",
        "_qos1_unacked",
        "_reader",
        "_reading_held",
        "_requested_expiry",
        "_retain_available",
        "_settings",
        "_sink",
        "_state",
        "_stats",
        "_throttle_timer",
        "auth_exchange",
        "auth_method",
        "blocked_on",
        "bridge",
        "client_id",
        "close_reason",
        "connected_at",
        "identity",
        "keep_alive",
        "listener",
        "peer",
        "protocol_level",
        "session",
        "username",
        "will",
        "will_delay",
    )

    def __init__(
        self,
        broker: Broker,
        sink: Sink,
        peer: str,
        listener: str = "tcp",
        identity: str | None = None,
    ) -> None:
        self._broker = broker
        self._settings = settings = broker.settings
        self._stats = broker.stats
        self._maximum_qos = settings.maximum_qos
        self._max_topic_length = settings.max_topic_length
        self._max_topic_levels = settings.max_topic_levels
        self._retain_available = settings.retain_available
        self._sink = sink
        self.peer = peer
        self.listener = listener
        #: Unix time the socket was accepted (the admin API's "connected since").
        self.connected_at = broker.clock.wall()
        # Until the CONNECT is accepted a socket gets only `max_connect_size` bytes (the
        # CONNECT, and AUTH packets of an exchange): an unauthenticated client cannot
        # make us buffer or decode much (issue 14). `_accept` lifts it.
        connect_limit = settings.max_connect_size or settings.max_packet_size
        self._reader = PacketReader(min(connect_limit, settings.max_packet_size))
        self._state = _AWAIT_CONNECT
        self.protocol_level = 4
        #: The client is a Mosquitto-style bridge (bridge bit in CONNECT's level byte).
        self.bridge = False
        self.client_id: str | None = None
        #: Common Name of the verified TLS client certificate (None without one).
        self.identity = identity
        #: The user name this client acts as once accepted (for ACLs, session ownership).
        self.username: str | None = None
        self._connect_username: str | None = None  # as CONNECT gave it, for refusal lines
        self._publish_bucket: TokenBucket | None = None  # settings.max_publish_rate
        self._throttle_timer: Timer | None = None
        # Why the socket is not read: _HOLD_* bits (throttle, back-pressure); 0 = reading.
        self._reading_held = 0
        #: Back-pressure (flow.py): the saturated sessions this publisher waits for.
        self.blocked_on: set[Session] | None = None
        self.session: Session | None = None
        self.keep_alive = 0
        self._keepalive_grace = 0.0
        self._keepalive_timer: Timer | None = None
        self._connect_timer: Timer | None = broker.scheduler.call_later(
            settings.connect_timeout, self._on_connect_timeout
        )
        #: The will (3.1.2.5) while connected; None once the client said DISCONNECT.
        self.will: Message | None = None
        # Why the connection ended, for the disconnect log line.
        self.close_reason = "connection lost"
        self.will_delay = 0
        self._aliases: dict[int, str] | None = None
        self._alias_max = 0
        self._acks_waiting = 0  # acks queued behind a store commit
        #: Packets after the CONNECT while the cluster claims the client id; None = no claim.
        self._claim_held: list[Packet] | None = None
        self._qos1_unacked = 0  # inbound QoS 1 not yet acknowledged (Receive Maximum)
        self._peer_max_packet = _MAX_PACKET_SIZE_UNLIMITED  # the client's Maximum Packet Size
        self._problem_info = True  # 5.0 Request Problem Information [MQTT-3.1.2-29]
        self._requested_expiry = 0  # CONNECT's Session Expiry Interval [MQTT-3.14.2-2]
        #: Enhanced authentication (enhanced_auth.py): the CONNECT's Authentication
        #: Method, and the exchange in progress (before CONNACK, or re-authentication).
        self.auth_method: str | None = None
        self.auth_exchange: AuthExchange | None = None

    def __repr__(self) -> str:
        state = ("awaiting CONNECT", "connected", "closed")[self._state]
        return f"<Connection {self.client_id!r} {self.peer} {state}>"

    @property
    def closed(self) -> bool:
        """True once the connection has ended (the sink was told to close)."""
        return self._state == _CLOSED

    @property
    def connected(self) -> bool:
        """True between CONNACK and the end of the connection."""
        return self._state == _CONNECTED

    # -- input from the shell ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer. Never raises for bad bytes: it answers or closes."""
        if self._state == _CLOSED:
            return
        self._stats.bytes_received += len(data)
        self._handle(data)
        if self._state != _CLOSED and self._reader.stopped:
            # The reader stopped after the CONNECT: go on with the bytes that followed
            # it, now under the limits its answer set (pre-CONNECT bound, issue 14).
            self._handle(b"")

    def _handle(self, data: bytes) -> None:
        stats = self._stats
        try:
            packets = self._reader.feed(data)
        except UnsupportedProtocolVersion as exc:
            self._refuse_protocol_version(exc)
            return
        except MQTTError as exc:
            self._fail(exc.reason_code, str(exc))
            return
        if not packets:
            return
        stats.packets_received += len(packets)
        timer = self._keepalive_timer
        if timer is not None:
            timer.postpone(self._broker.clock.now() + self._keepalive_grace)
        try:
            for packet in packets:
                if self._state != _CONNECTED:
                    if self._state == _CLOSED:
                        return
                    if type(packet) is not Connect:
                        if self._claim_held is not None:
                            # CONNACK waits for the cluster's claim: keep them till then.
                            self._claim_held.append(packet)
                            continue
                        if self.auth_exchange is not None:
                            # Enhanced authentication: AUTH or DISCONNECT only [MQTT-3.1.2-30].
                            if isinstance(packet, Auth):
                                on_auth(self, packet)
                                continue
                            if isinstance(packet, Disconnect):
                                self._close(publish_will=False)
                                return
                        # [MQTT-3.1.0-1]: nothing before CONNECT; just close.
                        self._fail(ReasonCode.PROTOCOL_ERROR, "first packet is not CONNECT")
                        return
                _DISPATCH[type(packet)](self, packet)
        except MQTTError as exc:
            self._fail(exc.reason_code, str(exc))
        except Exception:
            logger.exception("internal error on %r", self)
            self._fail(ReasonCode.UNSPECIFIED_ERROR, "internal error")

    def connection_lost(self) -> None:
        """The socket is gone (EOF, reset, or our own close). Publishes the will if any."""
        if self._state == _CLOSED:
            return
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r: connection lost", self)
        self._close(publish_will=True)

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
        if self._state == _CLOSED:
            return
        if self.close_reason == "connection lost":
            self.close_reason = f"server DISCONNECT 0x{reason_code:02X}"
        if self._state == _CONNECTED and self.protocol_level == 5:
            props = reason_properties(reason_code, reason)
            self._write(self._encode_v5(Disconnect(reason_code, props)))
        self._close(publish_will)

    def _fail(self, reason_code: int, why: str) -> None:
        """A protocol violation (or malformed bytes): say why if 5.0, then close."""
        if self._state == _CLOSED:
            return
        self._stats.protocol_errors += 1
        self.close_reason = f"{why} (0x{reason_code:02X})"
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r: closing: %s (0x%02X)", self, why, reason_code)
        if self._state == _AWAIT_CONNECT:
            if self._reader.protocol_level == 5 and reason_code >= 0x80:
                # 5.0 [MQTT-4.13.1-1]: a CONNACK may carry the reason before closing.
                props = reason_properties(reason_code, why)
                self._write(self._encode_v5(Connack(False, reason_code, props)))
            self._close(publish_will=False)
            return
        self.disconnect(reason_code, publish_will=True, reason=why)

    def _close(self, publish_will: bool) -> None:
        was_connected = self._state == _CONNECTED
        self._state = _CLOSED
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
            self._throttle_timer = None
        if self.blocked_on is not None:
            self._broker.flow.forget(self)
        self._sink.close()
        self._broker.connection_closed(self, was_connected, publish_will)

    def _on_connect_timeout(self) -> None:
        self._connect_timer = None
        if self._state == _AWAIT_CONNECT:
            if logger.isEnabledFor(logging.INFO):
                logger.info("%r: no CONNECT within %.1f s", self, self._settings.connect_timeout)
            self._close(publish_will=False)

    def _on_keepalive_expired(self) -> None:
        self._keepalive_timer = None
        if self._state != _CONNECTED:
            return
        if self._reading_held:
            # We are not reading: the client's packets wait in our socket, unseen.
            self._keepalive_timer = self._broker.scheduler.call_later(
                self._keepalive_grace, self._on_keepalive_expired
            )
            return
        self._stats.keepalive_timeouts += 1
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r: keepalive of %d s expired", self, self.keep_alive)
        self.disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT, publish_will=True)

    # -- output ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        stats = self._stats
        stats.packets_sent += 1
        stats.bytes_sent += len(data)
        self._sink.write(data)

    def _send_ack(
        self,
        first_byte: int,
        packet_id: int,
        reason_code: int,
        recorded: bool,
        counted_qos1: bool = False,
    ) -> None:
        """Send PUBACK/PUBREC/PUBREL/PUBCOMP, after the store commit when needed.

        `counted_qos1`: this PUBACK ends a QoS 1 flow counted in `_qos1_unacked`.
        """
        if reason_code and self.protocol_level == 5:
            # A Reason String on refused publishes (PUBACK/PUBREC >= 0x80), only if the
            # client asked for problem information [MQTT-3.1.2-29]; PUBREL/PUBCOMP 0x92
            # (a lost packet id) say all there is to say with the code.
            props = (
                reason_properties(reason_code)
                if self._problem_info and first_byte <= _PUBREC
                else None
            )
            data = self._encode_v5(_ACK_CLASS[first_byte](packet_id, reason_code, props))
        else:
            # Reason code 0 without properties may be left out in 5.0 (3.4.2.1), so the
            # short form is every level's success ack: 4 bytes, built without the codec
            # (first byte, Remaining Length 2, packet id: one integer).
            data = ((first_byte << 24) | 0x20000 | packet_id).to_bytes(4)
        if recorded or self._acks_waiting:
            self._acks_waiting += 1
            self._broker.store.after_commit(lambda: self._send_committed(data, counted_qos1))
        else:
            if counted_qos1:
                self._qos1_unacked -= 1
            self._write(data)

    def _encode_v5(
        self, packet: Connack | Disconnect | PubAck | PubRec | PubRel | PubComp | SubAck
    ) -> bytes:
        """Encode a 5.0 packet; its Reason String goes if the packet would then exceed
        the client's Maximum Packet Size [MQTT-3.1.2-25] [MQTT-3.2.2-19]."""
        data = encode(packet, 5)
        props = packet.properties
        if len(data) > self._peer_max_packet and props is not None:
            props = replace(props, reason_string=None, user_property=())
            packet.properties = None if props.is_empty() else props
            data = encode(packet, 5)
        return data

    def _send_committed(self, data: bytes, qos1: bool) -> None:
        self._acks_waiting -= 1
        if qos1:
            self._qos1_unacked -= 1
        if self._state == _CONNECTED:
            self._write(data)

    # -- CONNECT -----------------------------------------------------------------------

    def _refuse_protocol_version(self, exc: UnsupportedProtocolVersion) -> None:
        # [MQTT-3.1.2-2]: answer 0x01 in the 3.x format, which every level can read.
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r: %s", self, exc)
        self._stats.connections_refused += 1
        if self._state == _AWAIT_CONNECT:
            self._write(encode(Connack(False, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION), 4))
        self._close(publish_will=False)

    def _refuse(self, reason_code: int, why: str) -> None:
        """CONNACK with an error code, then close (no session, no will)."""
        if logger.isEnabledFor(logging.INFO):
            username = self._connect_username
            logger.info(
                "%s: CONNECT from %s refused for %r (user %r): %s (0x%02X)",
                self.listener,
                self.peer,
                self.client_id,
                username,
                why,
                reason_code,
                extra={
                    "client_id": self.client_id,
                    "username": username,
                    "address": self.peer,
                    "listener": self.listener,
                    "reason_code": reason_code,
                },
            )
        self._stats.connections_refused += 1
        level = self.protocol_level
        if level == 5:
            props = reason_properties(reason_code, why)
            self._write(self._encode_v5(Connack(False, reason_code, props)))
        else:
            self._write(encode(Connack(False, connack_code_for_v3(reason_code)), level))
        self._close(publish_will=False)

    def _claim_answered(
        self,
        owned: bool,
        packet: Connect,
        client_id: str,
        assigned: bool,
        username: str | None,
        auth_props: Properties | None,
    ) -> None:
        """The cluster decided the claim on `client_id` (`Broker.claim_before_connack`):
        CONNACK now, then the packets that came after the CONNECT meanwhile."""
        held = self._claim_held or []
        self._claim_held = None
        if self._state == _CLOSED:
            return
        if not owned:
            # Another node's later claim won: that connection is the client's now.
            self._refuse(ReasonCode.SERVER_UNAVAILABLE, "client id taken over on another node")
            return
        self._accept(packet, client_id, assigned, username, auth_props, claimed=True)
        self.release_reading(HOLD_CLAIM)
        try:
            for held_packet in held:
                if self._state != _CONNECTED:
                    return
                _DISPATCH[type(held_packet)](self, held_packet)
        except MQTTError as exc:
            self._fail(exc.reason_code, str(exc))

    def _on_connect(self, packet: Connect) -> None:
        if (
            self._state == _CONNECTED
            or self.auth_exchange is not None
            or self._claim_held is not None
        ):
            raise ProtocolError("second CONNECT [MQTT-3.1.0-2]")
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        settings = self._settings
        level = self.protocol_level = packet.protocol_level
        self.bridge = packet.bridge
        self.client_id = packet.client_id  # as asked for; an assigned id replaces it below
        self._connect_username = packet.username
        props = packet.properties
        v5 = level == 5
        if v5 and props is not None:
            if props.maximum_packet_size is not None:
                self._peer_max_packet = props.maximum_packet_size
            self._problem_info = props.request_problem_information != 0
            self._requested_expiry = props.session_expiry_interval or 0

        client_id = packet.client_id
        assigned = False
        if not client_id:
            if level == 3:
                # 3.1 requires 1 to 23 characters (3.1 section 3.1).
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id in 3.1")
                return
            if not settings.allow_zero_length_client_id:
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id")
                return
            if level == 4 and not packet.clean_start:
                # [MQTT-3.1.3-8]: empty id with clean session 0 -> 0x02.
                self._refuse(
                    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id, clean session 0"
                )
                return
            # 3.1.1 [MQTT-3.1.3-6]; 5.0 3.1.3.1 (clean start 0 too: a fresh session).
            client_id = settings.client_id_prefix + secrets.token_hex(8)
            assigned = True
        elif len(client_id) > settings.max_client_id_length:
            self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
            return

        will = packet.will
        if will is not None:
            try:
                validate_topic_name(will.topic)
                if self._max_topic_levels and will.topic.count("/") >= self._max_topic_levels:
                    raise TopicNameInvalid("will topic deeper than max_topic_levels")
            except TopicNameInvalid as exc:
                if not v5:
                    self._fail(exc.reason_code, str(exc))
                else:
                    self._refuse(exc.reason_code, str(exc))
                return
            if will.qos > settings.maximum_qos:
                self._refuse(ReasonCode.QOS_NOT_SUPPORTED, "will QoS above Maximum QoS")
                return
            if settings.message_size_limit and len(will.payload) > settings.message_size_limit:
                self._refuse(ReasonCode.PACKET_TOO_LARGE, "will payload above message_size_limit")
                return
            if will.retain and not settings.retain_available:
                self._refuse(ReasonCode.RETAIN_NOT_SUPPORTED, "will retain not available")
                return
            if (
                will.properties is not None
                and will.properties.payload_format_indicator == 1
                and settings.validate_payload_format
                and not _is_utf8(will.payload)
            ):
                # 5.0 3.1.3.2.3: the Server MAY validate the will payload; CONNACK 0x99.
                self._refuse(ReasonCode.PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8")
                return
            will_response_topic = (
                will.properties.response_topic if will.properties is not None else None
            )
            if will_response_topic is not None and not _is_topic_name(will_response_topic):
                self._refuse(ReasonCode.PROTOCOL_ERROR, "will Response Topic is not a topic name")
                return

        broker = self._broker
        limiter = broker.connection_limiter
        if limiter is not None and not limiter.allow(address_of(self.peer), broker.clock.now()):
            self._refuse(ReasonCode.CONNECTION_RATE_EXCEEDED, "connection rate exceeded")
            return
        if v5 and props is not None and props.authentication_method is not None:
            # Enhanced authentication (4.12): the method decides, then calls _accept.
            start_connect_auth(self, packet, client_id, assigned, props.authentication_method)
            return
        result = broker.authenticate(
            ConnectInfo(
                client_id,
                packet.username,
                packet.password,
                level,
                self.peer,
                self.listener,
                self.identity,
            )
        )
        if not result.accepted:
            # Word the refusal as its code says (0x86 "bad user name or password").
            self._refuse(
                result.reason_code, REASON_TEXT.get(result.reason_code, "not authorised")
            )
            return
        username = result.username if result.username is not None else packet.username
        self._accept(packet, client_id, assigned, username, None)

    def _accept(
        self,
        packet: Connect,
        client_id: str,
        assigned: bool,
        username: str | None,
        auth_props: Properties | None,
        claimed: bool = False,
    ) -> None:
        """Complete an authenticated CONNECT: session, will, CONNACK.

        `auth_props`: the Authentication Method and Data of an enhanced authentication,
        for the CONNACK [MQTT-4.12.0-5]. enhanced_auth.py calls this too. In a cluster
        the client id is claimed first and this runs again with `claimed` once it is
        (`_claim_answered`).
        """
        settings = self._settings
        broker = self._broker
        level = self.protocol_level
        props = packet.properties
        v5 = level == 5
        will = packet.will
        if broker.session_owned_by_other(client_id, username):
            # The session stays as it is: not taken over, not ended by a clean start.
            self._refuse(ReasonCode.NOT_AUTHORIZED, "client id in use by another user")
            return
        authorise = broker.authorise
        if will is not None and self._broker_owned(will.topic):
            # As a PUBLISH there: the will could never be sent, so say so now.
            self._refuse(ReasonCode.NOT_AUTHORIZED, "will topic is the broker's ($SYS)")
            return
        if (
            will is not None
            and authorise is not None
            and not authorise(client_id, username, "write", will.topic)
        ):
            self._refuse(ReasonCode.NOT_AUTHORIZED, "will topic not allowed by the ACL")
            return
        if not claimed:
            # In a cluster no CONNACK before this node owns the client id (docs/cluster.md).
            self._claim_held = []
            if broker.claim_before_connack(
                client_id,
                packet.clean_start,
                lambda owned: self._claim_answered(
                    owned, packet, client_id, assigned, username, auth_props
                ),
            ):
                if self._claim_held is not None:  # not answered yet: read nothing more
                    self.hold_reading(HOLD_CLAIM)
                return
            self._claim_held = None
        self.username = username
        if settings.max_publish_rate > 0:
            self._publish_bucket = TokenBucket(
                settings.max_publish_rate, settings.publish_burst, broker.clock.now()
            )

        # Session Expiry Interval: 3.1.1 clean session 0 means "never expires".
        requested_expiry: int | None = None
        if v5:
            requested_expiry = props.session_expiry_interval if props is not None else None
            expiry = requested_expiry or 0
        else:
            # Mosquitto's persistent_client_expiration bounds what the spec leaves forever.
            expiry = 0 if packet.clean_start else settings.persistent_client_expiration or _U32
        lowered = expiry > settings.max_session_expiry_interval
        if lowered:
            expiry = settings.max_session_expiry_interval

        self.client_id = client_id
        session, session_present = self._broker.open_session(
            self, client_id, packet.clean_start, expiry
        )

        # Keep Alive; 5.0 Server Keep Alive overrides when above our maximum (3.2.2.3.14).
        keep_alive = packet.keep_alive
        server_keep_alive: int | None = None
        if v5 and (
            keep_alive > settings.max_keepalive
            or (keep_alive == 0 and settings.max_keepalive < 65_535)
        ):
            keep_alive = server_keep_alive = settings.max_keepalive
        self.keep_alive = keep_alive

        window = settings.max_inflight_messages or 65_535
        client_max_packet = _MAX_PACKET_SIZE_UNLIMITED
        if v5 and props is not None:
            if props.receive_maximum is not None:
                window = min(window, props.receive_maximum)
            if props.maximum_packet_size is not None:
                client_max_packet = props.maximum_packet_size
        window = min(window, 65_535)

        if will is not None:
            will_props = will.properties
            delay = 0
            message_props: Properties | None = None
            if will_props is not None:
                delay = will_props.will_delay_interval or 0
                message_props = replace(will_props, will_delay_interval=None)
                if message_props.is_empty():
                    message_props = None
            self.will = Message(
                will.topic, will.payload, will.qos, will.retain, message_props, None, client_id
            )
            self.will_delay = delay

        if v5:
            self._alias_max = settings.topic_alias_maximum
            connack_props = Properties(
                receive_maximum=settings.receive_maximum
                if settings.receive_maximum < 65_535
                else None,
                maximum_qos=settings.maximum_qos if settings.maximum_qos < 2 else None,
                retain_available=int(settings.retain_available),
                maximum_packet_size=min(settings.max_packet_size, _MAX_PACKET_SIZE),
                assigned_client_identifier=client_id if assigned else None,
                topic_alias_maximum=settings.topic_alias_maximum or None,
                wildcard_subscription_available=int(settings.wildcard_subscription_available),
                subscription_identifier_available=int(settings.subscription_identifier_available),
                shared_subscription_available=int(settings.shared_subscription_available),
                server_keep_alive=server_keep_alive,
                session_expiry_interval=expiry if lowered else None,
            )
            if auth_props is not None:
                connack_props.authentication_method = auth_props.authentication_method
                connack_props.authentication_data = auth_props.authentication_data
            template = settings.response_information
            if props is not None and props.request_response_information == 1 and template:
                # 3.1.2.11.6: asked for, so given (a topic prefix for response topics);
                # never one a wildcard in the client id would make unusable.
                info = template.replace("{client_id}", client_id)
                if "+" not in info and "#" not in info:
                    connack_props.response_information = info
            connack = Connack(session_present, 0, connack_props)
            data = encode(connack, 5)
            if len(data) > self._peer_max_packet and connack_props.response_information:
                connack_props.response_information = None  # [MQTT-3.1.2-25]: fit it
                data = encode(connack, 5)
            self._write(data)
        else:
            self._write(encode(Connack(session_present, 0), level))
        self._state = _CONNECTED
        self._reader.max_packet_size = settings.max_packet_size
        stats = self._stats
        stats.clients_connected += 1
        stats.clients_total += 1
        if keep_alive:
            self._keepalive_grace = keep_alive * 1.5
            self._keepalive_timer = self._broker.scheduler.call_later(
                self._keepalive_grace, self._on_keepalive_expired
            )
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s connected from %s as %r, user %r (level %d, clean %d, keepalive %d)",
                self.listener,
                self.peer,
                client_id,
                username,
                level,
                packet.clean_start,
                keep_alive,
                extra={
                    "client_id": client_id,
                    "username": username,
                    "address": self.peer,
                    "listener": self.listener,
                    "protocol_level": level,
                },
            )
        aliases = 0
        if v5 and props is not None and settings.server_topic_aliases:
            aliases = props.topic_alias_maximum or 0
        session.attach(self, self._sink, level, window, client_max_packet, aliases)
        session.resume()

    # -- PUBLISH from the client (the hot path) ----------------------------------------

    def _on_publish(self, packet: Publish) -> None:
        self._stats.publish_received += 1
        if self._publish_bucket is not None:
            self._throttle(self._publish_bucket)
        topic = packet.topic
        props = packet.properties
        expiry_at: float | None = None
        if props is not None:
            resolved = self._publish_properties(topic, props)
            if resolved is None:
                return
            topic, props, expiry_at = resolved
            if (
                props is not None
                and props.payload_format_indicator == 1
                and self._settings.validate_payload_format
                and not _is_utf8(packet.payload)
            ):
                self._payload_format_invalid(packet)
                return
        # The reader has checked UTF-8, U+0000 and the length already [MQTT-4.7.3-1..3].
        if not topic or "+" in topic or "#" in topic:
            raise TopicNameInvalid(f"not a topic name: {topic!r} [MQTT-3.3.2-2]")
        if len(topic) > self._max_topic_length or (
            self._max_topic_levels and topic.count("/") >= self._max_topic_levels
        ):
            raise TopicNameInvalid("topic name above max_topic_length or max_topic_levels")
        qos = packet.qos
        retain = packet.retain
        if qos > self._maximum_qos:
            self.disconnect(ReasonCode.QOS_NOT_SUPPORTED)  # [MQTT-3.2.2-11]
            return
        if retain and not self._retain_available:
            self.disconnect(ReasonCode.RETAIN_NOT_SUPPORTED)  # [MQTT-3.2.2-14]
            return
        limit = self._settings.message_size_limit
        if limit and len(packet.payload) > limit:
            self._payload_too_large(packet)
            return
        session = self.session
        assert session is not None
        authorise = self._broker.authorise
        if self._broker_owned(topic) or (
            authorise is not None
            and not authorise(session.client_id, self.username, "write", topic)
        ):
            self._publish_denied(qos, packet.packet_id, topic)
            self._broker.dead_letters.drop(
                DropReason.NOT_AUTHORISED,
                Message(topic, packet.payload, qos, retain, props, expiry_at, self.client_id),
            )
            return
        message = Message(topic, packet.payload, qos, retain, props, expiry_at, self.client_id)
        raw = packet.raw
        if raw is not None and not packet.dup and topic is packet.topic:
            # The bytes as received are this message's PUBLISH for receivers at our
            # level (3.x only: no properties to differ); DUP is the sender's hop only.
            message.reuse(self.protocol_level, raw)
        if not qos:
            self._broker.publish(message, session)
            return
        packet_id = packet.packet_id
        assert packet_id is not None
        v5 = self.protocol_level == 5
        inbound_qos2 = session.inbound_qos2
        if qos == 2 and packet_id in inbound_qos2:
            # 4.3.3: the same id before PUBREL is a resend; acknowledge, never re-route.
            self._send_ack(_PUBREC, packet_id, 0, False)
            return
        if v5:
            if qos == 1 and packet_id in inbound_qos2:
                self._send_ack(_PUBACK, packet_id, ReasonCode.PACKET_IDENTIFIER_IN_USE, False)
                return
            if self._qos1_unacked + len(inbound_qos2) >= self._settings.receive_maximum:
                self.disconnect(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)  # [MQTT-3.3.4-9]
                return
        if qos == 2 and self._settings.pubrec_first:
            self._pubrec_first(message, session, packet_id)
            return
        flags = self._broker.publish(message, session)
        if not flags & MATCHED and not retain:  # nobody got it (a retained one is kept)
            self._broker.dead_letters.drop(DropReason.NO_SUBSCRIBERS, message)
        recorded = (flags & RECORDED) != 0
        code = 0 if flags & MATCHED or not v5 else ReasonCode.NO_MATCHING_SUBSCRIBERS
        if qos == 1:
            self._qos1_unacked += 1
            self._send_ack(_PUBACK, packet_id, code, recorded, counted_qos1=True)
            return
        inbound_qos2.add(packet_id)
        if session.persistent:
            self._broker.store.add_inbound_qos2(session.client_id, packet_id)
            recorded = True
        self._send_ack(_PUBREC, packet_id, code, recorded)

    def _pubrec_first(self, message: Message, session: Session, packet_id: int) -> None:
        """Mosquitto's order for a QoS 2 PUBLISH: PUBREC (0x00: nobody is matched yet),
        then the message goes on, so the PUBREC leaves first, on this socket and (its
        flush scheduled first) before the forwarded PUBLISHes on others. config.py allows
        it only with the memory store, where no acknowledgement waits for a commit."""
        session.inbound_qos2.add(packet_id)
        if session.persistent:
            self._broker.store.add_inbound_qos2(session.client_id, packet_id)
        self._send_ack(_PUBREC, packet_id, 0, False)
        if not self._broker.publish(message, session) & MATCHED and not message.retain:
            self._broker.dead_letters.drop(DropReason.NO_SUBSCRIBERS, message)

    def _payload_too_large(self, packet: Publish) -> None:
        """message_size_limit (Mosquitto's): the message is dropped and its QoS flow ends
        here, 5.0 with 0x83 in PUBACK/PUBREC, 3.x with a plain acknowledgement (3.x has no
        way to say no; a 3.x PUBREL then finds no id and gets its PUBCOMP anyway).

        0x83 Implementation specific error is what mosquitto.conf(5) documents; Mosquitto
        2.0 actually sends 0x95, which MQTT 5.0 does not allow in PUBACK/PUBREC (3.4.2.1).
        """
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%r: PUBLISH to %r dropped: %d payload bytes above message_size_limit",
                self,
                packet.topic,
                len(packet.payload),
            )
        packet_id = packet.packet_id
        if not packet.qos or packet_id is None:
            return
        code = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR if self.protocol_level == 5 else 0
        self._send_ack(_PUBACK if packet.qos == 1 else _PUBREC, packet_id, code, False)

    def _broker_owned(self, topic: str) -> bool:
        """A topic this client may not publish to whatever the ACL: $SYS, dead letters.

        As Mosquitto (acl__check_dollar), $SYS/broker/connection/<name>/state stays
        writable: a Mosquitto bridge publishes its state notification there and sets it as
        its will, with or without the bridge bit (5.0 bridges send none).
        """
        if not self._broker.dead_letters.broker_owned(topic):
            return False
        return not (
            topic.startswith("$SYS/broker/connection/")
            and topic.endswith("/state")
            and topic.count("/") == 4
        )

    def _publish_denied(self, qos: int, packet_id: int | None, topic: str) -> None:
        """The ACL refused a PUBLISH, or its topic is the broker's ($SYS, dead letters):
        nobody gets it; 5.0 acks say 0x87 (3.4.2.1).

        3.x has no way to say no: the message is acknowledged and dropped, as Mosquitto
        does, so the client does not resend it forever.
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r: PUBLISH to %r denied (ACL or broker-owned topic)", self, topic)
        if not qos or packet_id is None:
            return
        code = ReasonCode.NOT_AUTHORIZED if self.protocol_level == 5 else 0
        self._send_ack(_PUBACK if qos == 1 else _PUBREC, packet_id, code, False)

    def _throttle(self, bucket: TokenBucket) -> None:
        """Count one PUBLISH against `max_publish_rate`; over it, stop reading a while.

        The excess is not dropped: the socket is not read until the bucket's debt is
        paid, so the client's TCP window fills and it slows down. The keepalive deadline
        moves by the pause, which is ours, not the client's silence.
        """
        now = self._broker.clock.now()
        wait = bucket.take(now)
        if wait <= 0 or self._state != _CONNECTED:
            return
        timer = self._throttle_timer
        if timer is None:
            self.hold_reading(HOLD_THROTTLE)
            self._throttle_timer = self._broker.scheduler.call_later(wait, self._end_throttle)
        else:
            timer.postpone(now + wait)  # more packets of the same read: a longer pause
        if self._keepalive_timer is not None:
            self._keepalive_timer.postpone(now + wait + self._keepalive_grace)

    def _end_throttle(self) -> None:
        self._throttle_timer = None
        self.release_reading(HOLD_THROTTLE)

    def hold_reading(self, why: int) -> None:
        """Stop reading the client for `why` (a _HOLD_* bit; several may hold at once)."""
        held = self._reading_held
        self._reading_held = held | why
        if not held and self._state != _CLOSED:
            self._sink.pause_reading()

    def release_reading(self, why: int) -> None:
        """`why` no longer holds reading back; read again once nothing does."""
        held = self._reading_held
        if not held & why:
            return
        held = self._reading_held = held & ~why
        if not held and self._state == _CONNECTED:
            self._sink.resume_reading()
            timer = self._keepalive_timer
            if timer is not None:
                # What the client sent meanwhile is read only now: not its silence.
                timer.postpone(self._broker.clock.now() + self._keepalive_grace)

    def _payload_format_invalid(self, packet: Publish) -> None:
        """Payload Format Indicator 1 on a payload that is not UTF-8 (3.3.2.3.2): the
        message is refused with 0x99 (PUBACK/PUBREC; QoS 0 has none: DISCONNECT)."""
        packet_id = packet.packet_id
        if not packet.qos or packet_id is None:
            self.disconnect(ReasonCode.PAYLOAD_FORMAT_INVALID)
            return
        # A refused QoS 2 flow ends at this PUBREC: its id is not kept [MQTT-4.3.3-9].
        first = _PUBACK if packet.qos == 1 else _PUBREC
        self._send_ack(first, packet_id, ReasonCode.PAYLOAD_FORMAT_INVALID, False)

    def _publish_properties(
        self, topic: str, props: Properties
    ) -> tuple[str, Properties | None, float | None] | None:
        """Resolve a 5.0 Topic Alias, drop per-hop properties, read the expiry.

        Returns (topic, message properties, expiry deadline), or None when the
        connection was ended for a bad alias.
        """
        alias = props.topic_alias
        if alias is not None:
            if alias == 0 or alias > self._alias_max:
                # [MQTT-3.3.2-9] [MQTT-3.3.2-10]
                self.disconnect(ReasonCode.TOPIC_ALIAS_INVALID)
                return None
            aliases = self._aliases
            if aliases is None:
                aliases = self._aliases = {}
            if topic:
                aliases[alias] = topic
            else:
                known = aliases.get(alias)
                if known is None:
                    raise ProtocolError(f"unknown topic alias {alias} (3.3.2.3.4)")
                topic = known
        if props.subscription_identifier:
            raise ProtocolError("PUBLISH from a client with a Subscription Identifier")
        if props.response_topic is not None and not _is_topic_name(props.response_topic):
            raise ProtocolError("Response Topic is not a topic name [MQTT-3.3.2-14]")
        message_props: Properties | None = props
        if alias is not None:
            # The alias belongs to this hop only (3.3.2.3.4), never to the message.
            message_props = replace(props, topic_alias=None)
            if message_props.is_empty():
                message_props = None
        expiry_at: float | None = None
        if props.message_expiry_interval is not None:
            expiry_at = self._broker.clock.now() + props.message_expiry_interval
        return topic, message_props, expiry_at

    # -- the other packets -------------------------------------------------------------

    def _check_ack_type(self, session: Session, packet_id: int, name: str, qos: int) -> None:
        """An ack of the wrong type for an id in flight is a protocol error (4.3, 4.13).

        PUBACK ends QoS 1 flows only; PUBREC and PUBCOMP belong to QoS 2, and PUBCOMP
        only once the PUBREL went out. An id not in flight is no error (a late or
        resent ack after a reconnect): the handlers answer or ignore it as before.
        """
        entry = session.inflight.get(packet_id)
        if entry is None:
            return
        if entry.qos != qos:
            raise ProtocolError(f"{name} for QoS {entry.qos} packet id {packet_id} in flight")
        if name == "PUBCOMP" and entry.state != OutboundState.PUBREL_SENT:
            raise ProtocolError(f"PUBCOMP before PUBREL for packet id {packet_id}")

    def _on_puback(self, packet: PubAck) -> None:
        session = self.session
        assert session is not None
        self._check_ack_type(session, packet.packet_id, "PUBACK", 1)
        session.puback(packet.packet_id)

    def _on_pubrec(self, packet: PubRec) -> None:
        session = self.session
        assert session is not None
        self._check_ack_type(session, packet.packet_id, "PUBREC", 2)
        if session.pubrec(packet.packet_id, packet.reason_code):
            if packet.reason_code < 0x80:
                # After the commit of PUBREL_SENT: otherwise a crash would resend the
                # PUBLISH to a client that already completed it, a second delivery.
                self._send_ack(_PUBREL, packet.packet_id, 0, session.persistent)
        elif self.protocol_level == 5:
            self._send_ack(_PUBREL, packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, False)
        else:
            # 3.x has no way to say "unknown": release the id so the client can go on.
            self._send_ack(_PUBREL, packet.packet_id, 0, False)

    def _on_pubrel(self, packet: PubRel) -> None:
        session = self.session
        assert session is not None
        packet_id = packet.packet_id
        if packet_id in session.inbound_qos2:
            session.inbound_qos2.discard(packet_id)
            if session.persistent:
                self._broker.store.remove_inbound_qos2(session.client_id, packet_id)
            # After the commit: a client told PUBCOMP reuses the id, which a crash
            # would otherwise leave marked as received and so swallow the new message.
            self._send_ack(_PUBCOMP, packet_id, 0, session.persistent)
        else:
            # 5.0: 0x92; 3.x: PUBCOMP anyway [MQTT-4.3.3-11] (the id may be a resend).
            self._send_ack(_PUBCOMP, packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND, False)

    def _on_pubcomp(self, packet: PubComp) -> None:
        session = self.session
        assert session is not None
        self._check_ack_type(session, packet.packet_id, "PUBCOMP", 2)
        session.pubcomp(packet.packet_id)

    def _on_subscribe(self, packet: Subscribe) -> None:
        session = self.session
        assert session is not None
        if self.bridge and self.protocol_level != 5:
            # As Mosquitto: a 3.x bridge never gets its own messages back and keeps the
            # retain flag (3.x has no subscription options to ask for either).
            for sub in packet.subscriptions:
                sub.no_local = sub.retain_as_published = True
        codes, retained = self._broker.subscribe(session, packet)
        if self.protocol_level == 5:
            failed = max(codes)
            props = reason_properties(failed) if self._problem_info else None
            self._write(self._encode_v5(SubAck(packet.packet_id, codes, props)))
        else:
            self._write(encode(SubAck(packet.packet_id, codes), self.protocol_level))
        for topic_filter, options in retained:
            self._broker.deliver_retained(session, topic_filter, options)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes = self._broker.unsubscribe(session, packet.topic_filters)
        if self.protocol_level != 5:
            codes = []
        self._write(encode(UnsubAck(packet.packet_id, codes), self.protocol_level))

    def _on_pingreq(self, packet: PingReq) -> None:
        self._write(_PINGRESP)

    def _on_disconnect(self, packet: Disconnect) -> None:
        publish_will = False
        if self.protocol_level == 5:
            props = packet.properties
            if props is not None and props.session_expiry_interval is not None:
                session = self.session
                assert session is not None
                # The CONNECT's value counts, not what we granted (3.14.2.2.2).
                if self._requested_expiry == 0 and props.session_expiry_interval != 0:
                    raise ProtocolError(
                        "DISCONNECT sets a Session Expiry Interval after 0 [MQTT-3.14.2-2]"
                    )
                self._broker.set_session_expiry(session, props.session_expiry_interval)
            # [MQTT-3.14.4-3]: only reason 0x00 deletes the will; 0x04 asks for it.
            publish_will = packet.reason_code != ReasonCode.SUCCESS
        self.close_reason = f"DISCONNECT 0x{packet.reason_code:02X}"
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r: DISCONNECT 0x%02X received", self, packet.reason_code)
        if not publish_will:
            self.will = None
        self._close(publish_will)

    def _on_auth(self, packet: Auth) -> None:
        on_auth(self, packet)  # re-authentication, or a protocol error (enhanced_auth.py)

    def _on_server_packet(self, packet: Packet) -> None:
        raise ProtocolError(f"{type(packet).__name__} is sent by servers only")


def _is_topic_name(topic: str) -> bool:
    """True for a non-empty topic name without wildcards (4.7.1, 4.7.3)."""
    return bool(topic) and "+" not in topic and "#" not in topic


def _is_utf8(payload: bytes) -> bool:
    """True when `payload` is well-formed UTF-8 (RFC 3629; surrogates are not)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_DISPATCH: dict[type, Callable[[Connection, Packet], None]] = {
    Connect: Connection._on_connect,  # type: ignore[dict-item]
    Publish: Connection._on_publish,  # type: ignore[dict-item]
    PubAck: Connection._on_puback,  # type: ignore[dict-item]
    PubRec: Connection._on_pubrec,  # type: ignore[dict-item]
    PubRel: Connection._on_pubrel,  # type: ignore[dict-item]
    PubComp: Connection._on_pubcomp,  # type: ignore[dict-item]
    Subscribe: Connection._on_subscribe,  # type: ignore[dict-item]
    Unsubscribe: Connection._on_unsubscribe,  # type: ignore[dict-item]
    PingReq: Connection._on_pingreq,  # type: ignore[dict-item]
    Disconnect: Connection._on_disconnect,  # type: ignore[dict-item]
    Auth: Connection._on_auth,  # type: ignore[dict-item]
    Connack: Connection._on_server_packet,
    SubAck: Connection._on_server_packet,
    UnsubAck: Connection._on_server_packet,
    PingResp: Connection._on_server_packet,
}
"""Packet class -> handler: the state machine's input table."""
