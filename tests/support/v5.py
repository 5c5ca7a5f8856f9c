"""Helpers of the MQTT 5.0 tests: a paho MQTTv5 client with any CONNECT properties, and
the client side of SCRAM-SHA-256 written from RFC 5802 (independent of mqttd's server)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from integration.paho_client import V5, ConnectResult, PahoClient, Received
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

__all__ = ["ScramClient", "V5Client", "paho_props", "props_of", "wait_for"]


def props_of(received: Received | ConnectResult) -> Any:
    """The properties of a message or CONNACK paho received, which must have some.

    paho sets each property as an attribute named after it (`ResponseTopic`, ...), which
    a type checker cannot see; the value is typed Any so tests read them by those names.
    """
    assert received.properties is not None
    return received.properties


def paho_props(packet_type: int, **values: Any) -> PahoProperties:
    """paho Properties of `packet_type` (PacketTypes.PUBLISH, ...) set by paho's names."""
    props = PahoProperties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll `predicate` until it is true (the broker runs on another thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s: {what}")
        time.sleep(0.01)


class V5Client(PahoClient):
    """A paho MQTTv5 client whose CONNECT carries the given properties (paho's names:
    ``TopicAliasMaximum=5, RequestResponseInformation=1, ...``)."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        *,
        connect_properties: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(host, port, client_id, protocol=V5, **kw)
        self.connect_properties = dict(connect_properties or {})
        if self.session_expiry is not None:
            self.connect_properties.setdefault("SessionExpiryInterval", self.session_expiry)

    def will_set(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, **props: Any
    ) -> None:
        """A will with 5.0 will properties (WillDelayInterval=..., ...)."""
        properties = paho_props(PacketTypes.WILLMESSAGE, **props) if props else None
        self.client.will_set(topic, payload, qos, retain, properties)

    def connect_properties_for_paho(self) -> PahoProperties | None:
        """`connect_properties` (Session Expiry Interval among them) as paho's Properties."""
        if not self.connect_properties:
            return None
        return paho_props(PacketTypes.CONNECT, **self.connect_properties)

    def publish_v5(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, **props: Any
    ) -> mqtt.MQTTMessageInfo:
        """Publish with PUBLISH properties by paho's names; returns paho's info object."""
        properties = paho_props(PacketTypes.PUBLISH, **props) if props else None
        return self.client.publish(topic, payload, qos, retain, properties)


# -- SCRAM-SHA-256, client side (RFC 5802 section 3 and 5, RFC 7677) --------------------


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange (no channel binding: gs2 "n,,")."""

    def __init__(self, username: str, password: str, nonce: str | None = None) -> None:
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        escaped = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={escaped},r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        """The client-first-message (CONNECT's Authentication Data)."""
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes, *, proof_override: bytes | None = None) -> bytes:
        """The client-final-message answering the server-first-message."""
        text = server_first.decode()
        attrs = dict(item.split("=", 1) for item in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert nonce.startswith(self.nonce), "the server nonce must extend ours"
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        if proof_override is not None:
            proof = proof_override
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> bool:
        """True when the server proved it knows the verifier ("v=" + ServerSignature)."""
        expected = b"v=" + base64.b64encode(self.server_signature)
        return hmac.compare_digest(server_final, expected)
