"""The connection's transition table: every (state, packet class) gives its documented outcome.

connection.py keeps every transition in `TRANSITIONS`, as h11 does. These tests drive a
sans-IO connection into each state, feed it one packet of each class the reader makes,
and check what it wrote back and which state it is in afterwards.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import pytest
from support.core import Client, Harness

from mqttd.auth.enhanced import AuthContext, AuthStep
from mqttd.broker.backplane import InProcessBackplane, InProcessHub
from mqttd.broker.connection import TRANSITIONS, State
from mqttd.protocol import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    Properties,
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
    encode,
)

METHOD = "TEST-CONTINUE"

SAMPLES: dict[type, Packet] = {
    Connect: Connect("second", 5),
    Publish: Publish("t", b"x"),
    PubAck: PubAck(1),
    PubRec: PubRec(1),
    PubRel: PubRel(1),
    PubComp: PubComp(1),
    Subscribe: Subscribe(1, [Subscription("t")]),
    Unsubscribe: Unsubscribe(2, ["t"]),
    PingReq: PingReq(),
    Disconnect: Disconnect(0),
    Auth: Auth(0x18, Properties(authentication_method=METHOD, authentication_data=b"more")),
    Connack: Connack(False, 0),
    SubAck: SubAck(1, [0]),
    UnsubAck: UnsubAck(2, [0]),
    PingResp: PingResp(),
}

#: What the server writes (packet class name, reason code), and the state after.
Outcome = tuple[list[tuple[str, int]], State]

CLOSE: Outcome = ([], State.CLOSING)  # closed without a word
REFUSED: Outcome = ([("Connack", 0x82)], State.CLOSING)  # before CONNACK: 0x82, close
ENDED: Outcome = ([("Disconnect", 0x82)], State.CLOSING)  # after CONNACK: 0x82, close
QUIET: Outcome = ([], State.CONNECTED)  # handled, nothing to answer

#: The documented outcome of every transition.
EXPECTED: dict[tuple[State, type], Outcome] = {
    # [MQTT-3.1.0-1]: the first packet must be CONNECT; the level is not known yet,
    # so nothing can be said: the socket just closes.
    **{(State.AWAIT_CONNECT, cls): CLOSE for cls in SAMPLES},
    (State.AWAIT_CONNECT, Connect): ([("Connack", 0)], State.CONNECTED),
    # [MQTT-3.1.2-30]: AUTH or DISCONNECT only until the exchange ends.
    **{(State.AUTHENTICATING, cls): REFUSED for cls in SAMPLES},
    (State.AUTHENTICATING, Auth): ([("Auth", 0x18)], State.AUTHENTICATING),
    (State.AUTHENTICATING, Disconnect): CLOSE,
    # Connected (5.0, no Authentication Method, nothing in flight).
    (State.CONNECTED, Connect): ENDED,  # [MQTT-3.1.0-2]
    (State.CONNECTED, Publish): QUIET,
    (State.CONNECTED, PubAck): QUIET,  # an id not in flight: a late ack, no error
    (State.CONNECTED, PubRec): ([("PubRel", 0x92)], State.CONNECTED),
    (State.CONNECTED, PubRel): ([("PubComp", 0x92)], State.CONNECTED),
    (State.CONNECTED, PubComp): QUIET,
    (State.CONNECTED, Subscribe): ([("SubAck", 0)], State.CONNECTED),
    (State.CONNECTED, Unsubscribe): ([("UnsubAck", 0x11)], State.CONNECTED),  # none existed
    (State.CONNECTED, PingReq): ([("PingResp", 0)], State.CONNECTED),
    (State.CONNECTED, Disconnect): CLOSE,
    (State.CONNECTED, Auth): ENDED,  # [MQTT-4.12.0-7]: no method named in CONNECT
    (State.CONNECTED, Connack): ENDED,  # packets only servers send
    (State.CONNECTED, SubAck): ENDED,
    (State.CONNECTED, UnsubAck): ENDED,
    (State.CONNECTED, PingResp): ENDED,
    # What follows a DISCONNECT in the same read is never looked at.
    **{(State.CLOSING, cls): CLOSE for cls in SAMPLES},
    # A cluster claims the client id before the CONNACK: packets wait, unanswered.
    **{(State.CLAIMING, cls): ([], State.CLAIMING) for cls in SAMPLES},
    (State.CLAIMING, Connect): REFUSED,  # [MQTT-3.1.0-2]
}


class PendingClaims(InProcessBackplane):
    """A cluster node whose claims the test answers (`answers`)."""

    def __init__(self) -> None:
        super().__init__(InProcessHub())
        self.answers: list[Callable[[int], None]] = []

    def claim_client_id(
        self, client_id: str, clean_start: bool, answered: Callable[[int], None]
    ) -> None:
        self.answers.append(answered)


class Continues:
    """An authenticator that always asks for more: the exchange stays open."""

    def start(self, method: str, data: bytes | None) -> AuthStep:
        return AuthStep.proceed(b"challenge")

    def continue_(self, data: bytes | None) -> AuthStep:
        return AuthStep.proceed(b"again")


def _continues(context: AuthContext) -> Continues:
    return Continues()


def _written(client: Client) -> list[tuple[str, int]]:
    out = []
    for packet in client.packets():
        code = getattr(packet, "reason_code", None)
        if isinstance(packet, SubAck | UnsubAck):
            code = packet.reason_codes[0]
        out.append((type(packet).__name__, code or 0))
    return out


def _client_in(state: State, harness: Harness) -> tuple[Client, bytes]:
    """A client whose connection is in `state`, and bytes to send before the packet."""
    if state is State.AWAIT_CONNECT:
        return harness.client(5), b""
    if state is State.CLAIMING:
        harness.broker.use_backplane(PendingClaims())
        client = harness.client(5)
        client.send(Connect("c", 5))
        assert _written(client) == []
        return client, b""
    if state is State.AUTHENTICATING:
        harness.broker.auth_methods.register(METHOD, _continues)
        client = harness.client(5)
        client.send(Connect("c", 5, properties=Properties(authentication_method=METHOD)))
        assert _written(client) == [("Auth", 0x18)]
        return client, b""
    client = harness.connected("c", level=5)
    if state is State.CLOSING:
        return client, encode(Disconnect(0), 5)
    return client, b""


def test_the_table_has_a_transition_for_every_state_and_every_packet_the_reader_makes() -> None:
    packet_classes = set(typing.get_args(Packet))
    assert set(SAMPLES) == packet_classes
    assert set(TRANSITIONS) == {(state, cls) for state in State for cls in packet_classes}
    assert set(EXPECTED) == set(TRANSITIONS)


CASES = [(state, cls) for state in State for cls in sorted(SAMPLES, key=lambda c: c.__name__)]


def _name(value: object) -> str:
    return value.name if isinstance(value, State) else getattr(value, "__name__", "?")


@pytest.mark.parametrize(("state", "cls"), CASES, ids=_name)
def test_each_transition_gives_its_documented_outcome(
    harness: Harness, state: State, cls: type
) -> None:
    client, before = _client_in(state, harness)
    assert client.conn.state is (State.CONNECTED if state is State.CLOSING else state)
    packet = SAMPLES[cls]
    if state is State.AWAIT_CONNECT and cls is not Connect:
        # Before CONNECT the reader reads 3.1.1 (AUTH is 5.0's only: malformed there).
        data = encode(packet, 5 if cls is Auth else 4)
    else:
        data = encode(packet, 5)
    client.send_bytes(before + data)
    expected_writes, expected_state = EXPECTED[(state, cls)]
    assert (_written(client), client.conn.state) == (expected_writes, expected_state)
    assert client.sink.closed == (expected_state is State.CLOSING)


def test_a_packet_not_allowed_before_connack_counts_as_a_protocol_error(harness: Harness) -> None:
    client, _ = _client_in(State.AUTHENTICATING, harness)
    client.send(PingReq())
    assert harness.broker.stats.protocol_errors == 1
    assert client.conn.close_reason.startswith("only AUTH or DISCONNECT before CONNACK")


def test_the_reader_decodes_every_sample_as_itself() -> None:
    # The samples reach the table as they are (not as a decoding error).
    for cls, packet in SAMPLES.items():
        (decoded,) = PacketReader(1 << 20, protocol_level=5).feed(encode(packet, 5))
        assert type(decoded) is cls


def test_packets_held_while_claiming_are_handled_after_the_connack(harness: Harness) -> None:
    claims = PendingClaims()
    harness.broker.use_backplane(claims)
    client = harness.client(5)
    client.send_bytes(
        encode(Connect("c", 5), 5)
        + encode(Subscribe(1, [Subscription("t")]), 5)
        + encode(PingReq(), 5)
    )
    assert _written(client) == [] and client.conn.state is State.CLAIMING
    (answer,) = claims.answers
    answer(0)
    assert _written(client) == [("Connack", 0), ("SubAck", 0), ("PingResp", 0)]
    assert client.conn.connected


def test_a_claim_lost_to_another_node_refuses_the_connect(harness: Harness) -> None:
    claims = PendingClaims()
    harness.broker.use_backplane(claims)
    client = harness.client(5)
    client.send(Connect("c", 5))
    (answer,) = claims.answers
    answer(0x88)
    assert _written(client) == [("Connack", 0x88)]
    assert client.sink.closed and "c" not in harness.broker.sessions


def test_a_client_gone_while_claiming_is_not_served(harness: Harness) -> None:
    claims = PendingClaims()
    harness.broker.use_backplane(claims)
    client = harness.client(5)
    client.send(Connect("c", 5))
    client.conn.connection_lost()
    (answer,) = claims.answers
    answer(0)
    assert _written(client) == [] and "c" not in harness.broker.sessions
