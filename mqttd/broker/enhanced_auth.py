"""The AUTH packet flow of a Connection (5.0 section 4.12): enhanced authentication.

The methods themselves live in `mqttd.auth` (`AuthMethods`, `Authenticator`, SCRAM); this
module drives one method's exchange over the wire for a `Connection`.

Initial authentication. A CONNECT with an Authentication Method whose name is not
registered gets CONNACK 0x8C [MQTT-4.12.0-1]. Otherwise the method's `start` sees the
CONNECT's Authentication Data; while it answers CONTINUE the server sends AUTH 0x18 and
the client must answer AUTH 0x18 [MQTT-4.12.0-2], [MQTT-4.12.0-3], sending nothing but
AUTH or DISCONNECT before CONNACK [MQTT-3.1.2-30]. SUCCESS completes the CONNECT
(CONNACK 0x00 carrying the method and the last data [MQTT-4.12.0-5]); FAIL refuses it
with the method's reason code [MQTT-4.12.0-4]. The connect timeout bounds each wait
for the client's next AUTH.

Re-authentication [MQTT-4.12.1-1]: after CONNACK the client may send AUTH 0x19 with the
same method; the exchange runs again while other packets keep flowing, and ends with
AUTH 0x00 or, on failure, DISCONNECT 0x87 [MQTT-4.12.1-2]. A re-authentication must
prove the same identity as the first one: a session is not handed to another user.

Protocol errors (DISCONNECT 0x82): AUTH from a client that gave no method in CONNECT
[MQTT-4.12.0-7]; AUTH with another method [MQTT-4.12.0-5]; AUTH 0x18 when no exchange
is running; AUTH 0x19 before CONNACK or during another exchange; AUTH 0x00 from a client
(only servers send Success, 3.15.2.1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..auth.enhanced import AuthContext, Authenticator, AuthStatus, AuthStep
from ..protocol.encoder import encode
from ..protocol.errors import ProtocolError
from ..protocol.packets import Auth, Connect
from ..protocol.properties import Properties
from ..protocol.reason_codes import CONNACK_REASON_CODES, DISCONNECT_REASON_CODES, ReasonCode

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["AuthExchange", "on_auth", "start_connect_auth"]

logger = logging.getLogger("mqttd.auth")


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


def start_connect_auth(
    conn: Connection, packet: Connect, client_id: str, assigned: bool, method: str
) -> None:
    """A CONNECT named an Authentication Method: start its exchange."""
    factory = conn._broker.auth_methods.get(method)
    if factory is None:
        conn._refuse(ReasonCode.BAD_AUTHENTICATION_METHOD, f"no authentication method {method!r}")
        return
    conn.auth_method = method
    context = AuthContext(client_id, packet.username, conn.peer, conn.listener)
    exchange = AuthExchange(method, factory(context), packet, client_id, assigned)
    conn.auth_exchange = exchange
    data = packet.properties.authentication_data if packet.properties is not None else None
    _step(conn, exchange, exchange.authenticator.start(method, data))


def on_auth(conn: Connection, packet: Auth) -> None:
    """An AUTH packet from the client, before or after CONNACK."""
    method = conn.auth_method
    if method is None:
        raise ProtocolError(
            "AUTH from a client that named no Authentication Method [MQTT-4.12.0-7]"
        )
    props = packet.properties
    if props is None or props.authentication_method != method:
        raise ProtocolError(
            "AUTH with another Authentication Method than CONNECT's [MQTT-4.12.0-5]"
        )
    data = props.authentication_data
    exchange = conn.auth_exchange
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
        factory = conn._broker.auth_methods.get(method)
        if factory is None:  # the method was unregistered since CONNECT
            conn.disconnect(
                ReasonCode.NOT_AUTHORIZED, reason=f"no authentication method {method!r}"
            )
            return
        assert conn.client_id is not None
        context = AuthContext(conn.client_id, conn.username, conn.peer, conn.listener)
        exchange = conn.auth_exchange = AuthExchange(method, factory(context))
        step = exchange.authenticator.start(method, data)
    else:
        raise ProtocolError("AUTH 0x00 is sent by servers only (3.15.2.1)")
    _step(conn, exchange, step)


def _step(conn: Connection, exchange: AuthExchange, step: AuthStep) -> None:
    """Act on the method's answer: AUTH 0x18, CONNACK / AUTH 0x00, or refusal."""
    method = exchange.method
    if step.status == AuthStatus.CONTINUE:
        _send_auth(conn, ReasonCode.CONTINUE_AUTHENTICATION, method, step.data)
        if not exchange.reauth:
            # The connect timeout bounds each wait for the client's next AUTH.
            timer = conn._connect_timer
            if timer is not None:
                timer.cancel()
            conn._connect_timer = conn._broker.scheduler.call_later(
                conn._settings.connect_timeout, conn._on_connect_timeout
            )
        return
    conn.auth_exchange = None
    connect = exchange.connect
    if connect is not None and conn._connect_timer is not None:
        conn._connect_timer.cancel()  # the exchange is over, one way or the other
        conn._connect_timer = None
    if step.status == AuthStatus.SUCCESS:
        if connect is not None:
            # The method's identity is the user name for ACLs and session ownership.
            username = step.identity if step.identity is not None else connect.username
            conn._accept(
                connect,
                exchange.client_id,
                exchange.assigned,
                username,
                Properties(authentication_method=method, authentication_data=step.data),
            )
            return
        if step.identity is not None and step.identity != conn.username:
            _reauth_failed(conn, "re-authenticated as another user")
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info("%r re-authenticated with %s", conn, method)
        _send_auth(conn, ReasonCode.SUCCESS, method, step.data)
        return
    reason = step.reason or "authentication failed"
    if connect is not None:
        code = step.reason_code
        if code not in CONNACK_REASON_CODES or code < 0x80:
            code = ReasonCode.NOT_AUTHORIZED  # a method's odd code must not break CONNACK
        conn._refuse(code, reason)
    else:
        _reauth_failed(conn, reason, step.reason_code)


def _send_auth(conn: Connection, code: int, method: str, data: bytes | None) -> None:
    props = Properties(authentication_method=method, authentication_data=data)
    conn._write(encode(Auth(code, props), 5))


def _reauth_failed(conn: Connection, reason: str, code: int = ReasonCode.NOT_AUTHORIZED) -> None:
    # DISCONNECT has no 0x86 / 0x8C: anything else than a DISCONNECT error becomes 0x87.
    if code not in DISCONNECT_REASON_CODES or code < 0x80:
        code = ReasonCode.NOT_AUTHORIZED
    if logger.isEnabledFor(logging.INFO):
        logger.info("%r: re-authentication failed: %s", conn, reason)
    conn.disconnect(code, reason=reason)
