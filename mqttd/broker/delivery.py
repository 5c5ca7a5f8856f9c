"""One delivery to one receiver, and what `Broker.publish` did: a few named bits.

Plain ints on purpose: an `enum.IntFlag` costs about 1 us per ``|`` or ``&`` (measured
on CPython 3.11), as much as the rest of routing a QoS 0 message to one receiver.
A leaf module, so that `Connection` tests the bits by name without importing the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from .message import Message
    from .session import Session, SubOptions
    from .shared import SharedGroup

__all__ = ["MATCHED", "NONE", "RECORDED", "Delivery", "deliver_to"]

#: Nothing matched and nothing was recorded.
NONE: Final = 0
#: At least one subscription matched (none: a 5.0 publisher hears 0x10, No matching
#: subscribers, and the message counts as `no_subscribers`).
MATCHED: Final = 1
#: Something was recorded in the store: the publisher's PUBACK/PUBREC waits for the
#: commit (`Store.after_commit`).
RECORDED: Final = 2


class Delivery:
    """The bits by name, for readers: ``flags & Delivery.RECORDED``."""

    NONE: Final = NONE
    MATCHED: Final = MATCHED
    RECORDED: Final = RECORDED


def deliver_to(
    session: Session,
    options: SubOptions,
    message: Message,
    authorise: Authorise | None,
    group: SharedGroup | None = None,
) -> bool:
    """One receiver's delivery of `message` through one subscription; True if recorded.

    The rules every delivery follows: a 5.0 No Local subscription does not get its own
    client's messages [MQTT-3.8.3-3]; the ACL's read right (None = no ACL); the QoS is
    min(published, granted) [MQTT-3.8.4-8]; the retain flag is 0 [MQTT-3.3.1-9] unless
    the subscription asked for Retain As Published. `group` is the shared subscription
    the receiver is a member of.
    """
    if options.no_local and session.client_id == message.origin:
        return False
    if authorise is not None and not authorise(
        session.client_id, session.username, "read", message.topic
    ):
        return False
    qos = options.qos
    mqos = message.qos
    if mqos < qos:
        qos = mqos
    if group is None:
        return session.deliver(
            message, qos, message.retain and options.retain_as_published, options.sub_ids
        )
    return session.deliver_shared(
        message, qos, message.retain and options.retain_as_published, options.sub_ids, group
    )
