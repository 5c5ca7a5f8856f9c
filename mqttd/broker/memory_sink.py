"""A Sink that keeps what the core writes in memory: the core driven without a socket.

Shipped in the package on purpose, like `FakeClock`: whoever drives the sans-IO core
by hand (mqttd's tests, `scripts/profile_core.py`, a plugin author's tests) needs the
same in-memory end of a connection, and one copy of it serves them all.
"""

from __future__ import annotations

__all__ = ["MemorySink"]


class MemorySink:
    """Collects the bytes a Connection writes; records close and read pauses.

    `write` only appends to a list, as the TCP shell's sink does, so a profile of the
    core (`scripts/profile_core.py`) is not a profile of this class. `buffer` is
    everything written, in order; `take()` is what came since the previous `take()`.
    Writes after `close()` are dropped and counted: a closed transport would drop them
    too, and a test may want to see that none were attempted.
    """

    # No __slots__: tests wrap single methods (write, pause_reading) to watch the calls.

    def __init__(self) -> None:
        self.closed = False
        self.reading = True
        self.writes_after_close = 0
        self._chunks: list[bytes] = []  # written since the last look
        self._written = bytearray()  # everything before that
        self._taken = 0  # how much of `_written` take() has returned

    def write(self, data: bytes) -> None:
        """Keep `data`, unless the sink was closed."""
        if self.closed:
            self.writes_after_close += 1
            return
        self._chunks.append(data)

    def close(self) -> None:
        """Mark the sink closed (idempotent)."""
        self.closed = True

    def pause_reading(self) -> None:
        """The core stops reading this peer (back-pressure)."""
        self.reading = False

    def resume_reading(self) -> None:
        """The core reads this peer again."""
        self.reading = True

    @property
    def buffer(self) -> bytes:
        """Every byte written so far."""
        self._settle()
        return bytes(self._written)

    def take(self) -> bytes:
        """The bytes written since the previous `take()`."""
        self._settle()
        data = bytes(self._written[self._taken :])
        self._taken = len(self._written)
        return data

    def _settle(self) -> None:
        if self._chunks:
            self._written += b"".join(self._chunks)
            self._chunks.clear()
