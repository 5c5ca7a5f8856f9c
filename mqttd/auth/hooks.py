"""The authentication hook the core calls for every CONNECT.

The hook is synchronous: CONNACK waits for its answer, so a hook that needs I/O keeps its
data in memory (the password file is loaded at start-up, not read per CONNECT).
Anonymous clients are allowed when no hook is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.reason_codes import ReasonCode

__all__ = ["AuthResult", "Authenticate", "Authorise", "ConnectInfo", "allow_all"]


@dataclass(slots=True)
class ConnectInfo:
    """What a CONNECT tells about who is connecting."""

    client_id: str
    username: str | None
    password: bytes | None
    protocol_level: int
    peer: str
    listener: str
    #: Common Name of the verified TLS client certificate, None without one.
    identity: str | None = None


@dataclass(slots=True)
class AuthResult:
    """The hook's answer: SUCCESS, or the 5.0 CONNACK reason code to refuse with.

    3.x clients get the closest 3.x return code (`connack_code_for_v3`).
    """

    reason_code: int = ReasonCode.SUCCESS
    #: The name the client is known by for ACLs and session ownership when accepted;
    #: None keeps the CONNECT's user name (a TLS identity or a plugin may replace it).
    username: str | None = None

    @property
    def accepted(self) -> bool:
        """True when the client may connect."""
        return self.reason_code == ReasonCode.SUCCESS


Authenticate = Callable[[ConnectInfo], AuthResult]

Authorise = Callable[[str, str | None, str, str], bool]
"""`authorise(client_id, username, action, topic)`: may the client "read" (a delivery),
"write" (a PUBLISH or a will) or "subscribe" (`topic` is then the filter)? The core
calls it only when one is configured (`Broker.authorise` is None otherwise)."""

_ACCEPTED = AuthResult()


def allow_all(info: ConnectInfo) -> AuthResult:
    """The default hook: everybody may connect, with or without a user name."""
    return _ACCEPTED
