"""The rarely set fields of a `Connection` and a `Session`, in side objects made on first use.

Theory of operation. Most clients name no will, use no topic aliases, are never
throttled or held by back-pressure, are no bridge and use MQTT 3.1.1 (so none of 5.0's
CONNECT properties apply). A slot per such field costs every idle connection 8 bytes;
twelve of them are 96. `RareFields`, the base class of `Connection`, keeps them in one
`ConnectionRare` made when one of them is first set to something other than its
default, and answers the default while there is none. Each field reads and writes as
an attribute (a property here); none is read per PUBLISH of a 3.1.1 client.

`SessionRareFields` does the same for a `Session`: the timers and will of an offline
session and the overflow flag of its queue (four slots, 32 bytes; with the queue
limits shared, `Session.__init__`, a session is 48 bytes smaller).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .handshake import MAX_PACKET_UNLIMITED

if TYPE_CHECKING:
    from ..protocol.packets import Packet
    from .message import Message
    from .scheduler import Timer
    from .session import Session

__all__ = ["ConnectionRare", "RareFields", "SessionRare", "SessionRareFields"]


class ConnectionRare:
    """The fields of `RareFields`, for one connection that needs one of them."""

    __slots__ = (
        "alias_max",
        "aliases",
        "blocked_on",
        "bridge",
        "held_packets",
        "identity",
        "peer_max_packet",
        "problem_info",
        "requested_expiry",
        "throttle_timer",
        "will",
        "will_delay",
    )

    def __init__(self) -> None:
        self.alias_max = 0
        self.aliases: dict[int, str] | None = None
        self.blocked_on: set[Session] | None = None
        self.bridge = False
        self.held_packets: list[Packet] | None = None
        self.identity: str | None = None
        self.peer_max_packet = MAX_PACKET_UNLIMITED
        self.problem_info = True
        self.requested_expiry = 0
        self.throttle_timer: Timer | None = None
        self.will: Message | None = None
        self.will_delay = 0


class RareFields:
    """Base of `Connection`: its rarely set fields, in a `ConnectionRare` once needed."""

    __slots__ = ("_rare",)

    def __init__(self) -> None:
        self._rare: ConnectionRare | None = None

    def _side(self) -> ConnectionRare:
        rare = self._rare
        if rare is None:
            rare = self._rare = ConnectionRare()
        return rare

    @property
    def alias_max(self) -> int:
        """The Topic Alias Maximum we allow the client (5.0; 0: none)."""
        rare = self._rare
        return 0 if rare is None else rare.alias_max

    @alias_max.setter
    def alias_max(self, value: int) -> None:
        if value or self._rare is not None:
            self._side().alias_max = value

    @property
    def aliases(self) -> dict[int, str] | None:
        """The client's topic aliases (5.0), None until it sets one."""
        rare = self._rare
        return None if rare is None else rare.aliases

    @aliases.setter
    def aliases(self, value: dict[int, str] | None) -> None:
        if value is not None or self._rare is not None:
            self._side().aliases = value

    @property
    def blocked_on(self) -> set[Session] | None:
        """Back-pressure (flow.py): the saturated sessions this publisher waits for."""
        rare = self._rare
        return None if rare is None else rare.blocked_on

    @blocked_on.setter
    def blocked_on(self, value: set[Session] | None) -> None:
        if value is not None or self._rare is not None:
            self._side().blocked_on = value

    @property
    def bridge(self) -> bool:
        """The client is a Mosquitto-style bridge (bridge bit in CONNECT's level byte)."""
        rare = self._rare
        return False if rare is None else rare.bridge

    @bridge.setter
    def bridge(self, value: bool) -> None:
        if value or self._rare is not None:
            self._side().bridge = value

    @property
    def held_packets(self) -> list[Packet] | None:
        """Packets that came while CLAIMING or while a SUBACK waits, handled after."""
        rare = self._rare
        return None if rare is None else rare.held_packets

    @held_packets.setter
    def held_packets(self, value: list[Packet] | None) -> None:
        if value is not None or self._rare is not None:
            self._side().held_packets = value

    @property
    def identity(self) -> str | None:
        """Common Name of the verified TLS client certificate (None without one)."""
        rare = self._rare
        return None if rare is None else rare.identity

    @identity.setter
    def identity(self, value: str | None) -> None:
        if value is not None or self._rare is not None:
            self._side().identity = value

    @property
    def peer_max_packet(self) -> int:
        """The client's Maximum Packet Size (5.0)."""
        rare = self._rare
        return MAX_PACKET_UNLIMITED if rare is None else rare.peer_max_packet

    @peer_max_packet.setter
    def peer_max_packet(self, value: int) -> None:
        if value != MAX_PACKET_UNLIMITED or self._rare is not None:
            self._side().peer_max_packet = value

    @property
    def problem_info(self) -> bool:
        """Request Problem Information [MQTT-3.1.2-29]."""
        rare = self._rare
        return True if rare is None else rare.problem_info

    @problem_info.setter
    def problem_info(self, value: bool) -> None:
        if not value or self._rare is not None:
            self._side().problem_info = value

    @property
    def requested_expiry(self) -> int:
        """The Session Expiry Interval CONNECT asked for [MQTT-3.14.2-2]."""
        rare = self._rare
        return 0 if rare is None else rare.requested_expiry

    @requested_expiry.setter
    def requested_expiry(self, value: int) -> None:
        if value or self._rare is not None:
            self._side().requested_expiry = value

    @property
    def throttle_timer(self) -> Timer | None:
        """The end of a `max_publish_rate` pause (flow.py), None when not throttled."""
        rare = self._rare
        return None if rare is None else rare.throttle_timer

    @throttle_timer.setter
    def throttle_timer(self, value: Timer | None) -> None:
        if value is not None or self._rare is not None:
            self._side().throttle_timer = value

    @property
    def will(self) -> Message | None:
        """The will (3.1.2.5) while connected; None once the client said DISCONNECT."""
        rare = self._rare
        return None if rare is None else rare.will

    @will.setter
    def will(self, value: Message | None) -> None:
        if value is not None or self._rare is not None:
            self._side().will = value

    @property
    def will_delay(self) -> int:
        """The Will Delay Interval in seconds (5.0)."""
        rare = self._rare
        return 0 if rare is None else rare.will_delay

    @will_delay.setter
    def will_delay(self, value: int) -> None:
        if value or self._rare is not None:
            self._side().will_delay = value


