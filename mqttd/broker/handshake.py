"""The CONNECT handshake of one connection: checks, authentication, session, CONNACK.

Theory of operation. A `Connection` starts AWAIT_CONNECT with a `Handshake` that arms
the connect timeout (`settings.connect_timeout`) and takes the CONNECT:

1. CONNECT checks: client id (3.1's 1..23 characters, zero-length ids and assigned
   ones [MQTT-3.1.3-6] [MQTT-3.1.3-8], `max_client_id_length`) and the will (topic
   name, depth, QoS, size, retain, 5.0 payload format and Response Topic). A 3.x
   client whose will topic is not a topic name is closed without CONNACK (3.x has no
   code for it); every other refusal is a CONNACK with a reason code, then close.
2. Authentication: the connection rate limit, then either the plain hook
   (`Broker.authenticate`) or, when a 5.0 CONNECT names an Authentication Method,
   an enhanced-authentication exchange (section 4.12, below), during which the
   connection is AUTHENTICATING.
3. Accept: session ownership, wills on the broker's own topics ($SYS, dead letters)
   or refused by the ACL, then `Broker.open_session`, CONNACK (5.0 properties: what
   the server allows, Assigned Client Identifier, Server Keep Alive, Response
   Information...) and `Connection.established`, which makes it CONNECTED.

Until then the reader is bounded by `max_connect_size` (issue 14): an unauthenticated
client cannot make the broker buffer or decode much. `established` lifts the bound.

Enhanced authentication (5.0 4.12). An Authentication Method not registered gets
CONNACK 0x8C [MQTT-4.12.0-1]. Otherwise the method's `start` sees the CONNECT's
Authentication Data; while it answers CONTINUE the server sends AUTH 0x18 and the
client must answer AUTH 0x18 [MQTT-4.12.0-2] [MQTT-4.12.0-3], sending nothing but AUTH
or DISCONNECT before CONNACK [MQTT-3.1.2-30] (connection.py's transition table).
SUCCESS completes the CONNECT (CONNACK carrying the method and the last data
[MQTT-4.12.0-5]); FAIL refuses it with the method's reason code [MQTT-4.12.0-4]. The
connect timeout bounds each wait for the client's next AUTH.

Re-authentication [MQTT-4.12.1-1]: once CONNECTED the client may send AUTH 0x19 with
the same method; the exchange runs while other packets keep flowing and ends with AUTH
0x00 or, on failure, DISCONNECT 0x87 [MQTT-4.12.1-2]. It must prove the same identity
as the first one: a session is not handed to another user. Protocol errors (0x82):
AUTH from a client that named no method [MQTT-4.12.0-7], or with another method
[MQTT-4.12.0-5]; AUTH 0x18 with no exchange running; AUTH 0x19 before CONNACK or
during another exchange; AUTH 0x00 from a client (servers only, 3.15.2.1).

Why a class beside Connection: the handshake runs once per connection, the packets
after it many times; keeping it here leaves connection.py the per-packet machine, and
lets a connection of a client without enhanced authentication drop this object once
it is CONNECTED. The handshake reaches the connection only through the small interface
connection.py marks "for the handshake"; it knows the Broker because accepting a
CONNECT is the registry's business (authenticate, open_session, session ownership).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

from ..auth.enhanced import AuthContext, Authenticator, AuthStatus, AuthStep
from ..auth.hooks import ConnectInfo
from ..auth.limits import TokenBucket, address_of
from ..protocol.encoder import encode
from ..protocol.errors import ProtocolError, TopicNameInvalid, UnsupportedProtocolVersion
from ..protocol.packets import Auth, Connack, Connect, Will
from ..protocol.properties import Properties
from ..protocol.reason_codes import (
    CONNACK_REASON_CODES,
    DISCONNECT_REASON_CODES,
    ConnackReturnCode,
    ReasonCode,
    connack_code_for_v3,
)
from ..protocol.topics import is_topic_name, is_utf8, validate_topic_name
from .message import Message
from .reason_strings import REASON_TEXT, reason_properties

if TYPE_CHECKING:
    from .broker import Broker
    from .connection import Connection
    from .scheduler import Timer
    from .settings import BrokerSettings

__all__ = [
    "MAX_PACKET_SIZE",
    "MAX_PACKET_UNLIMITED",
    "AuthExchange",
    "Handshake",
    "refuse_protocol_version",
]

logger = logging.getLogger("mqttd.connection")
auth_logger = logging.getLogger("mqttd.auth")

#: The largest packet the wire can carry (Remaining Length's four bytes).
MAX_PACKET_SIZE = 268_435_455
#: A client's Maximum Packet Size when it set none: above anything the wire can carry.
MAX_PACKET_UNLIMITED = 268_435_460
_U32 = 0xFFFF_FFFF  # a session expiry interval that never ends


class AuthExchange:
    """One enhanced-authentication exchange in progress on a connection."""

    __slots__ = ("assigned", "authenticator", "client_id", "connect", "method")

    def __init__(
        self,
        method: str,
        authenticator: Authenticator,
        connect: Connect | None = None,
        client_id: str = "",
        assigned: bool = False,
    ) -> None:
        self.method = method
        self.authenticator = authenticator
        #: The CONNECT being authenticated; None for a re-authentication.
        self.connect = connect
        self.client_id = client_id
        self.assigned = assigned

    @property
    def reauth(self) -> bool:
        """True for a re-authentication (the connection already got its CONNACK)."""
        return self.connect is None


def refuse_protocol_version(
    conn: Connection, broker: Broker, exc: UnsupportedProtocolVersion
) -> None:
    """A CONNECT of a level we do not speak [MQTT-3.1.2-2]: CONNACK 0x01 in the 3.x
    format, which every level can read, then close."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("%r: %s", conn, exc)
    broker.stats.connections_refused += 1
    if not conn.connected:
        conn.write(encode(Connack(False, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION), 4))
    conn.close(publish_will=False)


