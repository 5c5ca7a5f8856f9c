"""Mosquitto-compatible password files: read, verify, write, and the `mqttd passwd` command.

Format (one user a line, the file Mosquitto's `password_file` option reads)::

    alice:$7$101$<base64 salt>$<base64 hash>     PBKDF2-HMAC-SHA512, 101 iterations
    bob:$6$<base64 salt>$<base64 hash>           SHA-512(password + salt), Mosquitto 1.x

`$7$` is what mosquitto_passwd 2.0 writes by default (`-H sha512-pbkdf2`, 12-byte salt,
64-byte hash, the iteration count in the line); `$6$` is the older `-H sha512`. mqttd
writes `$7$` and reads both, so a file moves between Mosquitto and mqttd unchanged.
Lines starting with '#' and lines without ':' are skipped, as Mosquitto does; a line
with any other hash (a plain-text password, say) is an error naming the line.

Verification compares in constant time (`hmac.compare_digest`), and an unknown user
costs the same hash as a known one, so timing tells nothing about which users exist.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PBKDF2_ITERATIONS",
    "PasswordFile",
    "PasswordFileError",
    "PasswordHash",
    "add_passwd_parser",
    "hash_password",
    "run_passwd",
]

#: What mosquitto_passwd 2.0 uses (and writes into each `$7$` line).
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64
# A user name cannot hold ':' (the separator) or a line break (the record separator).
_FORBIDDEN_IN_USERNAME = (":", "\n", "\r")
_MAX_ITERATIONS = 10_000_000  # beyond this a CONNECT would stall the event loop for long


class PasswordFileError(Exception):
    """A password file that cannot be read or used; the message names file and line."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One user's salted hash: `kind` 7 (PBKDF2-SHA512) or 6 (SHA-512, Mosquitto 1.x)."""

    kind: int
    salt: bytes
    digest: bytes
    iterations: int = PBKDF2_ITERATIONS

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Decode `$7$<iterations>$<salt>$<hash>` or `$6$<salt>$<hash>`; ValueError if neither."""
        parts = text.split("$")
        try:
            if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
                iterations = int(parts[2])
                if not 1 <= iterations <= _MAX_ITERATIONS:
                    raise ValueError(f"iteration count {iterations} out of range")
                salt, digest = _b64(parts[3]), _b64(parts[4])
                return cls(7, salt, digest, iterations)
            if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
                return cls(6, _b64(parts[2]), _b64(parts[3]), 1)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 ({exc})") from exc
        raise ValueError("not a $7$ (sha512-pbkdf2) or $6$ (sha512) hash")

    def format(self) -> str:
        """The hash as it is written after "user:" in the file."""
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        if self.kind == 7:
            return f"$7${self.iterations}${salt}${digest}"
        return f"$6${salt}${digest}"

    def compute(self, password: bytes) -> bytes:
        """The digest `password` gives with this hash's salt and parameters."""
        if self.kind == 7:
            return hashlib.pbkdf2_hmac(
                "sha512", password, self.salt, self.iterations, len(self.digest) or HASH_BYTES
            )
        # Mosquitto 1.x pw__digest: SHA-512 over the password, then the salt.
        return hashlib.sha512(password + self.salt).digest()

    def verify(self, password: bytes) -> bool:
        """True if `password` matches (constant-time comparison)."""
        return hmac.compare_digest(self.compute(password), self.digest)


def _b64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str | bytes, iterations: int = PBKDF2_ITERATIONS) -> PasswordHash:
    """A new `$7$` hash of `password` with a fresh random salt."""
    raw = password.encode() if isinstance(password, str) else password
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", raw, salt, iterations, HASH_BYTES)
    return PasswordHash(7, salt, digest, iterations)


# Verifying against this for an unknown user makes "no such user" cost what a wrong
# password costs.
_DUMMY = hash_password(secrets.token_bytes(16))


