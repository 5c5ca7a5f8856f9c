"""The identity a verified TLS client certificate gives (`use_identity_as_username`)."""

from __future__ import annotations

from typing import Any

__all__ = ["certificate_identity"]


def certificate_identity(peercert: Any) -> str | None:
    """The subject's Common Name from `SSLObject.getpeercert()`, or None.

    `getpeercert()` returns an empty dict unless the certificate was verified against
    the listener's CA, so a name here is one the CA vouched for. When the subject has
    several CNs the last (most specific) one is taken, as OpenSSL's lookups do.
    """
    if not isinstance(peercert, dict):
        return None
    name: str | None = None
    for rdn in peercert.get("subject", ()):
        for attribute in rdn:
            if (
                len(attribute) == 2
                and attribute[0] == "commonName"
                and isinstance(attribute[1], str)
            ):
                name = attribute[1]
    return name
