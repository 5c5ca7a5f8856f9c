"""A message on its way to one session: queued, or inflight with its packet id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.base import OutboundState

if TYPE_CHECKING:
    from .message import Message
    from .shared import SharedGroup

__all__ = ["Outbound", "SharedOutbound"]

_QUEUED = OutboundState.QUEUED


class Outbound:
    """One message queued for, or inflight to, a session."""

    __slots__ = ("message", "packet_id", "qos", "retain", "seq", "state", "sub_ids")

    def __init__(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.packet_id = 0
        self.state = _QUEUED
        self.seq = 0  # > 0 once recorded in the store


class SharedOutbound(Outbound):
    """An Outbound that came through a shared subscription: it remembers the group, so
    the message can go to another member if this session ends first (5.0 4.8.2)."""

    __slots__ = ("group",)

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        group: SharedGroup,
    ) -> None:
        super().__init__(message, qos, retain, sub_ids)
        self.group = group
