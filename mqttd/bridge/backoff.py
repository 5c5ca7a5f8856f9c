"""Reconnect delays: exponential backoff with "decorrelated jitter".

Each failed attempt waits ``random(minimum, 3 x previous)``, capped at `maximum`; a
successful connection resets it. Mosquitto's bridges use the same scheme
(`restart_timeout base cap`). The randomness spreads out many bridges that lost the same
remote at the same moment, so they do not all knock on its door in the same second.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays before successive reconnect attempts (see the module docstring)."""

    __slots__ = ("_delay", "_random", "maximum", "minimum")

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"backoff bounds must satisfy 0 < {minimum} <= {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self._random = rng or random.Random()
        self._delay = minimum

    def next(self) -> float:
        """The delay before the next attempt, in seconds."""
        delay = min(self.maximum, self._random.uniform(self.minimum, self._delay * 3))
        self._delay = delay
        return delay

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from `minimum` again."""
        self._delay = self.minimum
