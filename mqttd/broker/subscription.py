"""A granted subscription's options: QoS and the 5.0 Subscription Options (3.8.3.1).

The value the subscription tree keeps per (topic filter, session), and what the store
records for a persistent session's subscription.
"""

from __future__ import annotations

from ..store.base import StoredSubscription

__all__ = ["SubOptions"]


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