class _ClaimAnswer:
    """Where the cluster's answer to a claim goes (`Broker.claim_before_connack`)."""

    __slots__ = ("assigned", "auth_props", "client_id", "given", "handshake", "packet", "username")

    def __init__(
        self,
        handshake: Handshake,
        packet: Connect,
        client_id: str,
        assigned: bool,
        username: str | None,
        auth_props: Properties | None,
    ) -> None:
        self.handshake = handshake
        self.packet = packet
        self.client_id = client_id
        self.assigned = assigned
        self.username = username
        self.auth_props = auth_props
        self.given = False

    def __call__(self, refusal: int) -> None:
        self.given = True
        handshake = self.handshake
        conn = handshake._conn
        if conn.closed:
            return  # the client went away meanwhile
        if refusal:
            # Another node's later claim won (0x88), or this node is cut off (0x9C).
            handshake.refuse(refusal, "the cluster gave the client id to no one here")
            return
        handshake._accept(
            self.packet,
            self.client_id,
            self.assigned,
            self.username,
            self.auth_props,
            claimed=True,
        )
        if conn.connected:
            conn.claimed()


class Handshake:
    """The CONNECT and AUTH exchange of one connection (see the module docstring)."""

    __slots__ = ("_broker", "_conn", "_settings", "connect_username", "exchange", "method", "timer")

    def __init__(self, conn: Connection, broker: Broker) -> None:
        self._conn = conn
        self._broker = broker
        self._settings: BrokerSettings = broker.settings
        #: The user name as CONNECT gave it, for refusal lines.
        self.connect_username: str | None = None
        #: The CONNECT's Authentication Method (enhanced authentication), and the
        #: exchange in progress (before CONNACK, or a re-authentication).
        self.method: str | None = None
        self.exchange: AuthExchange | None = None
        self.timer: Timer | None = broker.scheduler.call_later(
            broker.settings.connect_timeout, self._timeout
        )

    def cancel_timer(self) -> None:
        """Stop the connect timeout (the CONNECT was answered, or the connection ends)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        self.timer = None
        conn = self._conn
        if not conn.connected and not conn.closed:
            if logger.isEnabledFor(logging.INFO):
                logger.info("%r: no CONNECT within %.1f s", conn, self._settings.connect_timeout)
            conn.close(publish_will=False)

    # -- CONNECT -----------------------------------------------------------------------

    def refuse(self, reason_code: int, why: str) -> None:
        """CONNACK with an error code, then close (no session, no will)."""
        conn = self._conn
        if logger.isEnabledFor(logging.INFO):
            username = self.connect_username
            logger.info(
                "%s: CONNECT from %s refused for %r (user %r): %s (0x%02X)",
                conn.listener,
                conn.peer,
                conn.client_id,
                username,
                why,
                reason_code,
                extra={
                    "client_id": conn.client_id,
                    "username": username,
                    "address": conn.peer,
                    "listener": conn.listener,
                    "reason_code": reason_code,
                },
            )
        self._broker.stats.connections_refused += 1
        level = conn.protocol_level
        if level == 5:
            props = reason_properties(reason_code, why)
            conn.write(conn.encode_v5(Connack(False, reason_code, props)))
        else:
            conn.write(encode(Connack(False, connack_code_for_v3(reason_code)), level))
        conn.close(publish_will=False)

    def on_connect(self, packet: Connect) -> None:
        """The CONNECT: check it, then authenticate (plainly, or start an exchange)."""
        timer = self.timer
        if timer is not None:  # inline: this runs once per connection, in storms too
            timer.cancel()
            self.timer = None
        conn = self._conn
        settings = self._settings
        level = conn.protocol_level = packet.protocol_level
        conn.bridge = packet.bridge
        conn.client_id = packet.client_id  # as asked for; an assigned id replaces it below
        self.connect_username = packet.username
        props = packet.properties
        v5 = level == 5
        if v5 and props is not None:
            if props.maximum_packet_size is not None:
                conn.peer_max_packet = props.maximum_packet_size
            conn.problem_info = props.request_problem_information != 0
            conn.requested_expiry = props.session_expiry_interval or 0

        client_id = packet.client_id
        assigned = False
        if not client_id:
            if level == 3:
                # 3.1 requires 1 to 23 characters (3.1 section 3.1).
                self.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id in 3.1")
                return
            if not settings.allow_zero_length_client_id:
                self.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id")
                return
            if level == 4 and not packet.clean_start:
                # [MQTT-3.1.3-8]: empty id with clean session 0 -> 0x02.
                self.refuse(
                    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client id, clean session 0"
                )
                return
            # 3.1.1 [MQTT-3.1.3-6]; 5.0 3.1.3.1 (clean start 0 too: a fresh session).
            client_id = settings.client_id_prefix + secrets.token_hex(8)
            assigned = True
        elif len(client_id) > settings.max_client_id_length:
            self.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client id too long")
            return
        if packet.will is not None and not self._will_acceptable(packet.will, v5):
            return

        broker = self._broker
        limiter = broker.connection_limiter
        if limiter is not None and not limiter.allow(address_of(conn.peer), broker.clock.now()):
            self.refuse(ReasonCode.CONNECTION_RATE_EXCEEDED, "connection rate exceeded")
            return
        if v5 and props is not None and props.authentication_method is not None:
            self._start_auth(packet, client_id, assigned, props.authentication_method)
            return
        result = broker.authenticate(
            ConnectInfo(
                client_id,
                packet.username,
                packet.password,
                level,
                conn.peer,
                conn.listener,
                conn.identity,
            )
        )
        if not result.accepted:
            # Word the refusal as its code says (0x86 "bad user name or password").
            self.refuse(result.reason_code, REASON_TEXT.get(result.reason_code, "not authorised"))
            return
        username = result.username if result.username is not None else packet.username
        self._accept(packet, client_id, assigned, username, None)

    def _will_acceptable(self, will: Will, v5: bool) -> bool:
        """The will's own checks (3.1.2.5, 3.1.3.2); refuses and returns False if not."""
        settings = self._settings
        try:
            validate_topic_name(will.topic)
            if settings.max_topic_levels and will.topic.count("/") >= settings.max_topic_levels:
                raise TopicNameInvalid("will topic deeper than max_topic_levels")
        except TopicNameInvalid as exc:
            if not v5:
                self._conn.fail(exc.reason_code, str(exc))
            else:
                self.refuse(exc.reason_code, str(exc))
            return False
        if will.qos > settings.maximum_qos:
            self.refuse(ReasonCode.QOS_NOT_SUPPORTED, "will QoS above Maximum QoS")
            return False
        if settings.message_size_limit and len(will.payload) > settings.message_size_limit:
            self.refuse(ReasonCode.PACKET_TOO_LARGE, "will payload above message_size_limit")
            return False
        if will.retain and not settings.retain_available:
            self.refuse(ReasonCode.RETAIN_NOT_SUPPORTED, "will retain not available")
            return False
        props = will.properties
        if (
            props is not None
            and props.payload_format_indicator == 1
            and settings.validate_payload_format
            and not is_utf8(will.payload)
        ):
            # 5.0 3.1.3.2.3: the Server MAY validate the will payload; CONNACK 0x99.
            self.refuse(ReasonCode.PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8")
            return False
        response_topic = props.response_topic if props is not None else None
        if response_topic is not None and not is_topic_name(response_topic):
            self.refuse(ReasonCode.PROTOCOL_ERROR, "will Response Topic is not a topic name")
            return False
        return True

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
        for the CONNACK [MQTT-4.12.0-5]. In a cluster the client id is claimed first
        (the connection is CLAIMING meanwhile) and this runs again with `claimed`.
        """
        conn = self._conn
        settings = self._settings
        broker = self._broker
        level = conn.protocol_level
        props = packet.properties
        v5 = level == 5
        will = packet.will
        if broker.session_owned_by_other(client_id, username):
            # The session stays as it is: not taken over, not ended by a clean start.
            self.refuse(ReasonCode.NOT_AUTHORIZED, "client id in use by another user")
            return
        authorise = broker.authorise
        if will is not None and broker.dead_letters.closed_to_clients(will.topic):
            # As a PUBLISH there: the will could never be sent, so say so now.
            self.refuse(ReasonCode.NOT_AUTHORIZED, "will topic is the broker's ($SYS)")
            return
        if (
            will is not None
            and authorise is not None
            and not authorise(client_id, username, "write", will.topic)
        ):
            self.refuse(ReasonCode.NOT_AUTHORIZED, "will topic not allowed by the ACL")
            return
        if broker.clustered and not claimed:
            answer = _ClaimAnswer(self, packet, client_id, assigned, username, auth_props)
            broker.claim_before_connack(client_id, packet.clean_start, answer)
            if not answer.given:
                conn.claiming()
            return
        conn.username = username
        if settings.max_publish_rate > 0:
            conn.publish_bucket = TokenBucket(
                settings.max_publish_rate, settings.publish_burst, broker.clock.now()
            )

        # Session Expiry Interval: 3.1.1 clean session 0 means "never expires".
        if v5:
            expiry = (props.session_expiry_interval if props is not None else None) or 0
        else:
            # Mosquitto's persistent_client_expiration bounds what the spec leaves forever.
            expiry = 0 if packet.clean_start else settings.persistent_client_expiration or _U32
        lowered = expiry > settings.max_session_expiry_interval
        if lowered:
            expiry = settings.max_session_expiry_interval

        conn.client_id = client_id
        session, session_present = broker.open_session(conn, client_id, packet.clean_start, expiry)

        # Keep Alive; 5.0 Server Keep Alive overrides when above our maximum (3.2.2.3.14).
        keep_alive = packet.keep_alive
        server_keep_alive: int | None = None
        if v5 and (
            keep_alive > settings.max_keepalive
            or (keep_alive == 0 and settings.max_keepalive < 65_535)
        ):
            keep_alive = server_keep_alive = settings.max_keepalive
        conn.keep_alive = keep_alive

        window = settings.max_inflight_messages or 65_535
        client_max_packet = MAX_PACKET_UNLIMITED
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
            conn.will = Message(
                will.topic, will.payload, will.qos, will.retain, message_props, None, client_id
            )
            conn.will_delay = delay

        if v5:
            conn.alias_max = settings.topic_alias_maximum
            chosen = Properties(
                assigned_client_identifier=client_id if assigned else None,
                server_keep_alive=server_keep_alive,
                session_expiry_interval=expiry if lowered else None,
            )
            if auth_props is not None:
                chosen.authentication_method = auth_props.authentication_method
                chosen.authentication_data = auth_props.authentication_data
            conn.write(self._connack_v5(packet, client_id, session_present, chosen))
        else:
            conn.write(encode(Connack(session_present, 0), level))
        if self.method is None:
            conn.handshake = None  # nothing more to do: no re-authentication without a method
        conn.established(keep_alive)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s connected from %s as %r, user %r (level %d, clean %d, keepalive %d)",
                conn.listener,
                conn.peer,
                client_id,
                username,
                level,
                packet.clean_start,
                keep_alive,
                extra={
                    "client_id": client_id,
                    "username": username,
                    "address": conn.peer,
                    "listener": conn.listener,
                    "protocol_level": level,
                },
            )
        aliases = 0
        if v5 and props is not None and settings.server_topic_aliases:
            aliases = props.topic_alias_maximum or 0
        session.attach(conn, conn.sink, level, window, client_max_packet, aliases)
        session.resume()

    def _connack_v5(
        self, packet: Connect, client_id: str, session_present: bool, chosen: Properties
    ) -> bytes:
        """The 5.0 CONNACK: what this server allows, and what it `chose` for the client
        (Assigned Client Identifier, Server Keep Alive, a lowered Session Expiry,
        the Authentication Method and Data)."""
        settings = self._settings
        props = replace(
            chosen,
            receive_maximum=settings.receive_maximum if settings.receive_maximum < 65_535 else None,
            maximum_qos=settings.maximum_qos if settings.maximum_qos < 2 else None,
            retain_available=int(settings.retain_available),
            maximum_packet_size=min(settings.max_packet_size, MAX_PACKET_SIZE),
            topic_alias_maximum=settings.topic_alias_maximum or None,
            wildcard_subscription_available=int(settings.wildcard_subscription_available),
            subscription_identifier_available=int(settings.subscription_identifier_available),
            shared_subscription_available=int(settings.shared_subscription_available),
        )
        template = settings.response_information
        asked = packet.properties
        if asked is not None and asked.request_response_information == 1 and template:
            # 3.1.2.11.6: asked for, so given (a topic prefix for response topics);
            # never one a wildcard in the client id would make unusable.
            info = template.replace("{client_id}", client_id)
            if "+" not in info and "#" not in info:
                props.response_information = info
        connack = Connack(session_present, 0, props)
        data = encode(connack, 5)
        if len(data) > self._conn.peer_max_packet and props.response_information:
            props.response_information = None  # [MQTT-3.1.2-25]: fit it
            data = encode(connack, 5)
        return data

    # -- enhanced authentication (5.0 4.12) --------------------------------------------

    def _start_auth(self, packet: Connect, client_id: str, assigned: bool, method: str) -> None:
        """A CONNECT named an Authentication Method: start its exchange."""
        conn = self._conn
        factory = self._broker.auth_methods.get(method)
        if factory is None:
            self.refuse(
                ReasonCode.BAD_AUTHENTICATION_METHOD, f"no authentication method {method!r}"
            )
            return
        self.method = method
        context = AuthContext(client_id, packet.username, conn.peer, conn.listener)
        exchange = AuthExchange(method, factory(context), packet, client_id, assigned)
        self.exchange = exchange
        conn.authenticating()
        data = packet.properties.authentication_data if packet.properties is not None else None
        self._step(exchange, exchange.authenticator.start(method, data))

    def on_auth(self, packet: Auth) -> None:
        """An AUTH packet from the client, before or after CONNACK."""
        method = self.method
        if method is None:
            raise ProtocolError(
                "AUTH from a client that named no Authentication Method [MQTT-4.12.0-7]"
            )
        props = packet.properties
        if props is None or props.authentication_method != method:
            raise ProtocolError(
                "AUTH with another Authentication Method than CONNECT's [MQTT-4.12.0-5]"
            )
        conn = self._conn
        data = props.authentication_data
        exchange = self.exchange
        code = packet.reason_code
        if code == ReasonCode.CONTINUE_AUTHENTICATION:
            if exchange is None:
                raise ProtocolError("AUTH 0x18 with no authentication in progress")
            step = exchange.authenticator.continue_(data)
        elif code == ReasonCode.RE_AUTHENTICATE:
            if not conn.connected or exchange is not None:
                raise ProtocolError(
                    "AUTH 0x19 before CONNACK or during another exchange [MQTT-4.12.1-1]"
                )
            factory = self._broker.auth_methods.get(method)
            if factory is None:  # the method was unregistered since CONNECT
                conn.disconnect(
                    ReasonCode.NOT_AUTHORIZED, reason=f"no authentication method {method!r}"
                )
                return
            assert conn.client_id is not None
            context = AuthContext(conn.client_id, conn.username, conn.peer, conn.listener)
            exchange = self.exchange = AuthExchange(method, factory(context))
            step = exchange.authenticator.start(method, data)
        else:
            raise ProtocolError("AUTH 0x00 is sent by servers only (3.15.2.1)")
        self._step(exchange, step)

    def _step(self, exchange: AuthExchange, step: AuthStep) -> None:
        """Act on the method's answer: AUTH 0x18, CONNACK / AUTH 0x00, or refusal."""
        method = exchange.method
        if step.status == AuthStatus.CONTINUE:
            self._send_auth(ReasonCode.CONTINUE_AUTHENTICATION, method, step.data)
            if not exchange.reauth:
                # The connect timeout bounds each wait for the client's next AUTH.
                self.cancel_timer()
                self.timer = self._broker.scheduler.call_later(
                    self._settings.connect_timeout, self._timeout
                )
            return
        self.exchange = None
        connect = exchange.connect
        if connect is not None:
            self.cancel_timer()  # the exchange is over, one way or the other
        conn = self._conn
        if step.status == AuthStatus.SUCCESS:
            if connect is not None:
                # The method's identity is the user name for ACLs and session ownership.
                username = step.identity if step.identity is not None else connect.username
                self._accept(
                    connect,
                    exchange.client_id,
                    exchange.assigned,
                    username,
                    Properties(authentication_method=method, authentication_data=step.data),
                )
                return
            if step.identity is not None and step.identity != conn.username:
                self._reauth_failed("re-authenticated as another user")
                return
            if auth_logger.isEnabledFor(logging.INFO):
                auth_logger.info("%r re-authenticated with %s", conn, method)
            self._send_auth(ReasonCode.SUCCESS, method, step.data)
            return
        reason = step.reason or "authentication failed"
        if connect is not None:
            code = step.reason_code
            if code not in CONNACK_REASON_CODES or code < 0x80:
                code = ReasonCode.NOT_AUTHORIZED  # a method's odd code must not break CONNACK
            self.refuse(code, reason)
        else:
            self._reauth_failed(reason, step.reason_code)

    def _send_auth(self, code: int, method: str, data: bytes | None) -> None:
        props = Properties(authentication_method=method, authentication_data=data)
        self._conn.write(encode(Auth(code, props), 5))

    def _reauth_failed(self, reason: str, code: int = ReasonCode.NOT_AUTHORIZED) -> None:
        # DISCONNECT has no 0x86 / 0x8C: anything else than a DISCONNECT error becomes 0x87.
        if code not in DISCONNECT_REASON_CODES or code < 0x80:
            code = ReasonCode.NOT_AUTHORIZED
        if auth_logger.isEnabledFor(logging.INFO):
            auth_logger.info("%r: re-authentication failed: %s", self._conn, reason)
        self._conn.disconnect(code, reason=reason)
