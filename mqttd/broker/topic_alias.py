"""Topic aliases the server gives a 5.0 client (5.0 3.3.2.3.4), least recently used first.

Policy. Aliases go only to a 5.0 client whose CONNECT set a Topic Alias Maximum above
0, and never above it [MQTT-3.3.2-8]; `server_topic_aliases = false` turns them off.
The first PUBLISH on a topic carries the topic and a new alias; later ones carry an
empty topic and the alias. When all of the client's aliases are taken, the least
recently used one goes to the new topic, sent with the topic again (a sender may map
an alias to another topic at any time, 3.3.2.3.4). Topics of 3 characters or fewer are
never aliased: the Topic Alias property itself costs 3 bytes. Mappings last one network
connection [MQTT-3.3.2-7]: each connection starts with none.

An alias is only known to the client once the PUBLISH that set it went out, so a
delivery that is dropped after encoding (too large for the client) hands its new alias
back with `forget`.
"""

from __future__ import annotations

__all__ = ["TopicAliases"]

_MIN_TOPIC = 4


class TopicAliases:
    """One connection's server-to-client topic aliases: topic -> alias, in LRU order."""

    __slots__ = ("_aliases", "_free", "_next", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        # Insertion order is recency: a hit moves its topic to the end, the first key
        # is the least recently used.
        self._aliases: dict[str, int] = {}
        self._next = 1  # aliases above this were never handed out
        self._free: list[int] = []  # handed back by forget()

    def __len__(self) -> int:
        return len(self._aliases)

    def assign(self, topic: str) -> tuple[int, bool]:
        """The alias for a PUBLISH on `topic`: (alias, the client already knows it).

        Alias 0 means "send the topic, no alias".
        """
        if len(topic) < _MIN_TOPIC:
            return 0, False
        aliases = self._aliases
        alias = aliases.pop(topic, 0)
        if alias:
            aliases[topic] = alias
            return alias, True
        if self._free:
            alias = self._free.pop()
        elif self._next <= self.maximum:
            alias = self._next
            self._next += 1
        else:
            alias = aliases.pop(next(iter(aliases)))
        aliases[topic] = alias
        return alias, False

    def forget(self, topic: str) -> None:
        """Take back the alias just assigned to `topic` (its PUBLISH was not sent)."""
        alias = self._aliases.pop(topic, 0)
        if alias:
            self._free.append(alias)
