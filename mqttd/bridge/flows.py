"""The QoS flows a bridge mirrors between its two legs, packet id for packet id.

Theory of operation. A QoS 1/2 message keeps its packet id across the bridge: a
PUBLISH the local broker sent with id 7 goes to the remote with id 7, and the local
broker gets its PUBACK (or PUBREC, then PUBCOMP) only when the remote has sent it. The
other direction likewise. So each end keeps the state of the flow it takes part in, the
bridge keeps none that has to outlive it, and the guarantees hold end to end:

- nothing is acknowledged to a sender before the next broker has it: QoS 1 is at least
  once across outages and restarts of either side, since what is not acknowledged is
  sent again (the local broker's session keeps it, in its store when persistence is on);
- QoS 2 stays exactly once across a restart of the bridge: a PUBLISH the remote sends
  again carries the same id, which the local session still holds in its inbound QoS 2
  ids, so it is acknowledged and not routed twice; a PUBREL this bridge no longer knows
  about is passed on all the same, and so is the PUBCOMP that answers it;
- flows are (re)sent in the order they began [MQTT-4.6.0-1], so order is kept.

`_out` holds the local -> remote flows (ids chosen by the local broker), `_in` the
remote -> local ones (ids chosen by the remote). A SUBSCRIBE on a leg takes an id that
neither table uses (`MqttClient.packet_ids_in_use`).

When the remote comes back without its session (clean start, or it lost it), flows
given to the local broker for it are finished on the local side only ("orphans"), so the
local broker frees those ids for the remote's new session.

Windows: the local broker's inflight window bounds `_out`; the remote's Receive Maximum
bounds what of it is in flight; the local Receive Maximum bounds inbound flows, the rest
waits in `_in_waiting`, in order.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from ..protocol.packets import PubAck, PubComp, Publish, PubRec, PubRel
from ..protocol.properties import Properties
from ..protocol.reason_codes import ReasonCode
from .client import FlowPacket
from .topics import TopicRules

__all__ = ["BridgeStats", "Flows", "Leg"]

logger = logging.getLogger("mqttd.bridge")


class Leg(Protocol):
    """What the flows need of a connection (an `MqttClient`)."""

    connected: bool
    receive_maximum: int
    maximum_qos: int
    retain_available: bool

    def send(self, packet: PubAck | PubRec | PubRel | PubComp) -> None:
        """Write an acknowledgement."""
        ...

    def send_publish(self, packet: Publish) -> bool:
        """Write a PUBLISH; False when it is too large for the receiver."""
        ...


class _Out(enum.IntEnum):
    """Where a local -> remote QoS 1/2 flow stands (keyed by its packet id)."""

    WAITING = 0  # PUBLISH not sent on the current remote connection yet
    PUBLISHED = 1  # PUBLISH sent, awaiting PUBACK/PUBREC from the remote
    RECEIVED = 2  # QoS 2: the remote sent PUBREC, so did we; awaiting the local PUBREL
    RELEASING = 3  # QoS 2: PUBREL due or sent to the remote, awaiting its PUBCOMP


class _In(enum.IntEnum):
    """Where a remote -> local QoS 1/2 flow stands (keyed by the remote's packet id)."""

    LOCAL = 0  # PUBLISH given to the local broker, awaiting its PUBACK/PUBREC
    ACKED = 1  # QoS 1 done locally while the remote was away: answer its resend
    RECEIVED = 2  # QoS 2: the local broker sent PUBREC; the remote's PUBREL is awaited
    RELEASING = 3  # QoS 2: PUBREL given to the local broker, awaiting its PUBCOMP
    COMPLETED = 4  # QoS 2 done locally while the remote was away: answer its PUBREL


class _OutFlow:
    __slots__ = ("dup", "publish", "qos", "remote_done", "sent", "state")

    def __init__(self, qos: int, publish: Publish | None, dup: bool) -> None:
        self.qos = qos
        self.publish = publish  # as it goes to the remote (topic renamed)
        self.dup = dup  # the remote may have seen it: resend with DUP=1
        self.state = _Out.WAITING
        self.sent = False  # PUBREL sent on the current connection (RELEASING)
        self.remote_done = False  # finished without the remote (no rule, too large, QoS 0)


class _InFlow:
    __slots__ = ("local_skip", "orphan", "qos", "state")

    def __init__(self, qos: int, state: _In) -> None:
        self.qos = qos
        self.state = state
        self.orphan = False  # the remote lost its session: finish on the local side only
        self.local_skip = False  # no rule matched: never given to the local broker


@dataclass(slots=True)
class BridgeStats:
    """Counters of one bridge (for logs, $SYS and metrics)."""

    messages_sent: int = 0  # PUBLISH packets sent to the remote
    messages_received: int = 0  # PUBLISH packets from the remote given to the local broker
    messages_dropped: int = 0  # QoS 0 while disconnected, no matching rule, too large
    messages_refused: int = 0  # acknowledged by the remote with a reason code >= 0x80
    connects: int = 0  # successful connections to the remote
    connect_failures: int = 0


class Flows:
    """The mirrored QoS flows of one bridge (see the module docstring).

    The bridge sets `local` and `remote` as its legs come and go, `remote_ready` once
    the remote's subscriptions are made, and hands over every flow packet with
    `from_local`/`from_remote`.
    """

    def __init__(self, name: str, rules: TopicRules, remote_level: int, stats: BridgeStats) -> None:
        self.name = name
        self.rules = rules
        self.remote_level = remote_level
        self.stats = stats
        self.local: Leg | None = None
        self.remote: Leg | None = None
        self.remote_ready = False  # subscribed: outbound flows may be sent
        self._out: dict[int, _OutFlow] = {}
        self._in: dict[int, _InFlow] = {}
        self._in_waiting: deque[Publish] = deque()  # from the remote, for the local broker

    @property
    def out_ids(self) -> dict[int, _OutFlow]:
        """The ids of local -> remote flows (the remote leg's PUBLISH ids)."""
        return self._out

    @property
    def in_ids(self) -> dict[int, _InFlow]:
        """The ids of remote -> local flows (the local leg's PUBLISH ids)."""
        return self._in

    @property
    def outbound(self) -> int:
        """Local -> remote flows under way (received from the local broker, not done)."""
        return len(self._out)

    @property
    def inbound(self) -> int:
        """Remote -> local flows under way or waiting."""
        return len(self._in) + len(self._in_waiting)

    def _local_up(self) -> bool:
        return self.local is not None and self.local.connected

    # -- events from the bridge ----------------------------------------------------------

    def from_local(self, packet: FlowPacket) -> None:
        """A PUBLISH or acknowledgement from the local broker."""
        match packet:
            case Publish():
                self._from_local(packet)
            case PubRel():
                self._local_pubrel(packet.packet_id)
            case PubAck():
                self._local_puback(packet.packet_id, packet.reason_code)
            case PubRec():
                self._local_pubrec(packet.packet_id, packet.reason_code)
            case PubComp():
                self._local_pubcomp(packet.packet_id)

    def from_remote(self, packet: FlowPacket) -> None:
        """A PUBLISH or acknowledgement from the remote broker."""
        remote = self.remote
        assert remote is not None
        match packet:
            case Publish():
                self._from_remote(remote, packet)
            case PubRel():
                self._remote_pubrel(remote, packet.packet_id)
            case PubAck():
                self._remote_puback(packet.packet_id, packet.reason_code)
            case PubRec():
                self._remote_pubrec(remote, packet.packet_id, packet.reason_code)
            case PubComp():
                self._remote_pubcomp(packet.packet_id)

    def local_connected(self) -> None:
        """A new local connection: the remote sends again what was under way then."""
        self._in.clear()
        self._pump_in()

    def remote_up(self) -> None:
        """The remote's subscriptions are made: send what waits, in order."""
        self.remote_ready = True
        self._pump_out()
        self._pump_in()

    def remote_lost(self) -> None:
        """The remote connection ended: every flow is sent again on the next one."""
        self.remote_ready = False
        self.remote = None
        for flow in self._out.values():
            flow.sent = False
            if flow.state == _Out.PUBLISHED:
                flow.state = _Out.WAITING

    def remote_session_lost(self, local_qos2_ids: Iterable[int]) -> None:
        """The remote starts afresh: finish what it will never complete, locally only.

        `local_qos2_ids` are the inbound QoS 2 ids the local session holds: those this
        bridge does not know (from before it started) are released too.
        """
        local = self.local
        for pid, flow in list(self._in.items()):
            if flow.state in (_In.ACKED, _In.COMPLETED) or flow.local_skip:
                del self._in[pid]
                continue
            flow.orphan = True
            if flow.state == _In.RECEIVED and local is not None:
                flow.state = _In.RELEASING
                local.send(PubRel(pid))
        if local is not None:
            for pid in sorted(local_qos2_ids):
                if pid not in self._in:
                    flow = self._in[pid] = _InFlow(2, _In.RELEASING)
                    flow.orphan = True
                    local.send(PubRel(pid))

    # -- local -> remote -----------------------------------------------------------------------

    def _from_local(self, packet: Publish) -> None:
        remote_topic = self.rules.to_remote(packet.topic)
        if packet.qos == 0:
            remote = self.remote
            if remote_topic is None or remote is None or not self.remote_ready:
                self.stats.messages_dropped += 1
                return
            outgoing = self._outgoing(packet, remote_topic)
            if remote.send_publish(self._for_remote(remote, outgoing, 0, False)):
                self.stats.messages_sent += 1
            else:
                self.stats.messages_dropped += 1
            return
        pid = packet.packet_id
        assert pid is not None
        if pid in self._out:
            return  # sent again by the local broker (DUP): the flow is under way
        if remote_topic is None:
            flow = self._out[pid] = _OutFlow(packet.qos, None, packet.dup)
            self.stats.messages_dropped += 1
            self._finish_out_locally(pid, flow)
            return
        outgoing = self._outgoing(packet, remote_topic)
        self._out[pid] = _OutFlow(packet.qos, outgoing, packet.dup)
        self._pump_out()

    def _outgoing(self, packet: Publish, remote_topic: str) -> Publish:
        properties = packet.properties
        if properties is not None:
            properties = _hop_free(properties) if self.remote_level == 5 else None
        return Publish(
            remote_topic, packet.payload, packet.qos, packet.retain, False, None, properties
        )

    @staticmethod
    def _for_remote(remote: Leg, packet: Publish, packet_id: int, dup: bool) -> Publish:
        qos = min(packet.qos, remote.maximum_qos)
        return Publish(
            packet.topic,
            packet.payload,
            qos,
            packet.retain and remote.retain_available,
            dup and qos > 0,
            packet_id if qos else None,
            packet.properties,
        )

    def _pump_out(self) -> None:
        """Send waiting flows, in order, within the remote's Receive Maximum."""
        remote = self.remote
        if remote is None or not self.remote_ready:
            return
        window = remote.receive_maximum
        in_flight = 0
        for pid, flow in list(self._out.items()):
            if flow.remote_done:
                continue
            if flow.state == _Out.WAITING:
                if in_flight >= window:
                    break  # nothing later may overtake it
                if self._publish_out(remote, pid, flow):
                    in_flight += 1
            elif flow.state == _Out.RELEASING:
                if not flow.sent:
                    remote.send(PubRel(pid))
                    flow.sent = True
                in_flight += 1
            else:
                in_flight += 1

    def _publish_out(self, remote: Leg, pid: int, flow: _OutFlow) -> bool:
        publish = flow.publish
        assert publish is not None
        packet = self._for_remote(remote, publish, pid, flow.dup)
        if not remote.send_publish(packet):
            logger.warning(
                "bridge %s: a message on %r is larger than the remote accepts: dropped",
                self.name,
                publish.topic,
            )
            self.stats.messages_dropped += 1
            self._finish_out_locally(pid, flow)
            return False
        self.stats.messages_sent += 1
        if packet.qos == 0:  # the remote's Maximum QoS is 0
            self._finish_out_locally(pid, flow)
            return False
        flow.state = _Out.PUBLISHED
        flow.dup = True  # from now on a resend is a duplicate
        return True

    def _finish_out_locally(self, pid: int, flow: _OutFlow) -> None:
        """Acknowledge to the local broker a flow that will not reach the remote."""
        flow.remote_done = True
        local = self.local
        if flow.qos == 1:
            del self._out[pid]
            if local is not None:
                local.send(PubAck(pid))
        else:
            flow.state = _Out.RECEIVED  # the local PUBREL finishes it (_local_pubrel)
            if local is not None:
                local.send(PubRec(pid))

    def _remote_puback(self, pid: int, reason_code: int) -> None:
        flow = self._out.get(pid)
        if flow is None or flow.qos != 1 or flow.state != _Out.PUBLISHED:
            return
        del self._out[pid]
        if reason_code >= 0x80:
            self.stats.messages_refused += 1
        if self.local is not None:
            self.local.send(PubAck(pid))
        self._pump_out()

    def _remote_pubrec(self, remote: Leg, pid: int, reason_code: int) -> None:
        flow = self._out.get(pid)
        if flow is None or flow.qos != 2:
            # 4.3.3: answer an unknown PUBREC with PUBREL (5.0: 0x92) so the id is freed.
            remote.send(PubRel(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return
        local = self.local
        if flow.state == _Out.PUBLISHED:
            if reason_code >= 0x80:
                # 5.0 4.3.3: the flow ends here; the local broker is told the same code.
                del self._out[pid]
                self.stats.messages_refused += 1
                if local is not None:
                    local.send(PubRec(pid, reason_code))
                self._pump_out()
                return
            flow.state = _Out.RECEIVED
            if local is not None:
                local.send(PubRec(pid))
        elif flow.state == _Out.RELEASING:
            remote.send(PubRel(pid))  # our PUBREL was lost with the old connection
            flow.sent = True

    def _remote_pubcomp(self, pid: int) -> None:
        flow = self._out.get(pid)
        if flow is None or flow.state != _Out.RELEASING:
            return
        del self._out[pid]
        if self.local is not None:
            self.local.send(PubComp(pid))
        self._pump_out()

    def _local_pubrel(self, pid: int) -> None:
        flow = self._out.get(pid)
        if flow is None:
            # A release of a flow this bridge does not know (it restarted in between):
            # pass it on, so the remote frees the id too, and its PUBCOMP comes back.
            flow = self._out[pid] = _OutFlow(2, None, True)
            flow.state = _Out.RELEASING
        elif flow.remote_done:
            del self._out[pid]
            if self.local is not None:
                self.local.send(PubComp(pid))
            return
        elif flow.state == _Out.RECEIVED:
            flow.state = _Out.RELEASING
            flow.sent = False
        self._pump_out()

    # -- remote -> local -----------------------------------------------------------------------

    def _from_remote(self, remote: Leg, packet: Publish) -> None:
        local_topic = self.rules.to_local(packet.topic)
        properties = packet.properties
        if properties is not None:
            properties = _hop_free(properties)
        if packet.qos == 0:
            if local_topic is None or not self._local_up():
                self.stats.messages_dropped += 1
                return
            self._give_local(
                Publish(local_topic, packet.payload, 0, packet.retain, False, None, properties)
            )
            return
        pid = packet.packet_id
        assert pid is not None
        flow = self._in.get(pid)
        if flow is not None and not flow.orphan:
            if flow.state == _In.ACKED:
                del self._in[pid]
                remote.send(PubAck(pid))
                return
            if flow.state == _In.RECEIVED:
                remote.send(PubRec(pid))  # a resend: acknowledged again, never routed twice
                return
            if flow.state != _In.COMPLETED:
                return  # still with the local broker: its acknowledgement will follow
            del self._in[pid]  # an old flow, done: this is a new one with the same id
        if any(waiting.packet_id == pid for waiting in self._in_waiting):
            return  # a resend of one that already waits
        if local_topic is None:
            # No rule brings this topic in (an old subscription of a kept session).
            self.stats.messages_dropped += 1
            if packet.qos == 1:
                remote.send(PubAck(pid))
            elif flow is None:
                skipped = self._in[pid] = _InFlow(2, _In.RECEIVED)
                skipped.local_skip = True
                remote.send(PubRec(pid))
            return
        incoming = Publish(
            local_topic, packet.payload, packet.qos, packet.retain, packet.dup, pid, properties
        )
        self._in_waiting.append(incoming)
        self._pump_in()

    def _pump_in(self) -> None:
        """Give waiting remote messages to the local broker within its Receive Maximum."""
        local = self.local
        if local is None or not local.connected:
            return
        waiting = self._in_waiting
        if not waiting:
            return
        busy = sum(1 for f in self._in.values() if f.state in (_In.LOCAL, _In.RECEIVED))
        while waiting:
            packet = waiting[0]
            pid = packet.packet_id
            assert pid is not None
            if pid in self._in or busy >= local.receive_maximum:
                return  # its id is still taken by an older flow, or the window is full
            waiting.popleft()
            self._in[pid] = _InFlow(packet.qos, _In.LOCAL)
            busy += 1
            self._give_local(packet)

    def _give_local(self, packet: Publish) -> None:
        local = self.local
        assert local is not None
        if local.send_publish(packet):
            self.stats.messages_received += 1
            return
        # Larger than this broker accepts (a 3.1.1 remote is not told our maximum).
        logger.warning(
            "bridge %s: a message on %r is larger than limits.max_packet_size: dropped",
            self.name,
            packet.topic,
        )
        self.stats.messages_dropped += 1
        if packet.qos:
            assert packet.packet_id is not None
            del self._in[packet.packet_id]
            if packet.qos == 1:
                self._ack_remote(PubAck(packet.packet_id))
            else:
                skipped = self._in[packet.packet_id] = _InFlow(2, _In.RECEIVED)
                skipped.local_skip = True
                self._ack_remote(PubRec(packet.packet_id))

    def _ack_remote(self, packet: PubAck | PubRec | PubComp) -> bool:
        remote = self.remote
        if remote is None or not remote.connected:
            return False
        remote.send(packet)
        return True

    def _local_puback(self, pid: int, reason_code: int) -> None:
        flow = self._in.get(pid)
        if flow is None or flow.qos != 1 or flow.state != _In.LOCAL:
            return
        if flow.orphan or self._ack_remote(PubAck(pid, reason_code)):
            del self._in[pid]
        else:
            flow.state = _In.ACKED  # the remote resends it once back: answered then
        self._pump_in()

    def _local_pubrec(self, pid: int, reason_code: int) -> None:
        flow = self._in.get(pid)
        if flow is None or flow.qos != 2 or flow.state != _In.LOCAL:
            return
        if reason_code >= 0x80:
            # The local broker ended the flow (5.0 4.3.3); so does the remote, told why.
            del self._in[pid]
            if not flow.orphan:
                self._ack_remote(PubRec(pid, reason_code))
            self._pump_in()
            return
        if flow.orphan:
            flow.state = _In.RELEASING
            if self.local is not None:
                self.local.send(PubRel(pid))
            return
        flow.state = _In.RECEIVED
        self._ack_remote(PubRec(pid))

    def _remote_pubrel(self, remote: Leg, pid: int) -> None:
        flow = self._in.get(pid)
        local = self.local
        if flow is None:
            # Unknown here (the bridge restarted after the local PUBREC): pass it on;
            # the local session knows the id and answers PUBCOMP, which goes back.
            if local is None or not local.connected:
                return  # the remote sends it again after reconnecting
            self._in[pid] = _InFlow(2, _In.RELEASING)
            local.send(PubRel(pid))
            return
        if flow.local_skip or flow.state == _In.COMPLETED:
            del self._in[pid]
            remote.send(PubComp(pid))
        elif flow.state == _In.RECEIVED and local is not None:
            flow.state = _In.RELEASING
            local.send(PubRel(pid))
        self._pump_in()

    def _local_pubcomp(self, pid: int) -> None:
        flow = self._in.get(pid)
        if flow is None or flow.state != _In.RELEASING:
            return
        if flow.orphan or self._ack_remote(PubComp(pid)):
            del self._in[pid]
        else:
            flow.state = _In.COMPLETED
        self._pump_in()


def _hop_free(properties: Properties) -> Properties | None:
    """A message's properties without those that belong to one hop (3.3.2.3.4, 3.3.4)."""
    if properties.topic_alias is None and not properties.subscription_identifier:
        return properties
    cleaned = replace(properties, topic_alias=None, subscription_identifier=())
    return None if cleaned.is_empty() else cleaned
