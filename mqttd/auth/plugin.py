"""Authentication and authorisation plugins: a small Python interface, loaded by import path.

A plugin is any object with the two methods of `AuthPlugin`. The config names a factory
that builds it::

    [auth]
    plugin = "mypackage.mqtt_auth:make_plugin"
    plugin_options = { users_url = "https://auth.example.com", timeout = 2.0 }

`make_plugin(options)` is called once at start-up with `plugin_options` (a dict, possibly
empty) and returns the plugin. Both methods are called on the event loop, synchronously:
a CONNECT waits for `authenticate`, a PUBLISH for `authorise`. A plugin that needs a
network or a database keeps what it needs in memory (refreshed in a thread or a task of
its own); it must never block.

How a plugin combines with the built-in checks (see `mqttd.security`):

- `authenticate(info)` is asked about every CONNECT the built-in checks did not decide:
  a client with a TLS identity (`use_identity_as_username`) or a user name found in the
  password file is decided there; everyone else, anonymous clients included, is the
  plugin's to accept or refuse. `info.username` is None for an anonymous client.
- `authorise(client_id, username, action, topic)` is asked after the ACL file (when
  there is one) allowed: both must say yes. `action` is "write" for a PUBLISH (and a
  will), "subscribe" for a SUBSCRIBE (`topic` is then the filter; for a shared
  subscription the filter after "$share/GROUP/"), "read" for each message about to be
  delivered. Answers are cached per (action, client id, user name, topic) until the
  next reload (SIGHUP), so they must depend on nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from .acl import Action
from .hooks import AuthResult, ConnectInfo

__all__ = ["AuthPlugin", "PluginError", "PluginFactory", "load_plugin"]


@runtime_checkable
class AuthPlugin(Protocol):
    """What an authentication/authorisation plugin provides (see the module docstring)."""

    def authenticate(self, info: ConnectInfo) -> AuthResult:
        """Accept (`AuthResult()`) or refuse (`AuthResult(reason_code)`) a CONNECT.

        Refuse with 0x86 (bad user name or password) or 0x87 (not authorised); 3.x
        clients get the matching 3.x return code. `AuthResult(username=...)` renames
        the client for ACLs and session ownership.
        """
        ...

    def authorise(self, client_id: str, username: str | None, action: Action, topic: str) -> bool:
        """May this client do `action` ("read", "write", "subscribe") on `topic`?"""
        ...


PluginFactory = Callable[[Mapping[str, Any]], AuthPlugin]


class PluginError(Exception):
    """The configured plugin cannot be imported or built; the message says why."""


def load_plugin(spec: str, options: Mapping[str, Any] | None = None) -> AuthPlugin:
    """Import "package.module:factory", call `factory(options)`, check what it returned."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise PluginError(f'auth.plugin: "{spec}" is not "package.module:factory"')
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises on import
        raise PluginError(f'auth.plugin: cannot import "{module_name}": {exc}') from exc
    target: Any = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise PluginError(
                f'auth.plugin: "{module_name}" has no attribute "{attribute}"'
            ) from None
    if not callable(target):
        raise PluginError(f'auth.plugin: "{spec}" is not callable')
    try:
        plugin = target(dict(options or {}))
    except Exception as exc:
        raise PluginError(f'auth.plugin: "{spec}" failed: {type(exc).__name__}: {exc}') from exc
    if not isinstance(plugin, AuthPlugin):
        raise PluginError(
            f'auth.plugin: "{spec}" returned {type(plugin).__name__}, which lacks '
            "authenticate(info) and authorise(client_id, username, action, topic)"
        )
    return plugin
