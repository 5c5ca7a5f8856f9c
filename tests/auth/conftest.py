"""Fixtures for the auth tests (the harness itself is in support/auth.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.auth import MakeConfig

from mqttd.config import AuthConfig, Config, ListenerConfig, TLSConfig


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """A Config with one loopback listener "mqtt" and the given [auth] values.

    `passwords` (dict user -> password) writes a password file, `acl` (text) an ACL file;
    `listeners` replaces the listener list.
    """

    def make(
        *,
        passwords: dict[str, str] | None = None,
        acl: str | None = None,
        listeners: list[ListenerConfig] | None = None,
        **auth: Any,
    ) -> Config:
        from mqttd.auth.password_file import PasswordFile

        config = Config()
        config.listeners = listeners or [ListenerConfig(name="mqtt", port=0)]
        config.auth = AuthConfig(**auth)
        if passwords is not None:
            pw = PasswordFile(tmp_path / "passwd")
            for user, password in passwords.items():
                pw.set(user, password)
            pw.save()
            config.auth.password_file = str(tmp_path / "passwd")
        if acl is not None:
            (tmp_path / "acl").write_text(acl)
            config.auth.acl_file = str(tmp_path / "acl")
        return config

    return make


@pytest.fixture
def tls_listener() -> Callable[..., ListenerConfig]:
    """A listener config with TLS (files are not read by `Security`)."""

    def make(name: str = "mqtts", host: str = "0.0.0.0", identity: bool = True) -> ListenerConfig:
        return ListenerConfig(
            name=name,
            host=host,
            port=0,
            tls=TLSConfig(
                certfile="server.crt",
                cafile="ca.crt",
                require_certificate=True,
                use_identity_as_username=identity,
            ),
        )

    return make
