"""Liveness of the nodes, the self-fence, and the wills a dead node leaves behind.

Theory of operation (docs/cluster.md, "When a node dies" and "What happens in a
partition").

Every node has a *life*: a random token, new at each start and after each self-fence.
Every `heartbeat_interval` the node puts the key `<node>.<life>` into the bucket
`mqttd_<cluster>_nodes`, whose entries expire `node_timeout` after their last write; the
keys present are the live (node, life) pairs. A node that dies stops writing, and its
key expires. The heartbeat is one request and runs apart from the survey of the live
keys (several requests), so a loaded node still beats in time.

The wills of the clients connected to a node must be known to the others before the
node dies. So when a client with a will connects, its node puts the will into the
bucket `mqttd_<cluster>_wills` under `<node>.<life>.<sha256(client id)>`, and deletes
it when the will is no longer due from anyone: a normal DISCONNECT, a will published or
cancelled here, a takeover, the session's end, a graceful stop.

At each survey a node compares the live keys with the ones it saw before. A key that
vanished is a dead life: the node lists that life's wills, and for each one waits its
Will Delay Interval (counted from when the death was noticed), then deletes the entry
*at the revision it read* (compare-and-delete). Every survivor tries; exactly one
delete succeeds, and only that node publishes the will, as if its client had been
connected there. A delayed will whose client id has meanwhile been claimed by another
(node, life) is not published: the client connected again within the delay (5.0
3.1.2.5). A node that starts up scans all wills once, for lives that died while nobody
watched.

The self-fence keeps a node cut off from NATS from acting as live while the others
treat it as dead. When no heartbeat has succeeded for `node_timeout -
heartbeat_interval / 2` (measured from the start of the last good one, so before its
key can have expired on the server), the node fences itself: it takes a new life,
forgets its will entries (they now belong to a dead life, for whoever notices first,
itself included once the link is back), and closes every connection with DISCONNECT
0x9C (Use another server) without publishing wills. Until a heartbeat succeeds again,
a client that connects is closed the same way. Nothing in this module touches the core
except through `BackplaneHost`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from ..broker.backplane import BackplaneHost
from ..broker.message import Message
from ..config import ClusterConfig

__all__ = ["NodeLiveness", "WillRecord", "new_life"]

logger = logging.getLogger("mqttd.cluster")

#: The length of a will record's JSON head (`WillRecord.encode`).
_HEAD_SIZE = struct.Struct(">I")
#: Attempts at settling one orphaned will while NATS is away.
_SETTLE_ATTEMPTS = 20


def new_life() -> str:
    """A fresh life token: 16 hex digits (a KV key token)."""
    return secrets.token_hex(8)


def client_key(client_id: str) -> str:
    """The fixed-size KV key token of a client id."""
    return hashlib.sha256(client_id.encode()).hexdigest()


@dataclass(slots=True)
class WillRecord:
    """A will kept in the wills bucket: what a survivor needs to publish it."""

    client_id: str
    node: str
    life: str
    delay: int
    envelope: bytes

    def encode(self) -> bytes:
        """The bucket value: a four-byte length, a JSON object of the fields, then the
        envelope as it is (not base64: a will must fit NATS's max_payload as its
        message does, docs/cluster.md "Large messages")."""
        head = json.dumps(
            {
                "client_id": self.client_id,
                "node": self.node,
                "life": self.life,
                "delay": self.delay,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        return b"".join((_HEAD_SIZE.pack(len(head)), head, self.envelope))

    @classmethod
    def decode(cls, data: bytes) -> WillRecord:
        """Parse a bucket value (also the earlier all-JSON form); ValueError when it
        is not one."""
        try:
            if data[:1] == b"{":  # the earlier form: JSON, the envelope in base64
                raw = json.loads(data)
                envelope = base64.b64decode(raw["envelope"])
            else:
                (size,) = _HEAD_SIZE.unpack_from(data)
                end = _HEAD_SIZE.size + size
                if end > len(data):
                    raise ValueError("shorter than its head")
                raw = json.loads(data[_HEAD_SIZE.size : end])
                envelope = data[end:]
            return cls(
                str(raw["client_id"]),
                str(raw["node"]),
                str(raw["life"]),
                int(raw["delay"]),
                envelope,
            )
        except (KeyError, TypeError, ValueError, struct.error) as exc:
            raise ValueError(f"not a will record: {exc}") from exc


@dataclass(slots=True)
class LivenessStats:
    """Counters of dead-node handling (for $SYS and /metrics)."""

    nodes_dead: int = 0
    wills_stored: int = 0
    orphan_wills_published: int = 0
    orphan_wills_cancelled: int = 0
    fences: int = 0
    #: Wills too large for the wills bucket (not kept for the survivors).
    wills_too_large: int = 0


class NodeLiveness:
    """One node's heartbeats, self-fence, will entries and dead-node handling."""

    def __init__(
        self,
        config: ClusterConfig,
        node: str,
        nodes: KeyValue,
        wills: KeyValue,
        clients: KeyValue,
        host: Callable[[], BackplaneHost],
        decode_will: Callable[[bytes], Message | None],
    ) -> None:
        """`decode_will` turns a will's envelope into a Message (None when unreadable)."""
        self.config = config
        self.node = node
        self.life = new_life()
        self.stats = LivenessStats()
        #: True while cut off longer than is safe: connections here are refused.
        self.fenced = False
        #: The live keys `<node>.<life>` at the last heartbeat.
        self.live: set[str] = set()
        self._nodes = nodes
        self._wills = wills
        self._clients = clients
        self._host = host
        self._decode_will = decode_will
        #: Our will entries: client id -> (key, revision).
        self._mine: dict[str, tuple[str, int]] = {}
        #: Orphaned will keys already being settled here.
        self._settling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_ok = 0.0

    @property
    def key(self) -> str:
        """This node's heartbeat key."""
        return f"{self.node}.{self.life}"

    @property
    def peers(self) -> list[str]:
        """The live nodes' names, this one included."""
        return sorted({key.split(".", 1)[0] for key in self.live})

    # -- heartbeats and the fence ---------------------------------------------------------

    async def beat(self) -> None:
        """Write our heartbeat (one request: nothing else may delay it under load)."""
        started = asyncio.get_running_loop().time()
        life = self.life
        await self._nodes.put(self.key, json.dumps({"life": life}).encode())
        if life != self.life:
            return  # fenced while the beat was on its way: it does not count
        self._last_ok = started
        if self.fenced:
            self.fenced = False
            logger.warning("cluster: NATS reachable again: node %r accepts clients", self.node)

    async def survey(self) -> None:
        """Read the live keys; act on the lives that vanished since the last survey."""
        try:
            live = set(await self._nodes.keys())
        except NoKeysError:
            live = set()
        vanished = self.live - live
        self.live = live
        for key in vanished:
            if key == self.key or not await self._expired(key):
                # A listing can miss a key written while it runs: only a key that a
                # direct read no longer finds is gone.
                self.live.add(key)
                continue
            self.stats.nodes_dead += 1
            logger.warning("cluster: node life %r is gone: settling its wills", key)
            self._spawn(self._scan(key + ".>"))

    async def survey_loop(self) -> None:
        """Survey the live nodes every heartbeat interval (runs forever)."""
        config = self.config
        while True:
            await asyncio.sleep(config.heartbeat_interval)
            try:
                await asyncio.wait_for(self.survey(), config.node_timeout)
            except Exception as exc:
                logger.warning("cluster: reading the live nodes failed: %s", exc or type(exc))

    async def _expired(self, key: str) -> bool:
        try:
            await self._nodes.get(key)
        except KeyNotFoundError:
            return True
        return False

    def fence_due(self, now: float) -> bool:
        """True when the last good heartbeat is too old to still count on the server."""
        limit = self.config.node_timeout - self.config.heartbeat_interval / 2
        return not self.fenced and self._last_ok > 0 and now - self._last_ok > limit

    def fence(self) -> None:
        """Cut off too long: take a new life, leave our wills to the others, close clients."""
        old = self.key
        self.fenced = True
        self.stats.fences += 1
        self.life = new_life()
        self._mine.clear()
        logger.warning(
            "cluster: no heartbeat reached NATS for %.1f s: node %r closes its clients "
            "(DISCONNECT 0x9C) until NATS is back; their wills go to the cluster",
            self.config.node_timeout,
            self.node,
        )
        # Our old life is dead for us too: once NATS is back, whoever deletes first publishes.
        self.live.discard(old)
        self._spawn(self._scan(old + ".>", wait_for_link=True))
        self._host().node_fenced()

    async def watchdog(self) -> None:
        """Fence this node when its heartbeats stop reaching NATS (runs forever)."""
        loop = asyncio.get_running_loop()
        tick = min(self.config.heartbeat_interval / 4, 0.25)
        while True:
            await asyncio.sleep(tick)
            if self.fence_due(loop.time()):
                self.fence()

    async def start(self) -> None:
        """First heartbeat (raises when NATS refuses), then a scan of every dead life."""
        await self.beat()
        await self.survey()
        self._spawn(self._scan(">", skip_live=True))

    async def stop(self, timeout: float) -> None:
        """Graceful stop: delete our heartbeat and will entries (no will is due)."""
        for task in self._tasks:
            task.cancel()
        ops = [self._nodes.delete(self.key)]
        ops += [self._wills.delete(key, last=rev) for key, rev in self._mine.values()]
        self._mine.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*ops, return_exceptions=True), timeout)

    # -- our wills ------------------------------------------------------------------------

    async def keep_will(
        self, client_id: str, will: tuple[Message, int] | None, data: bytes
    ) -> None:
        """Record the will of a client connected here (`data`: its envelope), or drop it."""
        if will is None:
            await self.drop_will(client_id)
            return
        if self.fenced:
            return
        key = f"{self.key}.{client_key(client_id)}"
        record = WillRecord(client_id, self.node, self.life, will[1], data)
        try:
            revision = await self._wills.put(key, record.encode())
        except nats_errors.MaxPayloadError:
            # Only with a client id far longer than the cluster's packet limit leaves
            # room for (limits.py): said, never tried again.
            self.stats.wills_too_large += 1
            logger.warning(
                "cluster: the will of %r is too large for NATS: if this node dies, it is"
                " not published",
                client_id,
            )
            return
        self._mine[client_id] = (key, revision)
        self.stats.wills_stored += 1

    async def drop_will(self, client_id: str) -> None:
        """The will of `client_id` is no longer due from the cluster: delete our entry."""
        entry = self._mine.pop(client_id, None)
        if entry is not None:
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self._wills.delete(entry[0], last=entry[1])

    # -- the wills of dead lives ------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scan(
        self, pattern: str, skip_live: bool = False, wait_for_link: bool = False
    ) -> None:
        """Settle the wills whose keys match `pattern` (all of them when `skip_live`)."""
        delay = 0.2
        while True:
            try:
                keys = await self._list(pattern)
                break
            except (TimeoutError, OSError, nats_errors.Error) as exc:
                if not wait_for_link:
                    logger.warning("cluster: cannot list wills %r: %s", pattern, exc)
                    return
                await asyncio.sleep(delay)  # fenced: wait until NATS is back
                delay = min(2 * delay, 2.0)
        dead: dict[str, bool] = {}
        for key in keys:
            life_key = key.rsplit(".", 1)[0]
            if skip_live:
                if life_key in self.live or life_key == self.key:
                    continue
                if life_key not in dead:
                    # Not in the listing: dead only if a direct read confirms it.
                    try:
                        dead[life_key] = await self._expired(life_key)
                    except (TimeoutError, OSError, nats_errors.Error):
                        dead[life_key] = False  # unknown: the next start looks again
                if not dead[life_key]:
                    continue
            if key in self._settling:
                continue
            try:
                entry = await self._wills.get(key)
            except KeyNotFoundError:
                continue  # settled meanwhile
            except (TimeoutError, OSError, nats_errors.Error) as exc:
                logger.warning("cluster: cannot read will %r: %s", key, exc)
                continue
            if entry.value is None or entry.revision is None:
                continue
            try:
                record = WillRecord.decode(entry.value)
            except ValueError as exc:
                logger.warning("cluster: dropping will entry %r: %s", key, exc)
                continue
            self._settling.add(key)
            self._spawn(self._settle(key, entry.revision, record))

    async def _list(self, pattern: str) -> list[str]:
        # kv.keys() reads the whole bucket and filters by substring: watch the subjects
        # of `pattern` only (a server-side filter, also on nats-server 2.9).
        watcher = await self._wills.watch(pattern, ignore_deletes=True, meta_only=True)
        keys: list[str] = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.operation is None:
                    keys.append(entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return keys

    async def _settle(self, key: str, revision: int, record: WillRecord) -> None:
        """Wait the will's delay, then publish it here if our compare-and-delete wins."""
        try:
            if record.delay:
                await asyncio.sleep(record.delay)
            for _ in range(_SETTLE_ATTEMPTS):
                try:
                    await self._wills.delete(key, last=revision)
                    break
                except KeyWrongLastSequenceError:
                    return  # another node settled it (or its node took it back)
                except (TimeoutError, OSError, nats_errors.Error):
                    await asyncio.sleep(1.0)
            else:
                logger.warning("cluster: could not settle will %r: NATS unreachable", key)
                return
            if record.delay and await self._reconnected_elsewhere(record):
                self.stats.orphan_wills_cancelled += 1
                logger.info(
                    "cluster: will of %r cancelled: it connected again within its delay",
                    record.client_id,
                )
                return
            message = self._decode_will(record.envelope)
            if message is None:
                return
            self.stats.orphan_wills_published += 1
            logger.info(
                "cluster: publishing the will of %r left by node %r", record.client_id, record.node
            )
            self._host().publish_will(message)
        finally:
            self._settling.discard(key)

    async def _reconnected_elsewhere(self, record: WillRecord) -> bool:
        try:
            entry = await self._clients.get(client_key(record.client_id))
        except KeyNotFoundError:
            return False
        except (TimeoutError, OSError, nats_errors.Error):
            return False  # unknown: publish, as the will is due unless proven otherwise
        try:
            owner = json.loads(entry.value or b"{}")
        except ValueError:
            return False
        return bool(owner) and (owner.get("node"), owner.get("life")) != (
            record.node,
            record.life,
        )

    def figures(self) -> dict[str, int]:
        """Dead-node figures by metric name suffix."""
        stats = self.stats
        return {
            "fenced": int(self.fenced),
            "nodes_dead_total": stats.nodes_dead,
            "wills_stored_total": stats.wills_stored,
            "orphan_wills_published_total": stats.orphan_wills_published,
            "orphan_wills_cancelled_total": stats.orphan_wills_cancelled,
            "fences_total": stats.fences,
            "wills_too_large_total": stats.wills_too_large,
        }
