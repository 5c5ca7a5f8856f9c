"""An example auth plugin: users from the config, each confined to its own topic tree.

    [auth]
    plugin = "mqttd.auth.examples:static_users"
    plugin_options = { users = { alice = "wonderland", bob = "builder" }, public = "public/#" }

Each user may publish and subscribe under "users/<name>/#" and read `public` (a filter;
"" = nothing). Anonymous clients are refused. A starting point to copy: a real plugin
would read hashed passwords from a database it caches, not plain text from the config.

Shipped in the package on purpose: the configuration above works as written, and the
plugin documentation (SECURITY.md) points here as the template to copy.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ..protocol.reason_codes import ReasonCode
from .acl import Action, filter_covers, topic_matches
from .hooks import AuthResult, ConnectInfo

__all__ = ["StaticUsers", "static_users"]


class StaticUsers:
    """`AuthPlugin` with a fixed user table and one private subtree per user."""

    def __init__(self, users: Mapping[str, str], public: str = "") -> None:
        self.users = {name: password.encode() for name, password in users.items()}
        self.public = public.split("/") if public else None

    def authenticate(self, info: ConnectInfo) -> AuthResult:
        """Accept a known user with the right password; refuse everyone else."""
        if info.username is None:
            return AuthResult(ReasonCode.NOT_AUTHORIZED)
        expected = self.users.get(info.username)
        if expected is None or info.password is None:
            return AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
        if not hmac.compare_digest(expected, info.password):
            return AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)
        return AuthResult()

    def authorise(self, client_id: str, username: str | None, action: Action, topic: str) -> bool:
        """Own subtree: everything; `public`: read and subscribe."""
        if username is None or "+" in username or "#" in username or "/" in username:
            return False
        match = filter_covers if action == "subscribe" else topic_matches
        if match(("users", username, "#"), topic):
            return True
        return action != "write" and self.public is not None and match(self.public, topic)


def static_users(options: Mapping[str, Any]) -> StaticUsers:
    """The factory named in the config: `options` is `[auth] plugin_options`."""
    users = options.get("users", {})
    if not isinstance(users, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in users.items()
    ):
        raise ValueError("plugin_options.users must be a table of user = password strings")
    public = options.get("public", "")
    if not isinstance(public, str):
        raise ValueError("plugin_options.public must be a topic filter string")
    return StaticUsers(users, public)
