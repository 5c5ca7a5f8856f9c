"""Rate limits against floods: a token bucket, and one bucket per source address.

Used by the core (free of I/O, time handed in): `TokenBucket` throttles one client's
PUBLISH rate (the connection pauses reading while the bucket is in debt, so excess
messages wait in the kernel's buffers and the client's TCP window, and none is dropped);
`AddressRateLimiter` refuses CONNECTs from an address that connects faster than allowed
(5.0 CONNACK 0x9F Connection rate exceeded).
"""

from __future__ import annotations

import ipaddress

__all__ = ["AddressRateLimiter", "TokenBucket", "address_of", "is_loopback_host"]

# AddressRateLimiter forgets idle addresses once it tracks this many, so a scan from
# many addresses cannot grow it without bound.
_MAX_ADDRESSES = 10_000


class TokenBucket:
    """`rate` tokens a second, at most `burst` banked; `take` may go into debt.

    Going into debt (rather than refusing) is what lets a caller throttle instead of
    drop: the answer is how long to wait until the debt is paid back.
    """

    __slots__ = ("_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self._last = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            tokens = self.tokens + elapsed * self.rate
            self.tokens = tokens if tokens < self.burst else self.burst
            self._last = now

    def take(self, now: float, n: float = 1.0) -> float:
        """Spend `n` tokens; return 0.0, or the seconds until the balance is back to 0."""
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def try_take(self, now: float, n: float = 1.0) -> bool:
        """Spend `n` tokens if the balance allows it; False (nothing spent) otherwise."""
        self._refill(now)
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def full(self, now: float) -> bool:
        """True when the bucket is back to `burst` (nothing to remember about it)."""
        self._refill(now)
        return self.tokens >= self.burst


class AddressRateLimiter:
    """One `TokenBucket` per source address: `allow(address, now)` per new connection."""

    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, address: str, now: float) -> bool:
        """Count one connection from `address`; False when it is over its rate."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= _MAX_ADDRESSES:
                self._forget_idle(now)
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
        return bucket.try_take(now)

    def _forget_idle(self, now: float) -> None:
        self._buckets = {a: b for a, b in self._buckets.items() if not b.full(now)}
        if len(self._buckets) >= _MAX_ADDRESSES:
            # Everyone is busy: forgetting the lot lets a flood through for one burst,
            # which is better than memory that grows with the number of addresses.
            self._buckets.clear()


def address_of(peer: str) -> str:
    """The host part of a "host:port" or "[v6]:port" peer string."""
    host, sep, _ = peer.rpartition(":")
    if not sep:
        return peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback_host(host: str) -> bool:
    """True when a listener bound to `host` is reachable from this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0, ::, a host name: assume the network can reach it
