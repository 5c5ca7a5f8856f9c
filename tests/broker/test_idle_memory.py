"""What an idle connection does not make: the side object of rare fields, session dicts."""

from __future__ import annotations

import pytest
from support.core import Harness

from mqttd.broker.inflight import EMPTY
from mqttd.protocol import Properties, Will


def test_an_idle_3_1_1_client_has_no_side_object_and_shares_the_empty_dicts(
    harness: Harness,
) -> None:
    client = harness.connected("idle", keep_alive=60)
    conn = client.conn
    assert conn._rare is None
    session = conn.session
    assert session is not None
    assert session.subscriptions is EMPTY and session.inflight is EMPTY
    # The defaults read as before.
    assert (conn.will, conn.will_delay, conn.bridge, conn.identity) == (None, 0, False, None)
    assert (conn.alias_max, conn.aliases, conn.requested_expiry) == (0, None, 0)
    assert conn.problem_info is True and conn.peer_max_packet == 268_435_460


def test_a_will_makes_the_side_object_and_a_clean_disconnect_drops_the_will(
    harness: Harness,
) -> None:
    client = harness.connected("w", will=Will("last", b"bye"))
    conn = client.conn
    assert conn._rare is not None
    assert conn.will is not None and conn.will.topic == "last"
    client.disconnect()
    assert conn.will is None


def test_5_connect_properties_are_kept_in_the_side_object(harness: Harness) -> None:
    props = Properties(
        request_problem_information=0, maximum_packet_size=1000, session_expiry_interval=30
    )
    client = harness.connected("five", level=5, properties=props)
    conn = client.conn
    assert conn._rare is not None
    assert (conn.problem_info, conn.peer_max_packet, conn.requested_expiry) == (False, 1000, 30)


def test_the_shared_empty_dict_refuses_writes() -> None:
    with pytest.raises(TypeError):
        EMPTY["x"] = 1
    with pytest.raises(TypeError):
        EMPTY.setdefault("x", 1)
    with pytest.raises(TypeError):
        EMPTY.update(x=1)
    assert EMPTY == {} and EMPTY.pop("x", None) is None


def test_subscribing_and_qos1_delivery_give_a_session_dicts_of_its_own(
    harness: Harness,
) -> None:
    sub = harness.connected("sub")
    other = harness.connected("other")
    sub.subscribe("t", qos=1)
    sub_session, other_session = sub.conn.session, other.conn.session
    assert sub_session is not None and other_session is not None
    assert sub_session.subscriptions is not EMPTY and list(sub_session.subscriptions) == ["t"]
    assert sub_session.inflight is EMPTY
    other.publish("t", b"m", qos=1, packet_id=1)
    assert [p.payload for p in sub.publishes()] == [b"m"]
    assert sub_session.inflight is not EMPTY and len(sub_session.inflight) == 1
    assert other_session.subscriptions is EMPTY and other_session.inflight is EMPTY
    assert EMPTY == {}
    sub.unsubscribe("t")
    assert sub_session.subscriptions == {} and EMPTY == {}


def test_idle_sessions_share_their_queue_limits_and_have_no_side_object(
    harness: Harness,
) -> None:
    a, b = harness.connected("a"), harness.connected("b")
    sa, sb = a.conn.session, b.conn.session
    assert sa is not None and sb is not None
    assert sa._rare is None and sb._rare is None
    assert sa._queue_limits is sb._queue_limits
    assert (sa.expiry_timer, sa.will_timer, sa.pending_will, sa.overflowing) == (
        None,
        None,
        None,
        False,
    )
    sa.set_queue_limits(5, 0, "drop_oldest")
    assert sa._queue_limits == (5, 0, True) and sb._queue_limits is not sa._queue_limits


def test_an_offline_session_keeps_its_expiry_timer_in_the_side_object(
    harness: Harness,
) -> None:
    props = Properties(session_expiry_interval=60)
    client = harness.connected("gone", level=5, clean_start=False, properties=props)
    session = client.conn.session
    assert session is not None and session._rare is None
    client.lose()
    assert session._rare is not None and session.expiry_timer is not None
    harness.advance(60.1)
    assert session.expiry_timer is None
    assert "gone" not in harness.broker.sessions


def test_a_side_object_reads_the_fields_never_set_as_their_defaults(harness: Harness) -> None:
    # An offline session's side object holds its expiry timer only: queueing for it
    # reads the overflow flag, which was never set there.
    props = Properties(session_expiry_interval=60)
    client = harness.connected("away", level=5, clean_start=False, properties=props)
    client.subscribe("t", qos=1)
    session = client.conn.session
    assert session is not None
    client.lose()
    assert session._rare is not None and session.overflowing is False
    assert session.will_timer is None and session.pending_will is None
    publisher = harness.connected("pub")
    publisher.publish("t", b"m", qos=1, packet_id=1)
    assert session.queue_length == 1 and session.overflowing is False
    # The same for a connection whose side object holds a will only.
    conn = harness.connected("w", will=Will("last", b"bye")).conn
    assert conn._rare is not None
    assert (conn.alias_max, conn.aliases, conn.problem_info, conn.throttle_timer) == (
        0,
        None,
        True,
        None,
    )
