"""Who may use the admin API: API keys, admin users of the password file, or loopback.

A request proves who it is one of two ways:

- ``Authorization: Bearer KEY`` with a key from `[admin] api_key_file`. The file holds
  ``name:sha256:HEX`` lines, the SHA-256 of each key: the keys are 32 random bytes, so a
  fast hash is enough and a stolen file gives nothing to replay. `keygen` makes one.
- ``Authorization: Basic ...`` with a user of ``[auth] password_file`` that is listed in
  `[admin] users` (the admin role), and that user's MQTT password. A password check costs a
  PBKDF2 (tens of milliseconds), so a success is remembered for `BASIC_CACHE_SECONDS` by
  the SHA-256 of the header; the dashboard asks every two seconds.

Without any key or admin user configured, the API is open, but only on a loopback address
(config.py refuses to start it elsewhere): whoever can reach 127.0.0.1 already runs on the
broker's machine. Once keys or users exist, every request must carry one, loopback or not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..auth.password_file import PasswordFile, PasswordFileError

__all__ = [
    "ANONYMOUS",
    "AdminAuth",
    "ApiKeyError",
    "Denied",
    "keygen",
    "load_api_keys",
]

ANONYMOUS = "anonymous@loopback"
BASIC_CACHE_SECONDS = 60.0


class ApiKeyError(Exception):
    """The API key file cannot be read or has a bad line (the message names it)."""


class Denied(Exception):
    """The request has no valid credential; `status` is 401 (none/wrong) or 403."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def keygen(name: str) -> tuple[str, str]:
    """A fresh API key for `name`: (key to give the client, line for the key file)."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError(f"API key name {name!r}: no spaces or ':', not empty")
    key = secrets.token_urlsafe(32)
    return key, f"{name}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def load_api_keys(path: str | Path) -> dict[str, str]:
    """sha256 hex -> key name, from a key file; comments (#) and blank lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ApiKeyError(f"admin.api_key_file {str(path)!r}: cannot read: {reason}") from exc
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        scheme, _, digest = rest.partition(":")
        if not name or scheme != "sha256" or len(digest) != 64:
            raise ApiKeyError(
                f"admin.api_key_file {str(path)!r} line {number}: expected name:sha256:HEX "
                "(64 hex digits; mqttd ctl keygen NAME writes one)"
            )
        try:
            bytes.fromhex(digest)
        except ValueError:
            raise ApiKeyError(
                f"admin.api_key_file {str(path)!r} line {number}: {digest!r} is not hex"
            ) from None
        keys[digest.lower()] = name
    return keys


@dataclass
class AdminAuth:
    """Checks one request's Authorization header; `identify` returns who made it.

    `loopback_open`: no credential configured, so requests without one are let in (the
    listener is on loopback, config.py sees to that). `clock` is monotonic seconds.
    """

    api_keys: dict[str, str] = field(default_factory=dict)
    users: frozenset[str] = frozenset()
    passwords: PasswordFile | None = None
    clock: Callable[[], float] = time.monotonic
    _basic_ok: dict[str, tuple[float, str]] = field(default_factory=dict)

    @classmethod
    def from_files(cls, api_key_file: str, users: list[str], password_file: str) -> AdminAuth:
        """Load the key file and the password file named by the config."""
        keys = load_api_keys(api_key_file) if api_key_file else {}
        passwords = None
        if users:
            try:
                passwords = PasswordFile.load(password_file)
            except PasswordFileError as exc:
                raise ApiKeyError(str(exc)) from exc
        return cls(keys, frozenset(users), passwords)

    @property
    def loopback_open(self) -> bool:
        """True when no credential is configured: requests need none (loopback only)."""
        return not self.api_keys and not self.users

    def identify(self, authorization: str | None) -> str:
        """Who sent a request with this Authorization header; raises `Denied`."""
        if not authorization:
            if self.loopback_open:
                return ANONYMOUS
            raise Denied(401, "credentials required: Authorization: Bearer KEY or Basic")
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            digest = hashlib.sha256(value.encode()).hexdigest()
            for known, name in self.api_keys.items():
                if hmac.compare_digest(known, digest):
                    return f"key:{name}"
            raise Denied(401, "unknown API key")
        if scheme == "basic":
            return self._basic(value)
        raise Denied(401, f"unsupported authorization scheme {scheme!r}")

    def _basic(self, value: str) -> str:
        now = self.clock()
        cache_key = hashlib.sha256(value.encode()).hexdigest()
        cached = self._basic_ok.get(cache_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Denied(401, "malformed Basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise Denied(401, "malformed Basic credentials")
        if self.passwords is None or not self.passwords.verify(username, password.encode()):
            raise Denied(401, "bad user name or password")
        if username not in self.users:
            raise Denied(403, f"user {username!r} has no admin role ([admin] users)")
        if len(self._basic_ok) > 1000:
            self._basic_ok.clear()
        self._basic_ok[cache_key] = (now + BASIC_CACHE_SECONDS, f"user:{username}")
        return f"user:{username}"
