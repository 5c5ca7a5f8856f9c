"""The topic-level node of the subscription tree (topic_tree.py).

A trie over topic levels. Most nodes of a big tree sit on the private tail of one topic
("devices/<id>/cmd") and have a single child, so a node holds a single child itself and
switches to a dict only from the second one: a one-entry dict would cost about 200
bytes of the 500 or so such a node would otherwise take. The retained tree
(retained.py) keeps its children the same way with a node of its own, whose messages'
last levels need no node at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

__all__ = ["LevelNode"]


class LevelNode:
    """One topic level: its name under its parent and its children by level name."""

    __slots__ = ("children", "level")

    def __init__(self, level: str) -> None:
        self.level = level  # the name of this level under its parent
        self.children: dict[str, Self] | Self | None = None

    def child(self, level: str) -> Self | None:
        """The child named `level`, if any."""
        children = self.children
        if children is None:
            return None
        if isinstance(children, dict):
            return children.get(level)
        return children if children.level == level else None

    def child_nodes(self) -> Iterable[Self]:
        """Every child."""
        children = self.children
        if children is None:
            return ()
        if isinstance(children, dict):
            return children.values()
        return (children,)

    def add_child(self, level: str) -> Self:
        """The child named `level`, created (of this node's class) if missing."""
        children = self.children
        if children is None:
            child = self.children = type(self)(level)
        elif isinstance(children, dict):
            found = children.get(level)
            if found is not None:
                return found
            child = children[level] = type(self)(level)
        elif children.level == level:
            return children
        else:
            child = type(self)(level)
            self.children = {children.level: children, level: child}
        return child

    def remove_child(self, level: str) -> None:
        """Drop the child named `level`; a dict left with one child collapses."""
        children = self.children
        if isinstance(children, dict):
            del children[level]
            if len(children) == 1:
                (self.children,) = children.values()
        else:
            self.children = None
