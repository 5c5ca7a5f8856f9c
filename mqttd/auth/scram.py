"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5.0 enhanced authentication method.

The exchange, carried in the Authentication Data of CONNECT, AUTH and CONNACK (4.12)::

    client                                          server
    CONNECT  method=SCRAM-SHA-256  data=client-first   "n,,n=alice,r=<c-nonce>"
                        AUTH 0x18  data=server-first   "r=<c-nonce><s-nonce>,s=<salt>,i=4096"
    AUTH 0x18  data=client-final                       "c=biws,r=<nonce>,p=<ClientProof>"
                        CONNACK 0x00  data=server-final   "v=<ServerSignature>"

Re-authentication (AUTH 0x19 with a new client-first) runs the same exchange and ends
with AUTH 0x00 carrying the server-final message.

What is stored. The server never needs the password, only per user the salt, the
iteration count, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and ServerKey =
HMAC(SaltedPassword, "Server Key") (RFC 5802 section 3), written in PostgreSQL's
notation ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64). These
keys cannot be derived from another password hash (a PBKDF2-SHA512 hash of the password
file, say), so a user needs a SCRAM verifier to use SCRAM; the converse works: a
verifier also checks a plain CONNECT password (`ScramCredentials.verify_password`, which
`mqttd/security.py` calls for users of `[auth] scram_file`), so one verifier per user serves
both ways of logging in, 3.1.1 clients included.

A user file (`ScramUsers.load`) holds one ``username:verifier`` per line; make a line with
``python -m mqttd.auth.scram USERNAME`` (asks for the password).

Unknown users get a made-up salt derived from the user name and a server secret and
fail only at the proof, exactly like a wrong password, so the exchange does not tell
which user names exist. Channel binding (SCRAM-SHA-256-PLUS) is not offered.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import secrets
import stringprep
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .enhanced import AuthContext, Authenticator, AuthenticatorFactory, AuthStep

__all__ = [
    "DEFAULT_ITERATIONS",
    "METHOD",
    "ScramCredentials",
    "ScramSha256Authenticator",
    "ScramUsers",
    "saslprep",
]

METHOD = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096  # RFC 7677 section 4: at least 4096
_PREFIX = "SCRAM-SHA-256$"
_NONCE_BYTES = 18
_BAD_CREDENTIALS = 0x86  # Bad User Name or Password
_NOT_AUTHORIZED = 0x87


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) of a user name or password, for stored strings.

    Raises ValueError when `text` holds a prohibited or unassigned character or breaks
    the bidirectional rule of RFC 3454 section 6.
    """
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing to map, normalise or prohibit
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_a1,
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for c in normal:
        if any(test(c) for test in prohibited):
            raise ValueError(f"character U+{ord(c):04X} is prohibited by SASLprep")
    if any(stringprep.in_table_d1(c) for c in normal):
        if any(stringprep.in_table_d2(c) for c in normal):
            raise ValueError("mixed right-to-left and left-to-right text (RFC 3454 6)")
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            raise ValueError("right-to-left text must start and end right-to-left")
    return normal


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """One user's SCRAM-SHA-256 verifier: salt, iterations, StoredKey, ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> ScramCredentials:
        """Derive the verifier of `password` (a fresh random 16-byte salt by default)."""
        if iterations < 1:
            raise ValueError("iterations must be at least 1")
        salt = secrets.token_bytes(16) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt,
            iterations,
            hashlib.sha256(client_key).digest(),
            _hmac(salted, b"Server Key"),
        )

    def verify_password(self, password: str) -> bool:
        """True when `password` is this verifier's (a check for tools and tests; the broker
        does not consult SCRAM users for a plain CONNECT password)."""
        try:
            again = ScramCredentials.from_password(password, self.salt, self.iterations)
        except ValueError:
            return False
        return hmac.compare_digest(again.stored_key, self.stored_key)

    def encode(self) -> str:
        """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (PostgreSQL's form)."""
        return (
            f"{_PREFIX}{self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def decode(cls, text: str) -> ScramCredentials:
        """Parse `encode`'s form; ValueError names what is wrong."""
        if not text.startswith(_PREFIX):
            raise ValueError(f"a SCRAM verifier starts with {_PREFIX!r}")
        try:
            params, keys = text[len(_PREFIX) :].split("$")
            iterations_text, salt_text = params.split(":")
            stored_text, server_text = keys.split(":")
            iterations = int(iterations_text)
            salt = _unb64(salt_text)
            stored_key = _unb64(stored_text)
            server_key = _unb64(server_text)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"malformed SCRAM verifier: {exc}") from None
        if iterations < 1 or not salt or len(stored_key) != 32 or len(server_key) != 32:
            raise ValueError("malformed SCRAM verifier: bad iterations, salt or key length")
        return cls(salt, iterations, stored_key, server_key)


