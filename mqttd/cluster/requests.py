"""A node's JetStream requests: concurrent across keys, in order within one key.

Theory of operation (docs/cluster.md, "How it is built"). Client-id claims and releases,
will entries and retained writes each take one or more round trips to JetStream. Made
one at a time, a connection storm (a fleet reconnecting to a node after an outage) got
one CONNACK per round trip at most, and a takeover waiting for a slow old node held up
every CONNECT behind it. Here each request names a *key* (its client id, or its
retained topic):

- requests with the same key run one after the other, in the order they were
  submitted: a client id's claim, release and will entry keep the order the fencing
  (KV revision, claim tokens), the takeover and the exactly-once wills rely on, and a
  retained topic's last write is the one that stays;
- requests with different keys run at the same time, at most `limit` of them (the
  others wait their turn, oldest key first).

No task per request: up to `limit` workers, started when requests wait and ending when
none is left, each taking the next key whose turn it is. A key that has more requests
goes to the back of the line after each one, so one busy client id cannot starve the
others. Nothing runs before `start` (the buckets are opened there); `close` cancels
what is running and drops what waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["MAX_IN_FLIGHT", "KeyedRequests"]

logger = logging.getLogger("mqttd.cluster")

#: Requests in flight at most per node: enough to keep NATS busy through a storm of
#: CONNECTs, few enough that a slow JetStream is not flooded (and each holds a claim's
#: few kilobytes at most).
MAX_IN_FLIGHT = 64

Request = Callable[[], Awaitable[None]]


class KeyedRequests:
    """Run requests concurrently across keys and in submission order within a key."""

    __slots__ = (
        "_chains",
        "_closed",
        "_limit",
        "_ready",
        "_started",
        "_workers",
        "max_running",
        "running",
    )

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        #: Per key, its requests not finished yet; the first one is running or next.
        self._chains: dict[str, deque[Request]] = {}
        #: Keys whose first request waits for a worker, in turn order.
        self._ready: deque[str] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        #: Requests running now, and the most that ran at once.
        self.running = 0
        self.max_running = 0

    @property
    def busy(self) -> bool:
        """True while a request runs or waits."""
        return bool(self._chains)

    @property
    def waiting(self) -> int:
        """Requests submitted and not finished."""
        return sum(len(chain) for chain in self._chains.values())

    def submit(self, key: str, request: Request) -> None:
        """Run `request` after every request submitted before with the same `key`."""
        if self._closed:
            return
        chain = self._chains.get(key)
        if chain is not None:
            chain.append(request)  # its turn comes when the ones before it are done
            return
        self._chains[key] = deque((request,))
        self._ready.append(key)
        self._spawn()

    def start(self) -> None:
        """Start running requests (those submitted before wait until now)."""
        self._started = True
        for _ in range(min(len(self._ready), self._limit)):
            self._spawn()

    def _spawn(self) -> None:
        if self._started and not self._closed and len(self._workers) < self._limit:
            task = asyncio.get_running_loop().create_task(self._work(), name="mqttd-cluster-js")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        ready, chains = self._ready, self._chains
        while ready:
            key = ready.popleft()
            chain = chains[key]
            self.running += 1
            if self.running > self.max_running:
                self.max_running = self.running
            try:
                await chain[0]()
            except Exception:
                logger.exception("cluster: JetStream request failed")
            finally:
                self.running -= 1
            chain.popleft()
            if chain:
                ready.append(key)
            else:
                del chains[key]

    async def close(self, timeout: float) -> None:
        """Cancel the running requests (waiting for them at most `timeout` seconds) and
        drop the waiting ones."""
        self._closed = True
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.wait(workers, timeout=timeout)
        self._chains.clear()
        self._ready.clear()