class SessionRare:
    """The fields of `SessionRareFields`, for one session that needs one of them."""

    __slots__ = ("expiry_timer", "overflowing", "pending_will", "will_timer")

    def __init__(self) -> None:
        self.expiry_timer: Timer | None = None
        self.will_timer: Timer | None = None
        self.pending_will: Message | None = None
        self.overflowing = False


class SessionRareFields:
    """Base of `Session` (through `Inflight`): the fields only a session that is offline,
    holds a delayed will or overflows its queue sets, in a `SessionRare` once needed."""

    __slots__ = ("_rare",)

    def __init__(self) -> None:
        self._rare: SessionRare | None = None

    def _side(self) -> SessionRare:
        rare = self._rare
        if rare is None:
            rare = self._rare = SessionRare()
        return rare

    @property
    def expiry_timer(self) -> Timer | None:
        """The end of an offline session's Session Expiry Interval."""
        rare = self._rare
        return None if rare is None else rare.expiry_timer

    @expiry_timer.setter
    def expiry_timer(self, value: Timer | None) -> None:
        if value is not None or self._rare is not None:
            self._side().expiry_timer = value

    @property
    def will_timer(self) -> Timer | None:
        """A delayed will waiting to be published (5.0 Will Delay Interval)."""
        rare = self._rare
        return None if rare is None else rare.will_timer

    @will_timer.setter
    def will_timer(self, value: Timer | None) -> None:
        if value is not None or self._rare is not None:
            self._side().will_timer = value

    @property
    def pending_will(self) -> Message | None:
        """That delayed will."""
        rare = self._rare
        return None if rare is None else rare.pending_will

    @pending_will.setter
    def pending_will(self, value: Message | None) -> None:
        if value is not None or self._rare is not None:
            self._side().pending_will = value

    @property
    def overflowing(self) -> bool:
        """The queue overflowed and has not drained to half since (one log line each)."""
        rare = self._rare
        return False if rare is None else rare.overflowing

    @overflowing.setter
    def overflowing(self, value: bool) -> None:
        if value or self._rare is not None:
            self._side().overflowing = value