class ScramUsers:
    """The SCRAM user store: user name -> verifier, in memory (see `load` for the file)."""

    def __init__(self, users: Mapping[str, ScramCredentials] | None = None) -> None:
        self._users: dict[str, ScramCredentials] = dict(users or {})
        # Made-up salts of unknown users derive from this, so they stay the same for
        # one user name (a changing salt would tell the name is unknown).
        self._secret = secrets.token_bytes(32)

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, username: object) -> bool:
        return username in self._users

    def add(
        self, username: str, password: str, iterations: int = DEFAULT_ITERATIONS
    ) -> ScramCredentials:
        """Create (or replace) `username` with a verifier of `password`."""
        credentials = ScramCredentials.from_password(password, iterations=iterations)
        self._users[saslprep(username)] = credentials
        return credentials

    def set(self, username: str, credentials: ScramCredentials) -> None:
        """Store a verifier made elsewhere."""
        self._users[saslprep(username)] = credentials

    def get(self, username: str) -> ScramCredentials | None:
        """The verifier of `username` (already SASLprep-ed), None when unknown."""
        return self._users.get(username)

    def decoy(self, username: str) -> ScramCredentials:
        """Credentials nobody can match, stable per user name (for unknown users)."""
        salt = _hmac(self._secret, b"salt:" + username.encode())[:16]
        return ScramCredentials(salt, DEFAULT_ITERATIONS, secrets.token_bytes(32), b"\0" * 32)

    @classmethod
    def load(cls, path: str | Path) -> ScramUsers:
        """Read ``username:verifier`` lines; blank lines and ``#`` comments are skipped.

        Raises ValueError naming the file and line of the first bad line.
        """
        users: dict[str, ScramCredentials] = {}
        text = Path(path).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            username, sep, verifier = line.partition(":")
            try:
                if not sep or not username:
                    raise ValueError("expected username:SCRAM-SHA-256$...")
                users[saslprep(username)] = ScramCredentials.decode(verifier)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
        return cls(users)

    def dump(self) -> str:
        """The user file text of this store."""
        return "".join(f"{name}:{cred.encode()}\n" for name, cred in sorted(self._users.items()))

    def authenticator_factory(self) -> AuthenticatorFactory:
        """The factory to register under `METHOD` (`AuthMethods.register`)."""

        def make(context: AuthContext) -> Authenticator:
            return ScramSha256Authenticator(self.get, self.decoy)

        return make


_EXPECT_FIRST = 0
_EXPECT_FINAL = 1
_DONE = 2


