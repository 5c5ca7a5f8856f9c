"""Listeners: they only move bytes between sockets and broker `Connection`s.

`epoll_tcp` serves MQTT over plain TCP (one epoll of ours per listener, no transport per
socket; Linux), `tcp` over TLS (one `asyncio.Protocol` per socket; plain TCP too where
there is no epoll), `ws` over WebSocket. Each hands an accepted client to
`Broker.connection(sink, peer, listener)` and gives the Connection a sink that coalesces
writes.
"""
