"""A Sink that keeps what the core writes in memory: the core driven without a socket.

Shipped in the package on purpose, like `FakeClock`: whoever drives the sans-IO core
by hand (mqttd's tests, `scripts/profile_core.py`, a plugin author's tests) needs the
same in-memory end of a connection, and one copy of it serves them all.
"""

from __future__ import annotations

__all__ = ["MemorySink"]


class MemorySink:
    """Collects the bytes a Connection writes; records close and read pauses.

    `buffer` holds everything written, in order; `take()` returns what came since the
    previous `take()`. Writes after `close()` are dropped and counted, since a closed
    transport would drop them too and a test may want to see that none were attempted.
    """

    # No __slots__: tests wrap single methods (write, pause_reading) to watch the calls.

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self.reading = True
        self.writes_after_close = 0
        self._taken = 0

    def write(self, data: bytes) -> None:
        """Append `data`, unless the sink was closed."""
        if self.closed:
            self.writes_after_close += 1
            return
        self.buffer += data

    def close(self) -> None:
        """Mark the sink closed (idempotent)."""
        self.closed = True

    def pause_reading(self) -> None:
        """The core stops reading this peer (back-pressure)."""
        self.reading = False

    def resume_reading(self) -> None:
        """The core reads this peer again."""
        self.reading = True

    def take(self) -> bytes:
        """The bytes written since the previous `take()`."""
        data = bytes(self.buffer[self._taken :])
        self._taken = len(self.buffer)
        return data
