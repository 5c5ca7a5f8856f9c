"""Outbound QoS 1/2 messages of a session: recorded, sent under a packet id, acknowledged.

Theory of operation (4.3.2, 4.3.3). A message sent with a packet id sits in the
session's `inflight` (a dict, so it keeps the sending order) until PUBACK, or PUBREC
then PUBCOMP. A packet id is never reused while its message is inflight
[MQTT-2.2.1-3]. Of a persistent session, each outbound message is recorded in the store
(`record`, numbered by `next_seq`) and every change of its state after that: sent under
a packet id, PUBREL sent, acknowledged (the record goes). The window of messages in
flight and the resending on resume are the session's (session.py).

`Inflight` is a part of `Session` (a base class), not an object beside it: its fields
(`inflight`, `next_packet_id`, `next_seq`) are slots of the session itself, so a
session costs no extra object and a delivery no extra call or attribute hop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from ..store.base import OutboundState, StoredOutbound
from .rare import SessionRareFields

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Callable

    from ..store.base import Store
    from .context import SessionContext
    from .outbound import Outbound

__all__ = ["EMPTY", "Inflight"]

_PUBLISH_SENT = OutboundState.PUBLISH_SENT
_PUBREL_SENT = OutboundState.PUBREL_SENT


class _Empty(dict[Any, Any]):
    """A dict that stays empty: refuses every write that would add to it."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("EMPTY is shared: give the session a dict of its own first")

    __setitem__ = setdefault = update = __ior__ = _refuse


#: The `inflight` and `subscriptions` of a session that never had any: one shared
#: empty dict instead of two of 64 bytes per idle session. Reads work as on any dict;
#: the few places that add an entry give the session its own dict first
#: (`if d is EMPTY: d = session.x = {}`), and writing to EMPTY raises.
EMPTY: dict[Any, Any] = _Empty()


class Inflight(SessionRareFields):
    """The outbound QoS 1/2 part of `Session` (see the module docstring)."""

    __slots__ = ("inflight", "next_packet_id", "next_seq")

    inflight: dict[int, Outbound]
    next_packet_id: int
    next_seq: int
    # The rest of `Session` that this part uses:
    client_id: str
    _core: SessionContext
    _store: Store
    _queue: deque[Outbound] | list[Outbound] | None
    _max_inflight_bytes: int
    #: `Session._write_publish` (encode and write one PUBLISH; False if dropped).
    _write_publish: Callable[..., bool]
    #: `Session.pump` (send what is queued while there is room).
    pump: Callable[[], None]

    def record(self, entry: Outbound, packet_id: int = 0) -> None:
        """Write `entry` (and its message, the first time) to the store; with a
        `packet_id`, as a PUBLISH about to be sent under it."""
        message = entry.message
        store = self._store
        message_id = message.store_id
        if message_id is None:
            message_id = message.store_id = self._core.next_message_id()
            store.save_message(message_id, self._core.stored_message(message))
        entry.seq = seq = self.next_seq
        self.next_seq = seq + 1
        store.add_outbound(
            self.client_id,
            StoredOutbound(seq, message_id, entry.qos, entry.retain, entry.sub_ids)
            if not packet_id
            else StoredOutbound(
                seq, message_id, entry.qos, entry.retain, entry.sub_ids, packet_id, _PUBLISH_SENT
            ),
        )

    def _free_packet_id(self) -> int:
        """The next packet id not in flight [MQTT-2.2.1-3]."""
        inflight = self.inflight
        pid = self.next_packet_id
        while pid in inflight:
            pid = pid % 65_535 + 1
        return pid

    def _start(self, entry: Outbound, pid: int = 0) -> bool:
        """Send a QoS 1/2 entry with a fresh packet id (`pid`: already chosen and
        recorded by `record`); False if it had to be dropped. A change here goes to
        the copy in `Session._deliver_entry` too (a clean session's send, inline)."""
        inflight = self.inflight
        if not pid:
            pid = self.next_packet_id
            if pid in inflight:  # else it is free: `_free_packet_id` only when it is not
                pid = self._free_packet_id()
            if entry.seq:
                # Recorded before the PUBLISH is written, which for QoS 2 waits for the commit.
                self._store.set_outbound_state(self.client_id, entry.seq, pid, _PUBLISH_SENT)
        if self._write_publish(
            entry.message, entry.qos, entry.retain, entry.sub_ids, packet_id=pid
        ):
            self.next_packet_id = pid % 65_535 + 1
            entry.packet_id = pid
            entry.state = _PUBLISH_SENT
            if inflight is EMPTY:  # the first QoS 1/2 message of the session
                inflight = self.inflight = {}
            inflight[pid] = entry
            return True
        if entry.seq:
            self._store.remove_outbound(self.client_id, entry.seq)
        return False

    def _bytes_room(self) -> bool:
        """max_inflight_bytes (Mosquitto's): another QoS 1/2 message may start while the
        payloads in flight are below the limit, so one message of any size always may."""
        inflight = self.inflight
        if not inflight:
            return True
        return sum(len(e.message.payload) for e in inflight.values()) < self._max_inflight_bytes

    # -- acknowledgements from the client ----------------------------------------------

    def puback(self, packet_id: int, entry: Outbound) -> None:
        """PUBACK for `entry`, the outbound QoS 1 message inflight under `packet_id`:
        the caller (inbound.py's `on_puback`) looked it up and checked its QoS, so a
        PUBACK costs one lookup in `inflight`, not two."""
        del self.inflight[packet_id]
        if entry.seq:
            self._store.remove_outbound(self.client_id, entry.seq)
        ack = entry.ack
        if ack is not None:
            entry.ack = None
            ack.delivered()
        if self._queue:
            self.pump()

    def pubrec(self, packet_id: int, reason_code: int) -> bool:
        """PUBREC for an outbound QoS 2 message; False if unknown. The caller sends PUBREL.

        A 5.0 PUBREC with a reason code >= 0x80 ends the flow there (4.3.3): the
        message is forgotten and no PUBREL follows (the caller checks the code).
        """
        entry = self.inflight.get(packet_id)
        if entry is None or entry.qos != 2:
            return False
        ack = entry.ack
        if ack is not None:
            # A cluster's shared delivery: the member has the message now [MQTT-4.8.2-5].
            entry.ack = None
            ack.delivered()
        if reason_code >= 0x80:
            del self.inflight[packet_id]
            if entry.seq:
                self._store.remove_outbound(self.client_id, entry.seq)
            if self._queue:
                self.pump()
            return True
        if entry.state != _PUBREL_SENT:
            entry.state = _PUBREL_SENT
            if entry.seq:
                self._store.set_outbound_state(self.client_id, entry.seq, packet_id, _PUBREL_SENT)
        return True

    def pubcomp(self, packet_id: int) -> bool:
        """PUBCOMP ending an outbound QoS 2 flow; False if no PUBREL awaits it."""
        entry = self.inflight.get(packet_id)
        if entry is None or entry.state != _PUBREL_SENT:
            return False
        del self.inflight[packet_id]
        if entry.seq:
            self._store.remove_outbound(self.client_id, entry.seq)
        if self._queue:
            self.pump()
        return True
