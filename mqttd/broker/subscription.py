"""A subscription: whether a SUBSCRIBE may have it, and the options it is granted.

`refusal` is the SUBSCRIBE policy, one filter at a time: the reason code a filter is
refused with (3.9.3), or None. `SubOptions` is a granted subscription's QoS and 5.0
Subscription Options (3.8.3.1): the value the subscription tree keeps per (topic
filter, session), and what the store records for a persistent session.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from ..protocol.errors import TopicFilterInvalid
from ..protocol.reason_codes import ReasonCode
from ..protocol.topics import parse_shared_subscription, validate_topic_filter
from ..store.base import StoredSubscription

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from .session import Session
    from .settings import BrokerSettings

__all__ = ["SubOptions", "refusal"]


def refusal(
    settings: BrokerSettings,
    authorise: Authorise | None,
    session: Session,
    topic_filter: str,
    has_subscription_id: bool,
    adding: Collection[str] = (),
) -> int | None:
    """The 5.0 SUBACK reason code `topic_filter` is refused with, or None if granted.

    In this order: a malformed filter or one over `max_topic_length` /
    `max_topic_levels` (0x8F), a feature this broker does not offer (shared 0x9E,
    wildcards 0xA2, subscription identifiers 0xA1), the ACL (0x87), and
    `max_subscriptions_per_client` (0x97; a filter the session has already is a
    replacement, never over the quota). 3.x clients get 0x80 for any of them.
    `adding`: the filters new to the session that the same SUBSCRIBE granted before
    this one (not in `session.subscriptions` yet), counted in the quota.
    """
    share, inner = parse_shared_subscription(topic_filter)
    try:
        if share is None:
            validate_topic_filter(topic_filter)
        if len(inner) > settings.max_topic_length:
            raise TopicFilterInvalid("topic filter longer than max_topic_length")
        if settings.max_topic_levels and inner.count("/") >= settings.max_topic_levels:
            raise TopicFilterInvalid("topic filter deeper than max_topic_levels")
    except TopicFilterInvalid:
        return ReasonCode.TOPIC_FILTER_INVALID
    if share is not None and not settings.shared_subscription_available:
        return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
    if not settings.wildcard_subscription_available and ("+" in inner or "#" in inner):
        return ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
    if has_subscription_id and not settings.subscription_identifier_available:
        return ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
    if authorise is not None and not authorise(
        session.client_id, session.username, "subscribe", inner
    ):
        return ReasonCode.NOT_AUTHORIZED
    limit = settings.max_subscriptions_per_client
    subscriptions = session.subscriptions
    if (
        limit
        and topic_filter not in subscriptions
        and topic_filter not in adding
        and len(subscriptions) + len(adding) >= limit
    ):
        return ReasonCode.QUOTA_EXCEEDED
    return None


class SubOptions:
    """A granted subscription: QoS and the 5.0 options of 3.8.3.1, subscription id."""

    __slots__ = (
        "no_local",
        "qos",
        "retain_as_published",
        "retain_handling",
        "sub_ids",
        "subscription_identifier",
    )

    def __init__(
        self,
        qos: int,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_identifier: int | None = None,
    ) -> None:
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.subscription_identifier = subscription_identifier
        #: What a delivery through this subscription carries (3.3.4).
        self.sub_ids: tuple[int, ...] = (
            () if subscription_identifier is None else (subscription_identifier,)
        )

    @classmethod
    def aggregated(
        cls, qos: int, retain_as_published: bool, sub_ids: tuple[int, ...]
    ) -> SubOptions:
        """One delivery's options for several matching subscriptions of a session (3.3.4)."""
        options = cls(qos, False, retain_as_published)
        options.sub_ids = sub_ids
        return options

    def __repr__(self) -> str:
        return (
            f"SubOptions(qos={self.qos}, no_local={self.no_local}, "
            f"rap={self.retain_as_published}, rh={self.retain_handling}, "
            f"id={self.subscription_identifier})"
        )

    def to_stored(self, topic_filter: str) -> StoredSubscription:
        """The store's record of this subscription on `topic_filter`."""
        return StoredSubscription(
            topic_filter,
            self.qos,
            self.no_local,
            self.retain_as_published,
            self.retain_handling,
            self.subscription_identifier,
        )