def _decode_saslname(value: str) -> str:
    """RFC 5802 saslname: "=2C" is ",", "=3D" is "=", any other "=" is an error."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "=":
            code = value[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise ValueError("bad escape in a user name")
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_attr_val(text: str) -> bool:
    return len(text) >= 2 and text[0].isascii() and text[0].isalpha() and text[1] == "="


def _random_nonce() -> str:
    return _b64(secrets.token_bytes(_NONCE_BYTES))


def _valid_nonce(nonce: str) -> bool:
    # printable ASCII except "," (RFC 5802 section 7, "printable").
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


class ScramSha256Authenticator:
    """The server side of one SCRAM-SHA-256 exchange (an `Authenticator`)."""

    __slots__ = (
        "_client_first_bare",
        "_credentials",
        "_decoy",
        "_gs2_header",
        "_lookup",
        "_make_nonce",
        "_nonce",
        "_server_first",
        "_state",
        "_username",
    )

    def __init__(
        self,
        lookup: Callable[[str], ScramCredentials | None],
        decoy: Callable[[str], ScramCredentials],
        server_nonce: Callable[[], str] | None = None,
    ) -> None:
        """`lookup` finds a user's verifier, `decoy` makes one for unknown users;
        `server_nonce` (tests: RFC 7677's example) makes the server's part of the nonce."""
        self._lookup = lookup
        self._decoy = decoy
        self._make_nonce = server_nonce or _random_nonce
        self._state = _EXPECT_FIRST
        self._username = ""
        self._credentials: ScramCredentials | None = None
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def start(self, method: str, data: bytes | None) -> AuthStep:
        """client-first-message -> server-first-message."""
        if method != METHOD or self._state != _EXPECT_FIRST:
            return AuthStep.fail(_NOT_AUTHORIZED, "unexpected SCRAM message")
        try:
            text = (data or b"").decode("utf-8")
            flag, _, rest = text.partition(",")
            authzid, _, bare = rest.partition(",")
            if flag.startswith("p="):
                return AuthStep.fail(_NOT_AUTHORIZED, "SCRAM channel binding is not supported")
            if flag not in ("n", "y") or not bare:
                raise ValueError("bad GS2 header")
            attributes = bare.split(",")
            if len(attributes) < 2 or not attributes[0].startswith("n="):
                raise ValueError("client-first-message without n=")
            if not attributes[1].startswith("r="):
                raise ValueError("client-first-message without r=")
            if not all(_is_attr_val(extension) for extension in attributes[2:]):
                raise ValueError("bad extension")  # attr-val = ALPHA "=" value
            username = saslprep(_decode_saslname(attributes[0][2:]))
            client_nonce = attributes[1][2:]
            if not username or not _valid_nonce(client_nonce):
                raise ValueError("empty user name or bad nonce")
            if authzid and (
                not authzid.startswith("a=") or _decode_saslname(authzid[2:]) != username
            ):
                return AuthStep.fail(_NOT_AUTHORIZED, "SCRAM authzid differs from the user")
        except (UnicodeDecodeError, ValueError) as exc:
            return AuthStep.fail(_NOT_AUTHORIZED, f"malformed SCRAM client-first-message: {exc}")
        credentials = self._lookup(username)
        if credentials is None:
            credentials = self._decoy(username)
        self._username = username
        self._credentials = credentials
        self._gs2_header = text[: len(text) - len(bare)]
        self._client_first_bare = bare
        self._nonce = client_nonce + self._make_nonce()
        self._server_first = (
            f"r={self._nonce},s={_b64(credentials.salt)},i={credentials.iterations}"
        )
        self._state = _EXPECT_FINAL
        return AuthStep.proceed(self._server_first.encode())

    def continue_(self, data: bytes | None) -> AuthStep:
        """client-final-message -> server-final-message (SUCCESS) or FAIL."""
        if self._state != _EXPECT_FINAL or self._credentials is None:
            return AuthStep.fail(_NOT_AUTHORIZED, "unexpected SCRAM message")
        self._state = _DONE
        try:
            text = (data or b"").decode("utf-8")
            without_proof, sep, proof_text = text.rpartition(",p=")
            if not sep:
                raise ValueError("client-final-message without p=")
            attributes = without_proof.split(",")
            if len(attributes) < 2 or not attributes[0].startswith("c="):
                raise ValueError("client-final-message without c=")
            if _unb64(attributes[0][2:]) != self._gs2_header.encode():
                return AuthStep.fail(_NOT_AUTHORIZED, "SCRAM channel binding data differs")
            if attributes[1] != "r=" + self._nonce:
                return AuthStep.fail(_NOT_AUTHORIZED, "SCRAM nonce differs")
            proof = _unb64(proof_text)
        except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
            return AuthStep.fail(_NOT_AUTHORIZED, f"malformed SCRAM client-final-message: {exc}")
        credentials = self._credentials
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        client_signature = _hmac(credentials.stored_key, auth_message.encode())
        if len(proof) != len(client_signature):
            return AuthStep.fail(_BAD_CREDENTIALS, "SCRAM proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), credentials.stored_key):
            return AuthStep.fail(_BAD_CREDENTIALS, "wrong SCRAM proof")
        server_signature = _hmac(credentials.server_key, auth_message.encode())
        return AuthStep.success(f"v={_b64(server_signature)}".encode(), self._username)


def main(argv: list[str] | None = None) -> int:
    """``python -m mqttd.auth.scram USERNAME [ITERATIONS]``: print a user file line."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m mqttd.auth.scram USERNAME [ITERATIONS]", file=sys.stderr)
        return 2
    iterations = int(args[1]) if len(args) == 2 else DEFAULT_ITERATIONS
    password = getpass.getpass(f"password for {args[0]}: ")
    users = ScramUsers()
    users.add(args[0], password, iterations)
    sys.stdout.write(users.dump())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
