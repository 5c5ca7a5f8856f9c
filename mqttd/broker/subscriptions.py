"""The node's subscriptions: what SUBSCRIBE and UNSUBSCRIBE change, and where.

Theory of operation. A subscription lives in three places at once: the session's own
table (`Session.subscriptions`, filter -> `SubOptions`), the broker's subscription tree
(or, for "$share/{name}/{filter}", a shared group of shared.py) and, for a persistent
session, the store. `Subscriptions` keeps the three in step, and tells the cluster
(backplane.py) when a filter gets its first subscription on this node or loses its last.
Whether one filter may be subscribed at all is subscription.py's `refusal`.

A SUBSCRIBE goes in three steps: `check` (the SUBACK codes; nothing changes),
`announce` (the cluster hears of the filters new to the session, so that a node can
wait until its NATS interest is in place before the SUBACK: subscribe.py) and `apply`
(the subscriptions take effect, with the SUBACK). On one node the three run at once
(`subscribe`); a SUBSCRIBE whose connection ends in between is `withdraw`n.

The tree and the delivery-plan cache are the ones `Broker.publish` reads (it holds the
same objects, so routing pays no call here). A plan holds sessions, so a change drops
the plans it can alter, with the topic tree's rule: the one topic of an exact filter,
every plan for a wildcard filter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..protocol.errors import TopicFilterInvalid
from ..protocol.reason_codes import SUBACK_FAILURE, ReasonCode
from ..protocol.topics import parse_shared_subscription, validate_topic_filter
from .inflight import EMPTY
from .retained_feed import drop_feed
from .subscription import SubOptions, refusal
from .topic_tree import Places, TopicTree

if TYPE_CHECKING:
    from ..auth.hooks import Authorise
    from ..protocol.packets import Subscribe
    from ..store.base import Store
    from .backplane import Backplane
    from .delivery import Plan
    from .session import Session
    from .settings import BrokerSettings
    from .shared import SharedSubscriptions

__all__ = ["Granted", "Subscriptions"]

#: A subscription a SUBSCRIBE may have: (filter, share name or None, filter without
#: "$share/{share}/", options).
Granted = tuple[str, "str | None", str, SubOptions]


class Subscriptions:
    """Every subscription of this node's sessions (see the module docstring)."""

    __slots__ = ("_settings", "_shared", "backplane", "plans", "store", "tree")

    def __init__(self, settings: BrokerSettings, store: Store, shared: SharedSubscriptions) -> None:
        self._settings = settings
        self._shared = shared
        #: Where persistent sessions' subscriptions are recorded (the cluster may wrap it).
        self.store = store
        #: The other nodes of a cluster, told of each filter's first and last subscription.
        self.backplane: Backplane | None = None
        #: Keys are sessions, values their options (`Broker.publish` matches on it).
        self.tree: TopicTree[Session, SubOptions] = TopicTree()
        #: Delivery plans by topic, with the match they were built from (`Broker.publish`).
        self.plans: dict[str, tuple[Sequence[tuple[Session, SubOptions]], Plan]] = {}

    def subscribe(
        self, session: Session, packet: Subscribe, authorise: Authorise | None
    ) -> tuple[list[int], list[tuple[str, SubOptions]]]:
        """Apply a SUBSCRIBE at once; return its SUBACK codes and the (filter, options)
        whose retained messages go out after the SUBACK (Retain Handling, 3.8.3.1)."""
        codes, granted = self.check(session, packet, authorise)
        return codes, self.apply(session, granted, self.announce(session, granted))

    def check(
        self, session: Session, packet: Subscribe, authorise: Authorise | None
    ) -> tuple[list[int], list[Granted]]:
        """A SUBSCRIBE's SUBACK codes and what it grants, changing nothing yet."""
        settings = self._settings
        v5 = session.protocol_level == 5
        props = packet.properties
        sub_id = (
            props.subscription_identifier[0] if props and props.subscription_identifier else None
        )
        codes: list[int] = []
        granted: list[Granted] = []
        adding: set[str] = set()  # granted here, new to the session: the quota counts them
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            share, inner = parse_shared_subscription(topic_filter)
            refused = refusal(
                settings, authorise, session, topic_filter, sub_id is not None, adding
            )
            if refused is not None:
                codes.append(refused if v5 else SUBACK_FAILURE)
                continue
            qos = min(sub.qos, settings.maximum_qos)
            options = SubOptions(
                qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id
            )
            granted.append((topic_filter, share, inner, options))
            if topic_filter not in session.subscriptions:
                adding.add(topic_filter)
            codes.append(qos)
        return codes, granted

    def announce(self, session: Session, granted: list[Granted]) -> list[str]:
        """Tell the cluster of the granted filters that are new to `session` (`$share`
        ones aside: their groups are told in `apply`), before they apply: the node's
        NATS interest can then be in place by the SUBACK. Returns them ([] on a single
        node); `apply` or `withdraw` must follow."""
        backplane = self.backplane
        if backplane is None:
            return []
        announced: list[str] = []
        for topic_filter, share, _, _ in granted:
            if (
                share is None
                and topic_filter not in session.subscriptions
                and topic_filter not in announced
            ):
                backplane.interest_added(topic_filter)
                announced.append(topic_filter)
        return announced

    def withdraw(self, announced: list[str]) -> None:
        """Take back what `announce` told the cluster, for a SUBSCRIBE never applied."""
        backplane = self.backplane
        if backplane is not None:
            for topic_filter in announced:
                backplane.interest_removed(topic_filter)

    def apply(
        self, session: Session, granted: list[Granted], announced: list[str]
    ) -> list[tuple[str, SubOptions]]:
        """Put what `check` granted in place (the cluster was told of `announced`
        already); return the (filter, options) whose retained messages follow."""
        backplane = self.backplane
        retained: list[tuple[str, SubOptions]] = []
        for topic_filter, share, inner, options in granted:
            if share is not None:
                is_new = self._shared.subscribe(session, share, inner, options)
            else:
                is_new = self.tree.subscribe(topic_filter, session, options)
                self._drop_plans(topic_filter)
                if is_new and backplane is not None and topic_filter not in announced:
                    backplane.interest_added(topic_filter)
            if session.subscriptions is EMPTY:
                session.subscriptions = {}
            session.subscriptions[topic_filter] = options
            if session.persistent:
                self.store.add_subscription(session.client_id, options.to_stored(topic_filter))
            # Shared subscriptions get no retained messages (5.0 4.8.2).
            handling = options.retain_handling
            if share is None and (handling == 0 or (handling == 1 and is_new)):
                retained.append((topic_filter, options))
        return retained

    def unsubscribe(self, session: Session, topic_filters: list[str]) -> list[int]:
        """Apply an UNSUBSCRIBE; return the 5.0 UNSUBACK reason codes (3.11.3)."""
        codes: list[int] = []
        for topic_filter in topic_filters:
            try:
                share, _ = parse_shared_subscription(topic_filter)
                if share is None:
                    validate_topic_filter(topic_filter)
            except TopicFilterInvalid:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            if session.subscriptions.pop(topic_filter, None) is None:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            self.remove(session, topic_filter)
            if session.persistent:
                self.store.remove_subscription(session.client_id, topic_filter)
            codes.append(ReasonCode.SUCCESS)
        return codes

    def restore(
        self,
        session: Session,
        topic_filter: str,
        options: SubOptions,
        places: Places[Session, SubOptions] | None = None,
    ) -> None:
        """Put a restored session's subscription into the trees (recovery.py); the store
        has it already. A plan it alters is rebuilt by `publish`'s identity check.
        `places`: `TopicTree.subscribe`'s memo, for many sessions restored at once."""
        share, inner = parse_shared_subscription(topic_filter)
        if share is not None:
            self._shared.subscribe(session, share, inner, options)
        elif (
            self.tree.subscribe(topic_filter, session, options, places)
            and self.backplane is not None
        ):
            self.backplane.interest_added(topic_filter)

    def restoring(self) -> Callable[[Session, str, SubOptions], None]:
        """`restore` for many sessions at once (start-up), with one `places` memo: each
        distinct filter walks the subscription tree once. Valid while nothing is
        unsubscribed; let it go after."""
        places: Places[Session, SubOptions] = {}
        restore = self.restore

        def subscribe(session: Session, topic_filter: str, options: SubOptions) -> None:
            restore(session, topic_filter, options, places)

        return subscribe

    def remove(self, session: Session, topic_filter: str) -> None:
        """Take the session's subscription on `topic_filter` out of the trees."""
        share, inner = parse_shared_subscription(topic_filter)
        if share is None:
            drop_feed(session, topic_filter)
            if self.tree.unsubscribe(topic_filter, session) and self.backplane is not None:
                self.backplane.interest_removed(topic_filter)
            self._drop_plans(topic_filter)
        else:
            self._shared.unsubscribe(session, share, inner)

    def _drop_plans(self, topic_filter: str) -> None:
        # The topic tree's rule (topic_tree.py): an exact filter can alter the plan of one
        # topic, itself; a wildcard filter any plan. A stale plan would still be caught by
        # the identity check in `publish`, but would keep an ended session alive.
        if "+" in topic_filter or "#" in topic_filter:
            self.plans.clear()
        else:
            self.plans.pop(topic_filter, None)
