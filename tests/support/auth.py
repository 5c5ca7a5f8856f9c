"""A core harness wired to a `Security` built from a Config (for the auth tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mqttd.config import Config
from mqttd.security import Security
from support.core import Client, Harness, settings

__all__ = ["MakeConfig", "SecureHarness"]


class SecureHarness(Harness):
    """A `Harness` whose broker answers to a `Security` built from `config`."""

    def __init__(self, config: Config, store: Any = None, **overrides: Any) -> None:
        self.config = config
        self.security = Security(config)
        self.security.load()
        super().__init__(
            settings(**overrides), store=store, authenticate=self.security.authenticate
        )
        self._wire()

    def _wire(self) -> None:
        # As App does: the core gets the hooks, not the `Security`.
        self.broker.authorise = self.security.authorise_hook
        self.broker.sessions_owned = self.security.sessions_owned

    def reload(self) -> None:
        """A SIGHUP: re-read the files named in `config` and hand the hooks over again."""
        self.security.reload(self.config)
        self._wire()

    def on(
        self,
        listener: str = "mqtt",
        level: int = 4,
        peer: str = "127.0.0.1:40000",
        identity: str | None = None,
    ) -> Client:
        """A client arriving on `listener` from `peer`."""
        return Client(self.broker, level, peer, listener, identity)

    def login(
        self,
        client_id: str,
        username: str | None = None,
        password: bytes | None = None,
        level: int = 4,
        **kwargs: Any,
    ) -> Client:
        """A client past a successful CONNACK on the first listener."""
        client = self.on(level=level)
        connack = client.connect(client_id, username=username, password=password, **kwargs)
        assert connack.reason_code == 0, connack
        return client


MakeConfig = Callable[..., Config]
