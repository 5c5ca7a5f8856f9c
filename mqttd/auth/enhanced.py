"""Enhanced authentication (MQTT 5.0 section 4.12): what one method implements, and the registry.

A method is named by the Authentication Method string a 5.0 client puts in CONNECT
(e.g. "SCRAM-SHA-256", the one mqttd ships: `mqttd.auth.scram`). For every exchange (the
one that opens a connection, and each re-authentication) the broker makes a fresh
`Authenticator` with the registered factory, calls `start` with the client's first
Authentication Data, then `continue_` with each later one, until an answer is SUCCESS or
FAIL::

    CONNECT (method, data)  ->  start()     -> CONTINUE: AUTH 0x18 (method, data)
    AUTH 0x18 (data)        ->  continue_() -> CONTINUE: AUTH 0x18 ... | SUCCESS | FAIL
    SUCCESS: CONNACK 0x00 (method, data); on re-authentication AUTH 0x00 (method, data)
    FAIL: CONNACK with the step's reason code; on re-authentication DISCONNECT

Authenticators are synchronous, like the CONNECT hook (`mqttd.auth.hooks`): the broker
core does no I/O, so a method keeps what it needs (its user store) in memory.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AuthContext",
    "AuthMethods",
    "AuthStatus",
    "AuthStep",
    "Authenticator",
    "AuthenticatorFactory",
]

_NOT_AUTHORIZED = 0x87


class AuthStatus(enum.IntEnum):
    """Where an exchange stands after one step."""

    CONTINUE = 0  # send the data to the client in AUTH 0x18 and wait for its answer
    SUCCESS = 1  # the client is authenticated (data goes in CONNACK / AUTH 0x00)
    FAIL = 2  # refuse: CONNACK (or, on re-authentication, DISCONNECT) with reason_code


@dataclass(frozen=True, slots=True)
class AuthStep:
    """The authenticator's answer to one message of the client.

    `data` is the Authentication Data to send (None: leave the property out).
    `identity` (on SUCCESS) names who was authenticated, e.g. the SCRAM user name; the
    broker keeps it as the connection's authenticated user. `reason_code` (on FAIL) is
    the CONNACK / DISCONNECT reason code: 0x86 Bad User Name or Password when the
    credentials are wrong, 0x87 Not authorized otherwise. `reason` is a short text for
    the log and, where the client allows it, the Reason String.
    """

    status: AuthStatus
    data: bytes | None = None
    identity: str | None = None
    reason_code: int = _NOT_AUTHORIZED
    reason: str | None = None

    @classmethod
    def proceed(cls, data: bytes | None) -> AuthStep:
        """Continue the exchange: `data` goes to the client in AUTH 0x18."""
        return cls(AuthStatus.CONTINUE, data)

    @classmethod
    def success(cls, data: bytes | None = None, identity: str | None = None) -> AuthStep:
        """The client is authenticated as `identity`."""
        return cls(AuthStatus.SUCCESS, data, identity)

    @classmethod
    def fail(cls, reason_code: int = _NOT_AUTHORIZED, reason: str | None = None) -> AuthStep:
        """Refuse the client with `reason_code`."""
        return cls(AuthStatus.FAIL, None, None, reason_code, reason)


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What the CONNECT said about who is connecting, for a method that wants it."""

    client_id: str
    username: str | None
    peer: str
    listener: str


class Authenticator(Protocol):
    """One enhanced-authentication exchange of one method (a fresh object per exchange)."""

    def start(self, method: str, data: bytes | None) -> AuthStep:
        """The client's first message: CONNECT, or AUTH 0x19 (re-authenticate)."""
        ...

    def continue_(self, data: bytes | None) -> AuthStep:
        """The client's next message (AUTH 0x18). `continue` is a Python keyword."""
        ...


AuthenticatorFactory = Callable[[AuthContext], Authenticator]
"""Makes the authenticator of one exchange."""


class AuthMethods(Mapping[str, AuthenticatorFactory]):
    """The registry: Authentication Method name -> factory of its authenticators.

    Names are compared exactly (they are UTF-8 strings on the wire, 3.1.2.11.9).
    """

    def __init__(self) -> None:
        self._factories: dict[str, AuthenticatorFactory] = {}

    def register(self, method: str, factory: AuthenticatorFactory) -> None:
        """Serve `method` with authenticators made by `factory` (replaces an earlier one)."""
        if not method:
            raise ValueError("an Authentication Method needs a name")
        self._factories[method] = factory

    def unregister(self, method: str) -> None:
        """Stop serving `method` (exchanges already started finish)."""
        self._factories.pop(method, None)

    def __getitem__(self, method: str) -> AuthenticatorFactory:
        return self._factories[method]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)
