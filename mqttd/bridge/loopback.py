"""An in-process transport between an `MqttClient` and a broker `Connection`.

The bridge's local leg is an ordinary MQTT client of the local broker: it connects,
subscribes, publishes and acknowledges with real packets, through
`Broker.connection(sink, peer, listener)` like any socket. So everything the core does
for a client (sessions that persist in the store, inflight windows, queue bounds,
resending with DUP, No Local, authentication and ACLs) holds for the bridge too, and
the core needs no bridge-specific delivery path. The cost is one encode and one decode
per message, which a bridge can afford.

Two directions, two rules:

- client -> broker: `write` hands the bytes straight to `Connection.data_received`.
  It is only ever called from the bridge (never from inside the broker), so the core
  is not re-entered.
- broker -> client: the core writes while it routes other clients' messages (the hot
  path), so the sink only appends and schedules one `call_soon` that hands everything
  gathered to the client's `data_received`; the client never runs inside the core.

Flow control maps onto the same ideas as a socket's: the client pausing its reading
(`pause_reading`, because the remote broker is slow) makes the local session "not
writable" so it queues; the core pausing its reading of the client (a publisher it
wants to slow down) reaches the client as `pause_writing`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from .client import MqttClient

__all__ = ["LoopbackTransport"]


class LoopbackTransport:
    """Joins `client` to a new broker connection; the client is told `connection_made`."""

    __slots__ = (
        "_client",
        "_closed_by_broker",
        "_closing",
        "_connection",
        "_inbox",
        "_loop",
        "_lost",
        "_scheduled",
    )

    def __init__(self, broker: Broker, client: MqttClient, peer: str, listener: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = client
        self._inbox: list[bytes] = []
        self._scheduled = False
        self._closing = False  # the client closed its side
        self._closed_by_broker = False
        self._lost = False  # the client was told connection_lost
        self._connection = broker.connection(_BrokerSide(self), peer, listener)
        client.connection_made(self)  # type: ignore[arg-type]  # a Transport in all but name

    # -- the client's side (the Transport protocol of client.py) ---------------------------

    def write(self, data: bytes) -> None:
        """Bytes from the client to the broker, handed over at once."""
        if not self._closing and not self._closed_by_broker:
            self._connection.data_received(bytes(data))

    def close(self) -> None:
        """The client closes: the broker sees the socket go (after what was written)."""
        if self._closing:
            return
        self._closing = True
        if not self._closed_by_broker:
            self._connection.connection_lost()
        self._schedule()

    def abort(self) -> None:
        """Same as `close`: nothing is buffered on this side."""
        self.close()

    def is_closing(self) -> bool:
        """True once either side closed."""
        return self._closing or self._closed_by_broker

    def pause_reading(self) -> None:
        """The client cannot take more (its remote is slow): the session queues instead."""
        if not self.is_closing():
            self._connection.writable_changed(False)

    def resume_reading(self) -> None:
        """The client can take more again."""
        if not self.is_closing():
            self._connection.writable_changed(True)

    # -- the broker's side (called through _BrokerSide, the Sink) --------------------------

    def _from_broker(self, data: bytes) -> None:
        if not self._lost:
            self._inbox.append(bytes(data))
            self._schedule()

    def _broker_closed(self) -> None:
        self._closed_by_broker = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        if self._lost:
            return
        if self._inbox:
            data = b"".join(self._inbox)
            self._inbox.clear()
            self._client.data_received(data)
        if (self._closing or self._closed_by_broker) and not self._inbox and not self._lost:
            self._lost = True
            self._client.connection_lost(None)


class _BrokerSide:
    """The `Sink` the broker Connection writes to (mqttd.broker.connection.Sink)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: LoopbackTransport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport._from_broker(data)

    def close(self) -> None:
        self._transport._broker_closed()

    def pause_reading(self) -> None:
        self._transport._client.pause_writing()

    def resume_reading(self) -> None:
        self._transport._client.resume_writing()
