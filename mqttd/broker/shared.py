"""Shared subscriptions "$share/{name}/{filter}" (5.0 4.8.2, offered to 3.1.1 clients too).

Theory of operation. The members subscribing with one share name and filter form a
`SharedGroup`; the groups sit in a topic tree of their own (`SharedSubscriptions`), so a
PUBLISH matches groups, not members. Each message goes to one member of each matching
group, round robin, preferring members that are online. A member the ACL does not let
read the topic is skipped for that message (the group does not try another one).

Shared subscriptions get no retained messages when they are made. When a member's
session ends, what it left undelivered goes to other members: QoS 1 messages it did not
acknowledge SHOULD, and queued ones were never sent; QoS 2 ones MUST NOT, and stay with
the ended session (`undelivered_shared` leaves them out).

In a cluster the backplane picks the node, then `deliver_to_group` one member here. A
backplane that redelivers what is not acknowledged (the NATS one, for QoS 1/2) passes
a `SharedDelivery` that rides on the member's entry, moves with it to another member
(`hand_over`), and hears the member's PUBACK (or PUBREC) as `delivered`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from .delivery import MATCHED, NONE, RECORDED
from .outbound import SharedDelivery, SharedOutbound
from .subscription import SubOptions
from .topic_tree import TopicTree

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from .backplane import Backplane
    from .message import Message
    from .session import Session

__all__ = [
    "HELD",
    "NO_MEMBER",
    "SETTLED",
    "STORED",
    "SharedGroup",
    "SharedSubscriptions",
    "undelivered_shared",
]

#: What `SharedSubscriptions.deliver_to_group` did with a message the cluster chose
#: this node for (its caller acknowledges the message to the cluster accordingly).
NO_MEMBER, SETTLED, STORED, HELD = 0, 1, 2, 3

logger = logging.getLogger("mqttd.broker")


class SharedGroup:
    """The members of one shared subscription "$share/{name}/{filter}" (5.0 4.8.2).

    Each message goes to one member, round robin, preferring members that are online.
    """

    __slots__ = ("_members", "_next", "members", "name", "topic_filter")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.members: dict[Session, SubOptions] = {}
        self._members: list[tuple[Session, SubOptions]] = []
        self._next = 0

    def __repr__(self) -> str:
        return f"<SharedGroup $share/{self.name}/{self.topic_filter} members={len(self.members)}>"

    def add(self, session: Session, options: SubOptions) -> bool:
        """Add or update a member; True if it is new."""
        is_new = session not in self.members
        self.members[session] = options
        self._members = list(self.members.items())
        return is_new

    def remove(self, session: Session) -> bool:
        """Remove a member; True if it was one."""
        if self.members.pop(session, None) is None:
            return False
        self._members = list(self.members.items())
        return True

    def pick(self) -> tuple[Session, SubOptions] | None:
        """The member for the next message: the next online one, else the next one."""
        members = self._members
        n = len(members)
        if not n:
            return None
        start = self._next % n
        for i in range(n):
            member = members[(start + i) % n]
            if member[0].writable:
                self._next = start + i + 1
                return member
        self._next = start + 1
        return members[start]


class SharedSubscriptions:
    """Every shared-subscription group of a broker, and their deliveries."""

    __slots__ = ("_tree", "backplane", "groups")

    def __init__(self) -> None:
        #: The other nodes of a cluster (backplane.py): told when this node gets its
        #: first member of a group or loses its last, and then picks the node per message.
        self.backplane: Backplane | None = None
        #: The groups by (share name, topic filter). Empty in most brokers: the hot path
        #: tests this dict (not a method: a call per PUBLISH) and skips everything here.
        self.groups: dict[tuple[str, str], SharedGroup] = {}
        self._tree: TopicTree[SharedGroup, SharedGroup] = TopicTree()

    def subscribe(
        self, session: Session, share: str, topic_filter: str, options: SubOptions
    ) -> bool:
        """Make `session` a member of "$share/{share}/{topic_filter}"; True if it is new."""
        if options.no_local:
            # No Local has no meaning here (5.0 forbids it, [MQTT-3.8.3-4]); the one a 3.x
            # bridge gets forced is ignored, so `Session.offer` never skips a member for it.
            options = SubOptions(
                options.qos,
                False,
                options.retain_as_published,
                options.retain_handling,
                options.subscription_identifier,
            )
        key = (share, topic_filter)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = SharedGroup(share, topic_filter)
            self._tree.subscribe(topic_filter, group, group)
            if self.backplane is not None:
                self.backplane.share_added(share, topic_filter)
        return group.add(session, options)

    def unsubscribe(self, session: Session, share: str, topic_filter: str) -> None:
        """Take `session` out of the group; a group left empty goes."""
        key = (share, topic_filter)
        group = self.groups.get(key)
        if group is not None and group.remove(session) and not group.members:
            del self.groups[key]
            self._tree.unsubscribe(topic_filter, group)
            if self.backplane is not None:
                self.backplane.share_removed(share, topic_filter)

    def publish(self, message: Message, authorise: Authorise | None) -> int:
        """Give `message` to one member of each matching group; `Delivery` bits."""
        flags = NONE
        topic = message.topic
        for group, _ in self._tree.match(topic):
            member = group.pick()
            if member is None:
                continue
            flags |= MATCHED
            session, options = member
            # An ACL refusal skips this turn's member: the group does not try another.
            if session.offer(message, options, authorise, group):
                flags |= RECORDED
        return flags

    def deliver_to_group(
        self,
        message: Message,
        share: str,
        topic_filter: str,
        authorise: Authorise | None,
        held: SharedDelivery | None = None,
    ) -> int:
        """The cluster chose this node's members of "$share/{share}/{topic_filter}" for
        `message`: give it to one of them (as `publish` does for one group).

        `held`: the cluster's hold on the message, attached to a QoS 1/2 entry of a
        member whose session ends with its connection (`SharedDelivery`). Returns what
        became of the message: NO_MEMBER (none here any more: the cluster gives it to
        another node), SETTLED (sent at QoS 0, or refused by the ACL: nothing more to
        wait for), STORED (recorded for a persistent member: its session keeps it once
        the store committed) or HELD (`held` hears when the member acknowledged it).
        """
        group = self.groups.get((share, topic_filter))
        member = group.pick() if group is not None else None
        if group is None or member is None:
            return NO_MEMBER  # the group's last member here left while it was on its way
        session, options = member
        # `Session.offer`'s rules, with the hold passed on (offer is the hot path's).
        if authorise is not None and not authorise(
            session.client_id, session.username, "read", message.topic
        ):
            return SETTLED
        qos = session.outgoing_qos(options.qos, message)
        retain = message.retain and options.retain_as_published
        if not qos:
            session.deliver(message, 0, retain, options.sub_ids)
            return SETTLED
        persistent = session.persistent
        recorded = session.deliver_shared(
            message, qos, retain, options.sub_ids, group, None if persistent else held
        )
        if persistent:
            return STORED if recorded else SETTLED
        return HELD if held is not None else SETTLED

    def hand_over(
        self, ended: Session, entries: list[SharedOutbound], authorise: Authorise | None
    ) -> None:
        """Give what a shared-subscription member left undelivered to other members.

        5.0 4.8.2: when a member's session ends, a QoS 1 message it did not acknowledge
        SHOULD go to another member (QoS 2 ones MUST NOT: `undelivered_shared`
        leaves them out). Messages queued for it were never sent, so they go too. The
        ended session is out of every group by now, so `pick` cannot choose it.
        """
        kept: set[int] = set()  # entries nobody took: they end with the session
        for entry in entries:
            group = entry.group
            member = group.pick()
            if member is None:
                kept.add(id(entry))  # nobody is left in the group
                continue
            session, options = member
            message = entry.message
            if authorise is not None and not authorise(
                session.client_id, session.username, "read", message.topic
            ):
                kept.add(id(entry))  # as in publish(): this turn's member may not read it
                continue
            qos = session.outgoing_qos(options.qos, message)
            retain = message.retain and options.retain_as_published
            # A cluster's hold on the message goes with it to the new member.
            held = entry.ack if isinstance(entry.ack, SharedDelivery) else None
            entry.ack = None
            session.deliver_shared(message, qos, retain, options.sub_ids, group, held)
            if held is not None and not qos:
                held.delivered()  # sent at QoS 0: nothing more to wait for
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "session %r ended: %d shared-subscription messages offered to other members",
                ended.client_id,
                len(entries),
            )
        # Handed over: no longer the ended session's to count or dead-letter.
        taken = {id(entry) for entry in entries} - kept
        ended.queue = deque(e for e in ended.queue if id(e) not in taken)
        for pid in [pid for pid, e in ended.inflight.items() if id(e) in taken]:
            del ended.inflight[pid]


def undelivered_shared(session: Session) -> list[SharedOutbound]:
    """The shared-subscription messages another member may still get (session ending).

    5.0 4.8.2: a QoS 1 message sent but not acknowledged SHOULD go to another member
    when the session ends; a QoS 2 one MUST NOT [MQTT-4.8.2-5]; a queued message
    was never sent, so it may go to another member whatever its QoS. Oldest first.
    """
    taken: list[SharedOutbound] = [
        entry
        for entry in session.inflight.values()
        if type(entry) is SharedOutbound and entry.qos == 1
    ]
    if session.queue_length:
        taken.extend(entry for entry in session.queue if type(entry) is SharedOutbound)
    return taken
