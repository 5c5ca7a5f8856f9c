"""Every configured bridge of one App: built, started and stopped together.

`BridgeService(config, broker)` builds one `Bridge` per `[[bridge]]` table (TLS files
are loaded then, by `build_bridge_ssl_contexts`, so a bad certificate is a `ConfigError`
before anything starts).
`start()` first ends the stored local sessions of bridges that are no longer
configured (their queues would otherwise be kept forever), then starts each bridge;
`stop()` stops them all. `states` is what the App exposes as `App.bridges`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ..config import ConfigError
from .bridge import LOCAL_CLIENT_ID_PREFIX, Bridge, client_ssl_context, end_local_session

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..config import Config

__all__ = ["BridgeService", "build_bridge_ssl_contexts"]

logger = logging.getLogger("mqttd.bridge")


def build_bridge_ssl_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """A TLS context for every bridge with `[bridge.tls]`, keyed by bridge name.

    Raises `ConfigError` naming the bridge when a file cannot be read or is invalid (so
    `mqttd check-config` can catch a bad certificate before a start does).
    """
    contexts: dict[str, ssl.SSLContext] = {}
    errors: list[str] = []
    for i, bridge in enumerate(config.bridge):
        tls = bridge.tls
        if tls is None:
            continue
        try:
            contexts[bridge.name] = client_ssl_context(tls)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(repr(f) for f in (tls.certfile, tls.keyfile, tls.cafile) if f)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            errors.append(f"config error: bridge[{i}].tls: cannot load {files}: {reason}")
    if errors:
        raise ConfigError(errors)
    return contexts


class BridgeService:
    """The bridges of one broker (see the module docstring)."""

    def __init__(self, config: Config, broker: Broker) -> None:
        self._broker = broker
        contexts = build_bridge_ssl_contexts(config)
        self.bridges: dict[str, Bridge] = {
            bridge.name: Bridge(bridge, broker, contexts.get(bridge.name))
            for bridge in config.bridge
        }

    @property
    def states(self) -> dict[str, int]:
        """Bridge name -> 1 while connected to its remote, else 0."""
        return {name: bridge.state for name, bridge in self.bridges.items()}

    async def start(self) -> None:
        """End the sessions of removed bridges, then start every bridge."""
        for client_id in list(self._broker.sessions):
            if not client_id.startswith(LOCAL_CLIENT_ID_PREFIX):
                continue
            name = client_id[len(LOCAL_CLIENT_ID_PREFIX) :]
            if name not in self.bridges:
                logger.info("bridge %s is no longer configured: ending its session", name)
                await end_local_session(self._broker, client_id)
        await asyncio.gather(*(bridge.start() for bridge in self.bridges.values()))

    async def stop(self) -> None:
        """Stop every bridge (each bounded in time)."""
        await asyncio.gather(*(bridge.stop() for bridge in self.bridges.values()))
