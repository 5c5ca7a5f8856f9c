"""Which messages from other nodes this node has routed already (sans-IO).

A message between nodes has the id (boot, seq): its sending process's random
incarnation and that process's message counter (envelope.py). A node must route each
id once: overlapping NATS subscriptions (`a/#` and `a/+`) bring two copies, and a
catch-up after a broken NATS link (catchup.py) replays from the messages stream what
came over core NATS too.

`SeenIds` keeps, per sending process, one bit per seq in a ring of `SPAN` bits (1 MiB):
the last 8,388,608 seqs that process numbered, whether they came here or not (a node
only gets the topics it subscribed to; the others are gaps). That is about 80 s of a
node publishing 100,000 messages per second, far longer than any catch-up. A seq older
than the window counts as seen (a catch-up never reaches that far back; a copy of a
message that old is dropped rather than delivered twice). At most `MAX_SENDERS`
processes are remembered; the one heard from least recently goes first (a node
restarted has a new boot, and its old one stops).
"""

from __future__ import annotations

__all__ = ["MAX_SENDERS", "SPAN", "SeenIds"]

#: Seqs remembered per sending process (bits; a multiple of 8).
SPAN = 1 << 23
#: Sending processes remembered at most (1 MiB each).
MAX_SENDERS = 16

_BYTES = SPAN >> 3
_MASK = _BYTES - 1
_ZEROS = memoryview(bytes(_BYTES))


class _Window:
    """The ring of one sending process: bit `seq % SPAN` is set once `seq` was routed."""

    __slots__ = ("bits", "high")

    def __init__(self) -> None:
        self.bits = bytearray(_BYTES)
        #: The highest seq marked. The bits of seqs above it (up to a window later) are
        #: clear: a byte is cleared when the window moves onto it.
        self.high = 0

    def first(self, seq: int) -> bool:
        high = self.high
        if seq > high:
            last, new = high >> 3, seq >> 3
            if new != last:
                self._clear(last + 1, new)
            self.high = seq
        elif high - seq >= SPAN:
            return False  # older than the window: never routed twice
        bits = self.bits
        i = (seq >> 3) & _MASK
        bit = 1 << (seq & 7)
        byte = bits[i]
        if byte & bit:
            return False
        bits[i] = byte | bit
        return True

    def _clear(self, start: int, end: int) -> None:
        # Bytes start..end (absolute, inclusive) enter the window: forget what their
        # ring slots held a window ago.
        count = end - start + 1
        if count >= _BYTES:
            self.bits[:] = _ZEROS
            return
        i = start & _MASK
        j = i + count
        if j <= _BYTES:
            self.bits[i:j] = _ZEROS[:count]
        else:
            self.bits[i:] = _ZEROS[: _BYTES - i]
            self.bits[: j - _BYTES] = _ZEROS[: j - _BYTES]


class SeenIds:
    """The ids (boot, seq) routed here lately (see the module docstring)."""

    __slots__ = ("_last", "_last_boot", "_windows")

    def __init__(self) -> None:
        self._windows: dict[int, _Window] = {}
        # The sender of the previous call: traffic comes in runs from one node.
        self._last_boot = -1
        self._last = _Window.__new__(_Window)  # a placeholder until the first sender

    def first(self, boot: int, seq: int) -> bool:
        """True the first time (boot, seq) is asked about (and it is marked seen)."""
        window = self._last if boot == self._last_boot else self._window(boot)
        # Inlined `_Window.first` for its common case (on every routed message).
        high = window.high
        if seq > high:
            if (seq ^ high) >> 3:
                return window.first(seq)  # onto a new byte: clear it first
            window.high = seq
        elif high - seq >= SPAN:
            return False  # older than the window: never routed twice
        bits = window.bits
        i = (seq >> 3) & _MASK
        bit = 1 << (seq & 7)
        byte = bits[i]
        if byte & bit:
            return False
        bits[i] = byte | bit
        return True

    def _window(self, boot: int) -> _Window:
        windows = self._windows
        window = windows.pop(boot, None)
        if window is None:
            window = _Window()
            if len(windows) >= MAX_SENDERS:
                del windows[next(iter(windows))]
        windows[boot] = window  # most recently heard from last
        self._last_boot, self._last = boot, window
        return window

    def __len__(self) -> int:
        """The sending processes remembered."""
        return len(self._windows)
