"""The rarely set fields of a `Connection` and a `Session`, in side objects made on first use.

Theory of operation. Most clients name no will, use no topic aliases, are never
throttled or held by back-pressure, are no bridge and use MQTT 3.1.1 (so none of 5.0's
CONNECT properties apply). A slot per such field costs every idle connection 8 bytes;
twelve of them are 96. `RareFields`, the base class of `Connection`, keeps them in one
`ConnectionRare` made when one of them is first set to something other than its
default, and answers the default while there is none. Each field reads and writes as
an attribute (a `RareField` descriptor); none is read per PUBLISH of a 3.1.1 client.

`SessionRareFields` does the same for a `Session`: the timers and will of an offline
session and the overflow flag of its queue (four slots, 32 bytes; with the queue
limits shared, `Session.__init__`, a session is 48 bytes smaller).

A side object's slots stay unset until their field is set: a `RareField` reads an
unset slot as its default, so each default is written once, in the owner's class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, overload

from .handshake import MAX_PACKET_UNLIMITED

if TYPE_CHECKING:
    from ..protocol.packets import Packet
    from .message import Message
    from .scheduler import Timer
    from .session import Session

__all__ = ["ConnectionRare", "RareField", "RareFields", "SessionRare", "SessionRareFields"]

T = TypeVar("T")
S = TypeVar("S")


class _HasSide(Protocol):
    @property
    def _rare(self) -> object: ...

    def _side(self) -> object: ...


class RareField(Generic[T]):
    """An attribute kept in its owner's side object (`_rare`), `default` while unset.

    Setting the default on an owner without a side object makes none.
    """

    __slots__ = ("default", "name")

    def __init__(self, default: T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type) -> RareField[T]: ...

    @overload
    def __get__(self, obj: _HasSide, objtype: type | None = None) -> T: ...

    def __get__(self, obj: _HasSide | None, objtype: type | None = None) -> T | RareField[T]:
        if obj is None:
            return self
        rare = obj._rare
        if rare is None:
            return self.default
        value: T = getattr(rare, self.name, self.default)
        return value

    def __set__(self, obj: _HasSide, value: T) -> None:
        default = self.default
        if obj._rare is not None or (value is not default and value != default):
            setattr(obj._side(), self.name, value)


class _Sided(Generic[S]):
    """Base of the owners: `_rare`, the side object, made by `_side` on first need."""

    __slots__ = ("_rare",)

    #: The side object's class (set by each owner class).
    _side_class: Callable[[], S]

    def __init__(self) -> None:
        self._rare: S | None = None

    def _side(self) -> S:
        rare = self._rare
        if rare is None:
            rare = self._rare = self._side_class()
        return rare


class ConnectionRare:
    """The side object of `RareFields`: one slot per field, unset until set."""

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


class RareFields(_Sided[ConnectionRare]):
    """Base of `Connection`: its rarely set fields, in a `ConnectionRare` once needed."""

    __slots__ = ()
    _side_class = ConnectionRare

    #: The Topic Alias Maximum we allow the client (5.0; 0: none).
    alias_max: RareField[int] = RareField(0)
    #: The client's topic aliases (5.0), None until it sets one.
    aliases: RareField[dict[int, str] | None] = RareField(None)
    #: Back-pressure (flow.py): the saturated sessions this publisher waits for.
    blocked_on: RareField[set[Session] | None] = RareField(None)
    #: The client is a Mosquitto-style bridge (bridge bit in CONNECT's level byte).
    bridge: RareField[bool] = RareField(False)
    #: Packets that came while CLAIMING or while a SUBACK waits, handled after.
    held_packets: RareField[list[Packet] | None] = RareField(None)
    #: Common Name of the verified TLS client certificate (None without one).
    identity: RareField[str | None] = RareField(None)
    #: The client's Maximum Packet Size (5.0).
    peer_max_packet: RareField[int] = RareField(MAX_PACKET_UNLIMITED)
    #: Request Problem Information [MQTT-3.1.2-29].
    problem_info: RareField[bool] = RareField(True)
    #: The Session Expiry Interval CONNECT asked for [MQTT-3.14.2-2].
    requested_expiry: RareField[int] = RareField(0)
    #: The end of a `max_publish_rate` pause (flow.py), None when not throttled.
    throttle_timer: RareField[Timer | None] = RareField(None)
    #: The will (3.1.2.5) while connected; None once the client said DISCONNECT.
    will: RareField[Message | None] = RareField(None)
    #: The Will Delay Interval in seconds (5.0).
    will_delay: RareField[int] = RareField(0)


class SessionRare:
    """The side object of `SessionRareFields`: one slot per field, unset until set."""

    __slots__ = ("expiry_timer", "overflowing", "pending_will", "will_timer")


class SessionRareFields(_Sided[SessionRare]):
    """Base of `Session` (through `Inflight`): the fields only a session that is offline,
    holds a delayed will or overflows its queue sets, in a `SessionRare` once needed."""

    __slots__ = ()
    _side_class = SessionRare

    #: The end of an offline session's Session Expiry Interval.
    expiry_timer: RareField[Timer | None] = RareField(None)
    #: A delayed will waiting to be published (5.0 Will Delay Interval).
    will_timer: RareField[Timer | None] = RareField(None)
    #: That delayed will.
    pending_will: RareField[Message | None] = RareField(None)
    #: The queue is full and a warning was logged; cleared below half (session.py).
    overflowing: RareField[bool] = RareField(False)
