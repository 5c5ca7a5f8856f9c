"""SCRAM-SHA-256 exchanges (5.0 4.12) on a raw socket: the steps the auth tests share.

paho cannot drive AUTH, so the tests send hand-made packets (`mqtt_raw`) and play the
client side with `support.v5.ScramClient`; these helpers are the exchange's steps, so a
test only spells out the step it is about.
"""

from __future__ import annotations

from mqtt_raw import (
    AUTH,
    AUTHENTICATION_METHOD,
    CONNACK,
    RawClient,
    decode_properties,
    gen_connect,
    prop_bin,
    prop_str,
    remaining_length,
)

from mqttd.auth.scram import METHOD
from support.v5 import ScramClient

AUTHENTICATION_DATA = 0x16


def gen_auth(rc: int, method: str | None, data: bytes | None = None) -> bytes:
    """AUTH (5.0 3.15): reason code and properties."""
    props = b""
    if method is not None:
        props += prop_str(AUTHENTICATION_METHOD, method)
    if data is not None:
        props += prop_bin(AUTHENTICATION_DATA, data)
    body = bytes([rc]) + remaining_length(len(props)) + props
    return bytes([0xF0]) + remaining_length(len(body)) + body


def auth_props(packet_body: bytes, offset: int) -> dict[int, list[object]]:
    """The properties of an AUTH or CONNACK body from `offset`, by identifier."""
    return decode_properties(packet_body, offset)[0]  # type: ignore[return-value]


def scram_connect(
    client: RawClient,
    client_id: str,
    scram: ScramClient,
    properties: bytes = b"",
    clean_start: bool = True,
) -> bytes:
    """CONNECT with SCRAM's client-first; returns the server-first-message."""
    client.send(
        gen_connect(
            client_id,
            proto_ver=5,
            clean_session=clean_start,
            properties=properties
            + prop_str(AUTHENTICATION_METHOD, METHOD)
            + prop_bin(AUTHENTICATION_DATA, scram.client_first()),
        )
    )
    return server_first_message(client)


def server_first_message(client: RawClient) -> bytes:
    """The broker's AUTH 0x18 (continue) with SCRAM's server-first-message as its data."""
    auth = client.expect_type(AUTH)
    assert auth.body[0] == 0x18  # Continue authentication [MQTT-4.12.0-2]
    props = auth_props(auth.body, 1)
    assert props[AUTHENTICATION_METHOD] == [METHOD]  # [MQTT-4.12.0-5]
    (server_first,) = props[AUTHENTICATION_DATA]
    assert isinstance(server_first, bytes)
    return server_first


def scram_login(
    client: RawClient,
    client_id: str,
    scram: ScramClient,
    properties: bytes = b"",
    clean_start: bool = True,
) -> int:
    """The whole CONNECT/AUTH exchange; returns the CONNACK's reason code."""
    server_first = scram_connect(client, client_id, scram, properties, clean_start)
    client.send(gen_auth(0x18, METHOD, scram.client_final(server_first)))
    return client.expect_type(CONNACK).reason_code()


def reauthenticate(client: RawClient, scram: ScramClient) -> bytes:
    """AUTH 0x19 with a new client-first [MQTT-4.12.1-1]; returns the server-first."""
    client.send(gen_auth(0x19, METHOD, scram.client_first()))
    return server_first_message(client)
