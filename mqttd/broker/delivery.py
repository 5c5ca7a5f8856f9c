"""Routing helpers: what `Broker.publish` did (a few named bits) and delivery plans.

The bits are plain ints on purpose: an `enum.IntFlag` costs about 1 us per ``|`` or ``&`` (measured
on CPython 3.11), as much as the rest of routing a QoS 0 message to one receiver.
A leaf module, so that `Connection` tests the bits by name without importing the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from .subscription import SubOptions

if TYPE_CHECKING:
    from .message import Message
    from .session import Session

__all__ = [
    "MATCHED",
    "NONE",
    "RECORDED",
    "REFUSED",
    "Delivery",
    "Plan",
    "aggregate",
    "build_plan",
]

#: Nothing matched and nothing was recorded.
NONE: Final = 0
#: At least one subscription matched (none: a 5.0 publisher hears 0x10, No matching
#: subscribers, and the message counts as `no_subscribers`).
MATCHED: Final = 1
#: Something was recorded in the store: the publisher's PUBACK/PUBREC waits for the
#: commit (`Store.after_commit`).
RECORDED: Final = 2
#: Refused: larger than the cluster can carry to its other nodes (never MATCHED). The
#: message went nowhere and its publisher was disconnected with 0x95, as one broker
#: does for a packet above its Maximum Packet Size: no acknowledgement follows.
REFUSED: Final = 4


#: A topic's delivery plan: its matches grouped by session, the sessions matched through
#: one subscription apart from those matched through several (3.3.4: one delivery each).
Plan: TypeAlias = tuple[
    tuple[tuple["Session", "SubOptions"], ...],
    tuple[tuple["Session", tuple["SubOptions", ...]], ...],
]


class Delivery:
    """The bits by name, for readers: ``flags & Delivery.RECORDED``."""

    NONE: Final = NONE
    MATCHED: Final = MATCHED
    RECORDED: Final = RECORDED
    REFUSED: Final = REFUSED


def build_plan(matches: Sequence[tuple[Session, SubOptions]]) -> Plan:
    """Group matches by session: single subscriptions apart from overlapping ones."""
    by_session: dict[Session, list[SubOptions]] = {}
    for session, options in matches:
        found = by_session.get(session)
        if found is None:
            by_session[session] = [options]
        else:
            found.append(options)
    singles = tuple((s, opts[0]) for s, opts in by_session.items() if len(opts) == 1)
    multiples = tuple((s, tuple(opts)) for s, opts in by_session.items() if len(opts) > 1)
    return singles, multiples


def aggregate(
    session: Session, all_options: tuple[SubOptions, ...], message: Message
) -> SubOptions | None:
    """One delivery's options for several matching subscriptions of one session (3.3.4):
    the highest QoS, Retain As Published if any asks, every Subscription Identifier;
    None when No Local excludes them all."""
    qos = -1
    retain = False
    sub_ids: tuple[int, ...] = ()
    for options in all_options:
        if options.no_local and session.client_id == message.origin:
            continue
        if options.qos > qos:
            qos = options.qos
        retain = retain or options.retain_as_published
        sub_ids += options.sub_ids
    if qos < 0:
        return None
    return SubOptions.aggregated(qos, retain, sub_ids)
