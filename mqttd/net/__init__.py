"""Listeners: they only move bytes between sockets and broker `Connection`s.

`tcp` serves MQTT over TCP and TLS (one `asyncio.Protocol` per socket), `ws` serves MQTT
over WebSocket. Both hand each accepted client to `Broker.connection(sink, peer,
listener)` and give the Connection a sink that coalesces writes.
"""
