"""Mutual TLS: client certificates required, and their Common Name used as the user name.

Certificates are made for each test module with the openssl command: a CA, a server
certificate for 127.0.0.1, client certificates for "sensor-7" and "sensor-8", and one
"intruder" certificate signed by a CA the broker does not trust.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .paho_client import V5, V311, PahoClient

ACL = """\
user sensor-7
topic readwrite sensors/7/#
topic read alerts/#

user sensor-8
topic readwrite sensors/8/#
"""

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl("req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return cert, key


def _signed(folder: Path, ca: tuple[Path, Path], cn: str, extensions: str) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{cn}.crt", folder / f"{cn}.key", folder / f"{cn}.csr"
    ext = folder / f"{cn}.ext"
    ext.write_text(extensions)
    _openssl("req", *_EC, "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    ca = _ca(folder, "test-ca")
    rogue = _ca(folder, "rogue-ca")
    server = _signed(
        folder, ca, "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth\n"
    )  # fmt: skip
    files = {"ca": ca[0], "server.crt": server[0], "server.key": server[1]}
    for cn, issuer in (("sensor-7", ca), ("sensor-8", ca), ("intruder", rogue)):
        cert, key = _signed(folder, issuer, cn, "extendedKeyUsage=clientAuth\n")
        files[f"{cn}.crt"], files[f"{cn}.key"] = cert, key
    return files


@pytest.fixture
def tls_broker(mqttd_factory: Callable[..., Any], pki: dict[str, Path], tmp_path: Path) -> Any:
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    config = f"""
[[listeners]]
name = "plain"
port = 0

[[listeners]]
name = "mtls"
port = 0
[listeners.tls]
certfile = "{pki["server.crt"]}"
keyfile = "{pki["server.key"]}"
cafile = "{pki["ca"]}"
require_certificate = true
use_identity_as_username = true

[[listeners]]
name = "mtls-ws"
type = "ws"
port = 0
[listeners.tls]
certfile = "{pki["server.crt"]}"
keyfile = "{pki["server.key"]}"
cafile = "{pki["ca"]}"
require_certificate = true
use_identity_as_username = true

[persistence]
enabled = false

[auth]
acl_file = "{acl}"
# Certificate identities are authentication, which turns anonymous access off (issue 14):
# the plain listener serves anonymous clients only because this says so.
allow_anonymous = true
"""
    server = mqttd_factory(config=config)
    (mtls,) = [lst for lst in server.listeners if lst.scheme == "mqtts"]
    (wss,) = [lst for lst in server.listeners if lst.scheme == "wss"]
    server.tls_port, server.wss_port = mtls.port, wss.port
    return server


def _client(
    server: Any, pki: dict[str, Path], cert: str | None, client_id: str, **kw: Any
) -> PahoClient:
    wss = kw.get("transport") == "websockets"
    port = server.wss_port if wss else server.tls_port
    client = PahoClient("127.0.0.1", port, client_id, **kw)
    client.client.tls_set(
        ca_certs=str(pki["ca"]),
        certfile=str(pki[f"{cert}.crt"]) if cert else None,
        keyfile=str(pki[f"{cert}.key"]) if cert else None,
    )
    return client


def _refused_in_the_handshake(client: PahoClient) -> bool:
    """True when the TLS handshake (or the first read after it) ends the connection."""
    try:
        client.connect(timeout=3.0, expect_success=False)
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError):
        return True
    finally:
        client.close()
    return client.connect_result is None or client.disconnected.is_set()


def test_the_certificate_name_is_the_user_name_for_the_acl(
    tls_broker: Any, pki: dict[str, Path]
) -> None:
    with _client(tls_broker, pki, "sensor-7", "s7", protocol=V5) as s7:
        s7.connect()
        assert s7.subscribe("sensors/7/#", 1) == [1]
        assert s7.subscribe("sensors/8/#", 1) == [0x87]
        s7.publish("sensors/7/temp", b"21.5", qos=1)
        assert s7.expect_message().payload == b"21.5"


def test_the_certificate_name_is_the_user_name_over_secure_websockets(
    tls_broker: Any, pki: dict[str, Path]
) -> None:
    with _client(tls_broker, pki, "sensor-7", "s7-ws", protocol=V5, transport="websockets") as s7:
        s7.connect()
        assert s7.subscribe("sensors/7/#", 1) == [1]
        assert s7.subscribe("sensors/8/#", 1) == [0x87]


def test_a_user_name_in_connect_does_not_override_the_certificate(
    tls_broker: Any, pki: dict[str, Path]
) -> None:
    with _client(tls_broker, pki, "sensor-8", "s8", protocol=V311) as s8:
        s8.client.username_pw_set("sensor-7", "anything")
        s8.connect()
        assert s8.subscribe("sensors/7/#", 1) == [0x80]  # sensor-8 it is
        assert s8.subscribe("sensors/8/#", 1) == [1]


@pytest.mark.parametrize("cert", [None, "intruder"], ids=["no certificate", "another CA"])
def test_a_client_without_a_trusted_certificate_is_refused(
    tls_broker: Any, pki: dict[str, Path], cert: str | None
) -> None:
    with _client(tls_broker, pki, "sensor-7", "control") as control:
        assert control.connect().reason_code == 0  # the listener itself works
    assert _refused_in_the_handshake(_client(tls_broker, pki, cert, "refused"))


def test_the_plain_loopback_listener_still_serves_anonymous_clients(
    tls_broker: Any, pki: dict[str, Path]
) -> None:
    # Anonymous clients have no ACL rules here, so they connect but may do nothing.
    plain = next(lst for lst in tls_broker.listeners if lst.scheme == "mqtt")
    with PahoClient("127.0.0.1", plain.port, "anon", protocol=V5) as anon:
        anon.connect()
        assert anon.subscribe("sensors/7/#", 0) == [0x87]