class PasswordFile:
    """The users and hashes of one password file, in file order.

    `load` reads a file (raising `PasswordFileError` naming the line of a bad entry);
    `verify` answers a CONNECT; `set`/`delete`/`save` are what `mqttd passwd` uses.
    Lines that are not entries (comments) are kept and written back unchanged.
    """

    __slots__ = ("_lines", "path", "users")

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.users: dict[str, PasswordHash] = {}
        # Every line in order: a user name (an entry) or the text of a kept line.
        self._lines: list[tuple[bool, str]] = []

    def __len__(self) -> int:
        return len(self.users)

    def __contains__(self, username: object) -> bool:
        return username in self.users

    @classmethod
    def load(cls, path: str | Path) -> PasswordFile:
        """Read `path`; raise `PasswordFileError` if it cannot be read or has a bad entry."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PasswordFileError(f"password file {str(path)!r}: cannot read: {reason}") from exc
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: str | Path = "<text>") -> PasswordFile:
        """Parse the contents of a password file."""
        result = cls(path)
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip("\r\n")
            if line.startswith("#") or ":" not in line:
                result._lines.append((False, line))
                continue
            username, _, encoded = line.partition(":")
            try:
                parsed = PasswordHash.parse(encoded.strip())
            except ValueError as exc:
                raise PasswordFileError(
                    f"password file {str(path)!r} line {number}: user {username!r}: {exc}"
                ) from None
            if username not in result.users:
                result._lines.append((True, username))
            result.users[username] = parsed
        return result

    def verify(self, username: str, password: bytes | None) -> bool:
        """True if `username` is in the file and `password` is its password."""
        found = self.users.get(username)
        if found is None or password is None:
            _DUMMY.verify(password or b"")
            return False
        return found.verify(password)

    def set(self, username: str, password: str | bytes) -> None:
        """Add `username` or change its password (a fresh salt each time)."""
        check_username(username)
        if username not in self.users:
            self._lines.append((True, username))
        self.users[username] = hash_password(password)

    def delete(self, username: str) -> bool:
        """Remove `username`; False if it was not there."""
        if self.users.pop(username, None) is None:
            return False
        self._lines = [(u, text) for u, text in self._lines if not (u and text == username)]
        return True

    def format(self) -> str:
        """The file's text: kept lines and entries in their order."""
        out: list[str] = []
        for is_user, text in self._lines:
            out.append(f"{text}:{self.users[text].format()}" if is_user else text)
        return "".join(line + "\n" for line in out)

    def save(self, path: str | Path | None = None) -> None:
        """Write the file atomically (a temporary file renamed over it), mode 0600 if new."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the password file to")
        try:
            mode = target.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o600
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.format())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def check_username(username: str) -> None:
    """Raise ValueError for a user name a password file cannot hold."""
    if not username:
        raise ValueError("the user name is empty")
    for char in _FORBIDDEN_IN_USERNAME:
        if char in username:
            raise ValueError(f"the user name contains {char!r}")
    if len(username.encode()) > 65_535:
        raise ValueError("the user name is longer than 65535 bytes")


# -- the `mqttd passwd` command -------------------------------------------------------------

_PASSWD_DESCRIPTION = """\
Manage a password file in Mosquitto's format (mosquitto_passwd 2.x writes and reads the
same files): add a user or change its password, or delete a user. Passwords are stored
as salted PBKDF2-SHA512 hashes ($7$, 101 iterations); $6$ lines written by Mosquitto 1.x
are read and kept. Without -b the password is asked twice on the terminal.

Point [auth] password_file at the file and send SIGHUP (or restart) to apply changes."""

_PASSWD_EPILOG = """\
examples:
  mqttd passwd -c /etc/mqttd/passwd alice     create the file with user alice
  mqttd passwd /etc/mqttd/passwd bob          add bob (or change his password)
  mqttd passwd -b /etc/mqttd/passwd bob s3cret   batch mode: password on the command line
  mqttd passwd -D /etc/mqttd/passwd bob       delete bob"""


def add_passwd_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `passwd` command to the `mqttd` argument parser."""
    parser = commands.add_parser(
        "passwd",
        help="add, change or delete a user in a password file (Mosquitto's format)",
        description=_PASSWD_DESCRIPTION,
        epilog=_PASSWD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-D", dest="passwd_delete", action="store_true", help="delete USER from FILE"
    )
    group.add_argument(
        "-c",
        dest="passwd_create",
        action="store_true",
        help="create a new FILE (overwrites an existing one)",
    )
    parser.add_argument(
        "-b",
        dest="passwd_batch",
        action="store_true",
        help="batch mode: the password is the third argument (visible to other users "
        "of this machine in the process list; prefer the prompt)",
    )
    parser.add_argument("passwd_file", metavar="FILE", help="the password file")
    parser.add_argument("passwd_user", metavar="USER", help="the user name")
    parser.add_argument(
        "passwd_password", metavar="PASSWORD", nargs="?", help="with -b: the password"
    )


def run_passwd(args: argparse.Namespace) -> int:
    """Run `mqttd passwd` with parsed `args`; return the exit status (0 done, 1 failed)."""
    path = Path(args.passwd_file)
    user: str = args.passwd_user
    password: str | None = args.passwd_password
    if args.passwd_batch and (password is None or args.passwd_delete):
        return _fail("-b needs FILE USER PASSWORD, and cannot be combined with -D")
    if not args.passwd_batch and password is not None:
        return _fail("a PASSWORD argument needs -b (or leave it out to be prompted)")
    try:
        check_username(user)
    except ValueError as exc:
        return _fail(f"invalid user name: {exc}")
    try:
        if args.passwd_create:
            passwords = PasswordFile(path)
        else:
            if not path.exists():
                return _fail(f"{path} does not exist (use -c to create it)")
            passwords = PasswordFile.load(path)
        if args.passwd_delete:
            if not passwords.delete(user):
                return _fail(f"user {user} not found in {path}")
        else:
            if password is None:
                password = _prompt()
                if password is None:
                    return 1
            passwords.set(user, password)
        passwords.save(path)
    except (OSError, PasswordFileError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _fail(f"{path}: {reason}")
    return 0


def _prompt() -> str | None:
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Reenter password: ")
    except (EOFError, KeyboardInterrupt):
        print("", file=sys.stderr)
        return None
    if first != second:
        print("Error: Passwords do not match.", file=sys.stderr)
        return None
    if not first:
        print("Error: Empty password.", file=sys.stderr)
        return None
    return first


def _fail(message: str) -> int:
    print(f"mqttd passwd: error: {message}", file=sys.stderr)
    return 1
