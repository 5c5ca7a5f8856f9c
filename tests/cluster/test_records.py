"""A session's log records (sans-IO): the fold gives the session back, and a snapshot
that compacts the log gives the same session as the records it replaces."""

from __future__ import annotations

import pytest

from mqttd.cluster import records as r
from mqttd.store.base import OutboundState, StoredMessage


def message(n: int) -> StoredMessage:
    return StoredMessage(f"t/{n}", f"m{n}".encode(), 2, False, None, None, "publisher")


def log() -> list[bytes]:
    """A session's life: subscriptions, messages queued, sent, acknowledged, QoS 2."""
    out = [
        r.encode_record(r.SAVE_SESSION, [5, 300, None, None]),
        r.encode_record(r.ADD_SUBSCRIPTION, ["t/#", 2, False, False, 0, None]),
        r.encode_record(r.ADD_SUBSCRIPTION, ["u/+", 1, True, False, 0, 7]),
    ]
    for n in range(1, 6):
        args = [n, 2, False, [], None, 0, f"b.1.{n}"]
        out.append(r.encode_record(r.ADD_OUTBOUND, args, message(n)))
    out.append(r.encode_record(r.SET_OUTBOUND_STATE, [1, 10, int(OutboundState.PUBLISH_SENT)]))
    out.append(r.encode_record(r.SET_OUTBOUND_STATE, [2, 11, int(OutboundState.PUBREL_SENT)]))
    out.append(r.encode_record(r.REMOVE_OUTBOUND, [3]))
    out.append(r.encode_record(r.ADD_INBOUND_QOS2, [42]))
    out.append(r.encode_record(r.REMOVE_SUBSCRIPTION, ["u/+"]))
    return out


def summary(folded: r.Folded) -> object:
    (session,) = folded.state.sessions
    return (
        session.protocol_level,
        session.expiry_interval,
        [s.topic_filter for s in session.subscriptions],
        [
            (o.seq, o.packet_id, o.state, folded.state.messages[o.message_id].payload)
            for o in session.outbound
        ],
        session.inbound_qos2,
        folded.ids,
    )


def test_the_fold_gives_the_session_its_records_describe() -> None:
    folded = r.fold("c", enumerate(log(), 1))
    assert summary(folded) == (
        5,
        300,
        ["t/#"],
        [
            (1, 10, OutboundState.PUBLISH_SENT, b"m1"),
            (2, 11, OutboundState.PUBREL_SENT, b"m2"),
            (4, None, OutboundState.QUEUED, b"m4"),
            (5, None, OutboundState.QUEUED, b"m5"),
        ],
        {42},
        {1: "b.1.1", 2: "b.1.2", 4: "b.1.4", 5: "b.1.5"},
    )
    # The acknowledged message stays known: a replay must not give it again.
    assert folded.seen == {f"b.1.{n}" for n in range(1, 6)}


def test_a_delete_ends_the_session_and_a_later_save_starts_a_new_one() -> None:
    records = [*log(), r.encode_record(r.DELETE_SESSION, [])]
    assert r.fold("c", enumerate(records, 1)).state.sessions == []
    records.append(r.encode_record(r.SAVE_SESSION, [4, 10, None, None]))
    (session,) = r.fold("c", enumerate(records, 1)).state.sessions
    assert session.outbound == [] and session.subscriptions == []


@pytest.mark.parametrize("cut", [3, 8, 12])
def test_a_snapshot_gives_the_same_session_as_the_records_it_replaces(cut: int) -> None:
    records = list(enumerate(log(), 1))
    before = records[:cut]
    snapshot = r.encode_snapshot(cut, r.fold("c", before))
    assert snapshot is not None
    # Records written while the snapshot was made come before it in the stream; what
    # the snapshot holds is purged.
    after_purge = [*records[cut:], (len(records) + 1, snapshot)]
    assert summary(r.fold("c", after_purge)) == summary(r.fold("c", records))
    # Kept unpurged (the purge had not run yet) it gives the same too.
    assert summary(r.fold("c", [*records, (len(records) + 1, snapshot)])) == summary(
        r.fold("c", records)
    )


def test_a_damaged_record_is_an_error_not_a_wrong_session() -> None:
    with pytest.raises(r.RecordError):
        r.fold("c", [(1, b"S\x00\x05[1,2"), (2, b"")])
    with pytest.raises(r.RecordError):
        r.fold("c", [(1, b"?\x00\x02[]")])


def test_a_snapshot_keeps_the_ids_of_recent_messages_acknowledged_before_it() -> None:
    records = list(enumerate(log(), 1))
    acked = [*records, (len(records) + 1, r.encode_record(r.REMOVE_OUTBOUND, [4]))]
    recent = r.message_ids(data for _, data in acked)
    snapshot = r.encode_snapshot(len(acked), r.fold("c", acked), recent)
    assert snapshot is not None
    folded = r.fold("c", [(len(acked) + 1, snapshot)])
    assert [o.seq for o in folded.state.sessions[0].outbound] == [1, 2, 5]
    assert "b.1.4" in folded.seen and "b.1.3" in folded.seen  # gone, still known
