"""The typed configuration: dataclasses loaded from TOML plus command-line overrides.

Theory of operation. A `Config` is a tree of slotted dataclasses, one per TOML section.
Each field's type hint says what TOML value it takes, and its `metadata` carries what
the type cannot: the allowed range (`min`/`max`) or set of values (`choices`) and a
one-line `doc`. `load_config` walks that tree generically (`_build`): nothing here
hand-checks one key, so a new setting is one new field. Every problem found becomes
ONE line naming the key path, the value and what is allowed, e.g. (one line, wrapped)::

    config error: limits.max_inflight_mesages: unknown key (did you mean
    limits.max_inflight_messages?)

and all lines of one load are raised together in a `ConfigError`, so a user fixes the
whole file in one go.

The `[limits]` and `[mqtt]` sections are the core's `BrokerSettings` split in two (numbers
the operator tunes, and features CONNACK advertises); their defaults are read from
`BrokerSettings` itself, so the two cannot drift apart. `Config.broker_settings()` joins
them back. `config/mqttd.toml` documents every key with its default.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from .broker.settings import DEFAULT_REASONS, BrokerSettings, DeadLetterSettings, DropReason
from .protocol.errors import TopicFilterInvalid
from .protocol.topics import validate_topic_filter

__all__ = [
    "AuthConfig",
    "BridgeConfig",
    "BridgeTLSConfig",
    "BridgeTopicConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DeadLetterConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "MetricsConfig",
    "MqttConfig",
    "Overrides",
    "PersistenceConfig",
    "SysConfig",
    "TLSConfig",
    "config_from_dict",
    "load_config",
]

T = TypeVar("T")

# The core's own defaults: the [limits] and [mqtt] sections start from these.
_CORE = BrokerSettings()

_U16 = 65_535
_U32 = 0xFFFF_FFFF


class ConfigError(Exception):
    """A configuration that cannot be used; `lines` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def setting(
    default: T,
    doc: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[object, ...] | None = None,
) -> T:
    """A config field: its default, a one-line description and the allowed values."""
    metadata = {"doc": doc, "min": min, "max": max, "choices": choices}
    return field(default=default, metadata=metadata)


def _doc(text: str) -> dict[str, str]:
    """The metadata of a field whose type says all there is to check (tables, arrays)."""
    return {"doc": text}


@dataclass(slots=True)
class TLSConfig:
    """`[listeners.tls]`: serve this listener over TLS (mqtts:// or wss://)."""

    certfile: str = setting("", "PEM server certificate (chain); required")
    keyfile: str = setting("", "PEM private key; empty when certfile also holds the key")
    cafile: str = setting("", "PEM CA bundle to verify client certificates; empty = none")
    require_certificate: bool = setting(
        False, "refuse clients without a certificate signed by cafile (mutual TLS)"
    )
    min_version: str = setting("1.2", "oldest TLS version accepted", choices=("1.2", "1.3"))
    use_identity_as_username: bool = setting(
        False,
        "the client certificate's Common Name is the user name, no password asked "
        "(needs require_certificate)",
    )


@dataclass(slots=True)
class ListenerConfig:
    """`[[listeners]]`: one address the broker accepts connections on."""

    name: str = setting(
        "", "names the listener in logs and ACLs; empty = the scheme (mqtt, mqtts, ws, wss)"
    )
    type: str = setting("mqtt", "mqtt = MQTT over TCP, ws = over WebSocket", choices=("mqtt", "ws"))
    host: str = setting(
        "127.0.0.1", 'address to bind; 0.0.0.0 = all IPv4, :: = all IPv6, "" = both'
    )
    port: int = setting(
        1883, "TCP port; 0 = any free port (the ready line says which)", min=0, max=_U16
    )
    max_connections: int = setting(
        0, "open connections at most (mqtt listeners only); 0 = unlimited", min=0
    )
    path: str = setting("/mqtt", "ws: the HTTP path of MQTT over WebSocket")
    allowed_origins: list[str] = field(
        default_factory=list,
        metadata=_doc(
            'ws: Origins a browser may connect from besides the listener\'s own; ["*"] = any'
        ),
    )
    trust_proxy: bool = setting(False, "ws: take the client address from X-Forwarded-For")
    dashboard: bool = setting(True, "ws: serve the live dashboard on GET /")
    subprotocols: list[str] = field(
        default_factory=lambda: ["mqtt", "mqttv3.1"],
        metadata=_doc("ws: WebSocket subprotocols accepted, preferred first"),
    )
    max_size: int = setting(
        0,
        "ws: largest WebSocket frame or message, bytes; 0 = limits.max_packet_size",
        min=0,
        max=268_435_455,
    )
    compression: bool = setting(False, "ws: accept permessage-deflate when a client offers it")
    tls: TLSConfig | None = field(default=None, metadata=_doc("TLS settings; absent = plain TCP"))

    @property
    def scheme(self) -> str:
        """The URL scheme this listener serves: mqtt, mqtts, ws or wss."""
        return self.type + ("s" if self.tls is not None else "")


@dataclass(slots=True)
class LimitsConfig:
    """`[limits]`: the numbers of `BrokerSettings` an operator tunes."""

    connect_timeout: float = setting(
        _CORE.connect_timeout,
        "seconds a new socket may stay without sending CONNECT",
        min=0.1,
        max=3600,
    )
    max_packet_size: int = setting(
        _CORE.max_packet_size,
        "largest packet accepted, bytes (advertised to 5.0 clients)",
        min=16,
        max=268_435_455,
    )
    max_connect_size: int = setting(
        _CORE.max_connect_size,
        "bytes a socket may send before its CONNECT is accepted (the CONNECT, AUTH "
        "packets); 0 = max_packet_size",
        min=0,
        max=268_435_455,
    )
    max_inflight_messages: int = setting(
        _CORE.max_inflight_messages,
        "QoS 1/2 messages sent to one session and not yet acknowledged",
        min=1,
        max=_U16,
    )
    receive_maximum: int = setting(
        _CORE.receive_maximum,
        "QoS 1/2 publishes one 5.0 client may have unacknowledged",
        min=1,
        max=_U16,
    )
    max_queued_messages: int = setting(
        _CORE.max_queued_messages,
        "messages queued per offline or slow session; 0 = unlimited",
        min=0,
    )
    max_queued_bytes: int = setting(
        _CORE.max_queued_bytes, "payload bytes queued per session; 0 = unlimited", min=0
    )
    queue_overflow: str = setting(
        _CORE.queue_overflow,
        "what a full queue drops: the new message or the oldest one",
        choices=("drop_new", "drop_oldest"),
    )
    max_publisher_pause: float = setting(
        _CORE.max_publisher_pause,
        "seconds publishers stay paused for a connected session that drains nothing, "
        "before its queue falls back to queue_overflow; 0 = no limit",
        min=0,
        max=86_400,
    )
    topic_alias_maximum: int = setting(
        _CORE.topic_alias_maximum,
        "topic aliases one 5.0 client may define; 0 = none",
        min=0,
        max=_U16,
    )
    max_keepalive: int = setting(
        _CORE.max_keepalive,
        "longest keep alive granted, seconds (5.0 Server Keep Alive)",
        min=1,
        max=_U16,
    )
    max_session_expiry_interval: int = setting(
        _CORE.max_session_expiry_interval,
        "longest session expiry granted, seconds",
        min=0,
        max=_U32,
    )
    # [MQTT-3.1.3-5]: a server must accept client identifiers of 1 to 23 characters.
    max_client_id_length: int = setting(
        _CORE.max_client_id_length, "longest client identifier accepted", min=23, max=_U16
    )
    max_topic_length: int = setting(
        _CORE.max_topic_length, "longest topic name or filter accepted, bytes", min=1, max=_U16
    )
    max_topic_levels: int = setting(
        _CORE.max_topic_levels, "most '/'-separated levels in a topic; 0 = unlimited", min=0
    )
    max_subscriptions_per_client: int = setting(
        _CORE.max_subscriptions_per_client,
        "subscriptions one session may hold; 0 = unlimited",
        min=0,
    )
    max_connections: int = setting(
        _CORE.max_connections,
        "open connections over every listener together; 0 = unlimited",
        min=0,
    )
    connection_rate: float = setting(
        _CORE.connection_rate,
        "CONNECTs a second accepted from one source address (5.0: 0x9F); 0 = unlimited",
        min=0,
    )
    connection_burst: int = setting(
        _CORE.connection_burst,
        "CONNECTs one source address may make at once before connection_rate applies",
        min=1,
    )
    max_publish_rate: float = setting(
        _CORE.max_publish_rate,
        "PUBLISH packets a second from one client; more are slowed down (never dropped) "
        "by pausing its reads; 0 = unlimited",
        min=0,
    )
    publish_burst: int = setting(
        _CORE.publish_burst,
        "PUBLISH packets one client may send at once before max_publish_rate applies",
        min=1,
    )
    message_size_limit: int = setting(
        _CORE.message_size_limit,
        "largest payload accepted, bytes (bigger ones are acknowledged and dropped, 5.0: "
        "0x95; a will: CONNACK refused); 0 = no limit",
        min=0,
        max=268_435_455,
    )
    max_inflight_bytes: int = setting(
        _CORE.max_inflight_bytes,
        "payload bytes of QoS 1/2 messages in flight to one session (one message always "
        "may be); 0 = no limit",
        min=0,
    )
    persistent_client_expiration: int = setting(
        _CORE.persistent_client_expiration,
        "seconds a 3.1/3.1.1 session with clean session 0 outlives its connection; 0 = forever",
        min=0,
        max=_U32,
    )


@dataclass(slots=True)
class MqttConfig:
    """`[mqtt]`: the protocol features of `BrokerSettings` (advertised in CONNACK)."""

    retain_available: bool = setting(_CORE.retain_available, "keep retained messages")
    wildcard_subscription_available: bool = setting(
        _CORE.wildcard_subscription_available, "accept + and # in subscriptions"
    )
    subscription_identifier_available: bool = setting(
        _CORE.subscription_identifier_available, "accept 5.0 subscription identifiers"
    )
    shared_subscription_available: bool = setting(
        _CORE.shared_subscription_available, "accept $share/GROUP/filter subscriptions"
    )
    maximum_qos: int = setting(
        _CORE.maximum_qos,
        "highest QoS granted to subscriptions and accepted in publishes",
        choices=(0, 1, 2),
    )
    allow_zero_length_client_id: bool = setting(
        _CORE.allow_zero_length_client_id, "assign an identifier to clients that send none"
    )
    client_id_prefix: str = setting(
        _CORE.client_id_prefix, "prefix of the client identifiers the broker assigns"
    )
    retry_interval: float = setting(
        _CORE.retry_interval, "seconds before an unacknowledged QoS 1/2 message is resent", min=1.0
    )
    server_topic_aliases: bool = setting(
        _CORE.server_topic_aliases,
        "give topic aliases to 5.0 clients whose CONNECT allows them (least recently used "
        "alias reused)",
    )
    validate_payload_format: bool = setting(
        _CORE.validate_payload_format,
        "check that payloads marked UTF-8 (Payload Format Indicator 1) are; refuse with 0x99",
    )
    upgrade_outgoing_qos: bool = setting(
        _CORE.upgrade_outgoing_qos,
        "deliver at the subscription's QoS even above the message's (not MQTT; Mosquitto's)",
    )
    pubrec_first: bool = setting(
        _CORE.pubrec_first,
        "QoS 2: send PUBREC before passing the message on, as Mosquitto (needs persistence "
        "off: with SQLite a PUBREC waits for the commit of what it acknowledges)",
    )
    response_information: str = setting(
        _CORE.response_information,
        "5.0 Response Information for clients that request it; {client_id} is replaced; "
        '"" = never sent',
    )


@dataclass(slots=True)
class PersistenceConfig:
    """`[persistence]`: where retained messages and persistent sessions are kept."""

    enabled: bool = setting(True, "keep state in SQLite; false = memory only, lost on exit")
    path: str = setting(
        "./data/mqttd.db",
        'SQLite file (relative to the working directory; its directory is created); ":memory:" '
        "= memory only",
    )
    durability: str = setting(
        "safe",
        "safe = acknowledge after the commit reached the disk (fsync); fast = acknowledge "
        "at once, commits still batched, no fsync per commit: a crash may lose messages "
        "acknowledged in the last commit_interval_ms, a power cut those since the last "
        "checkpoint",
        choices=("safe", "fast"),
    )
    commit_interval_ms: int = setting(
        5,
        "longest a write waits so that it shares one transaction with others (group "
        "commit); 0 = commit as soon as the writer is free",
        min=0,
        max=10_000,
    )
    commit_batch: int = setting(5000, "most writes in one transaction", min=1, max=1_000_000)


@dataclass(slots=True)
class LogConfig:
    """`[log]`: how mqttd logs: always to stderr, optionally to a file and to syslog."""

    level: str = setting(
        "info", "least severe level logged", choices=("debug", "info", "warning", "error")
    )
    format: str = setting(
        "text", "text = one readable line per event, json = JSON lines", choices=("text", "json")
    )
    file: str = setting("", "also write the log to this file, rotated by size; empty = none")
    max_bytes: int = setting(
        10_485_760, "file: rotate when it reaches this many bytes", min=1024, max=2**40
    )
    backups: int = setting(5, "file: rotated files kept (FILE.1 ... FILE.N)", min=0, max=1000)
    syslog: str = setting(
        "",
        'also send the log to syslog: a socket path ("/dev/log") or "host:port" (UDP); '
        "empty = none",
    )


@dataclass(slots=True)
class SysConfig:
    """`[sys]`: the $SYS/broker/... topics (Mosquitto's names and sys_interval)."""

    interval: int = setting(
        10, "seconds between $SYS updates; 0 = no $SYS topics", min=0, max=86_400
    )


@dataclass(slots=True)
class MetricsConfig:
    """`[metrics]`: the Prometheus endpoint (GET /metrics) and GET /health, over HTTP."""

    enabled: bool = setting(False, "serve /metrics and /health on their own HTTP listener")
    host: str = setting("127.0.0.1", 'address to bind; 0.0.0.0 = all IPv4, "" = all')
    port: int = setting(9883, "TCP port; 0 = any free port", min=0, max=_U16)


@dataclass(slots=True)
class AdminTLSConfig:
    """`[admin.tls]`: serve the admin API over HTTPS."""

    certfile: str = setting("", "PEM server certificate (chain); required")
    keyfile: str = setting("", "PEM private key; empty when certfile also holds the key")


@dataclass(slots=True)
class AdminConfig:
    """`[admin]`: the admin HTTP API (docs/admin.md) and `mqttd ctl`'s endpoint."""

    enabled: bool = setting(False, "serve the admin API (/api/v1/...) on its own HTTP listener")
    host: str = setting(
        "127.0.0.1", "address to bind; off loopback a credential is always required"
    )
    port: int = setting(9884, "TCP port; 0 = any free port", min=0, max=_U16)
    api_key_file: str = setting(
        "", 'API keys, one "name:sha256:HEX" line each (mqttd ctl keygen NAME); empty = none'
    )
    users: list[str] = field(
        default_factory=list,
        metadata=_doc("users of auth.password_file with the admin role (HTTP Basic)"),
    )
    cors_origins: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "more dashboard origins that may call the API (the ws listeners' own are allowed)"
        ),
    )
    tls: AdminTLSConfig | None = field(
        default=None, metadata=_doc("HTTPS settings; absent = plain HTTP")
    )


@dataclass(slots=True)
class AuthConfig:
    """`[auth]`: who may connect and what each client may do (SECURITY.md tells more)."""

    password_file: str = setting(
        "", "Mosquitto-format password file (mqttd passwd writes it); empty = none"
    )
    acl_file: str = setting(
        "", "Mosquitto-format ACL file; empty = every client may publish and subscribe to all"
    )
    allow_anonymous: bool | None = setting(
        None,
        "clients without a user name: true = on every listener, false = nowhere; "
        "absent = on loopback listeners only, while no authentication is configured",
    )
    plugin: str = setting("", '"package.module:factory" of an auth plugin; empty = none')
    plugin_options: dict[str, Any] = field(
        default_factory=dict, metadata=_doc("the table given to the plugin's factory")
    )
    scram_file: str = setting(
        "",
        "SCRAM-SHA-256 user file for MQTT 5 enhanced authentication "
        "(python -m mqttd.auth.scram USER writes a line); empty = no enhanced authentication",
    )


@dataclass(slots=True)
class DeadLetterConfig:
    """`[dead_letter]`: publish what the broker drops (docs/dead-letters.md).

    Drops are counted by reason ($SYS, metrics) whether or not this is enabled.
    """

    enabled: bool = setting(
        False, 'publish each message dropped for one of `reasons` to "{prefix}/{reason}/{topic}"'
    )
    prefix: str = setting(
        "$dead", 'first topic level(s) of dead letters; a leading "$" hides them from "#"'
    )
    reasons: list[str] = field(
        default_factory=lambda: [r.value for r in DropReason if r in DEFAULT_REASONS],
        metadata={
            "doc": "the drop reasons that are published (all are counted)",
            "choices": tuple(r.value for r in DropReason),
        },
    )
    max_rate: float = setting(
        100.0,
        "dead letters a second at most, on average; the excess is counted, not published",
        min=0.001,
    )
    burst: int = setting(100, "dead letters at once before max_rate applies", min=1)

    def settings(self) -> DeadLetterSettings:
        """The core's `DeadLetterSettings`."""
        return DeadLetterSettings(
            self.enabled,
            self.prefix,
            frozenset(DropReason(r) for r in self.reasons),
            self.max_rate,
            self.burst,
        )


@dataclass(slots=True)
class BridgeTLSConfig:
    """`[bridge.tls]`: connect to the remote broker over TLS."""

    cafile: str = setting(
        "", "PEM CA bundle that signs the remote's certificate; empty = the system's CAs"
    )
    certfile: str = setting("", "PEM client certificate (chain) for mutual TLS; empty = none")
    keyfile: str = setting("", "PEM private key of certfile; empty when certfile holds it")
    verify: bool = setting(
        True, "check the remote's certificate and host name; false = encrypt only (insecure)"
    )
    server_hostname: str = setting(
        "", "name checked in the remote's certificate and sent as SNI; empty = the address's host"
    )


@dataclass(slots=True)
class BridgeTopicConfig:
    """One `[[bridge.topics]]` rule: Mosquitto's `topic pattern direction qos local remote`."""

    pattern: str = setting(
        "",
        'topic filter shared (+ and # allowed); "" = the single topic local_prefix <-> '
        "remote_prefix",
    )
    direction: str = setting(
        "out", "out = local to remote, in = remote to local, both", choices=("out", "in", "both")
    )
    qos: int = setting(
        0, "QoS of the bridge's subscriptions: the most a message keeps", choices=(0, 1, 2)
    )
    local_prefix: str = setting("", "put before pattern on the local broker (no wildcards)")
    remote_prefix: str = setting("", "put before pattern on the remote broker (no wildcards)")


@dataclass(slots=True)
class BridgeConfig:
    """`[[bridge]]`: a connection to another broker and the topics it carries (docs/bridges.md)."""

    name: str = setting("", "names the bridge in logs, $SYS and metrics; required, unique")
    addresses: list[str] = field(
        default_factory=list,
        metadata=_doc('"host:port" of the remote broker, then fallbacks, tried in order'),
    )
    tls: BridgeTLSConfig | None = field(
        default=None, metadata=_doc("TLS to the remote; absent = plain TCP")
    )
    username: str = setting("", "user name on the remote broker; empty = none")
    password: str = setting("", "password on the remote broker; empty = none")
    client_id: str = setting(
        "", 'client id on the remote; empty = "mqttd-bridge-<name>-<hostname>"'
    )
    local_username: str = setting(
        "", "user name of the bridge on this broker (for auth and ACLs); empty = none"
    )
    local_password: str = setting("", "password of local_username on this broker")
    protocol_version: int = setting(4, "4 = MQTT 3.1.1, 5 = MQTT 5.0", choices=(4, 5))
    clean_start: bool = setting(
        False, "start a fresh session on the remote at every connection (3.1.1: clean session)"
    )
    session_expiry: int = setting(
        _U32,
        "5.0: seconds the remote keeps the session; 4294967295 = never expires",
        min=0,
        max=_U32,
    )
    keepalive: int = setting(60, "seconds between keep alive pings to the remote", min=1, max=_U16)
    try_private: bool = setting(
        True, "3.1.1: tell the remote it is a bridge (level 0x84, Mosquitto's); dropped if refused"
    )
    connect_timeout: float = setting(
        10.0, "seconds allowed for TCP, TLS and CONNACK together", min=0.1, max=3600
    )
    reconnect_delay_min: float = setting(
        1.0,
        "first delay before reconnecting, seconds (then growing with jitter)",
        min=0.01,
        max=3600,
    )
    reconnect_delay_max: float = setting(
        30.0, "longest delay between reconnect attempts, seconds", min=0.01, max=86_400
    )
    start_type: str = setting(
        "automatic",
        "automatic = connect at start and after every loss; lazy = connect when threshold "
        "messages wait, disconnect after idle_timeout; once = connect at start, never again",
        choices=("automatic", "lazy", "once"),
    )
    threshold: int = setting(10, "lazy: messages waiting that start the connection", min=1)
    idle_timeout: float = setting(
        60.0, "lazy: seconds without a message either way before disconnecting", min=0.01
    )
    round_robin: bool = setting(
        False,
        "after a loss try the next address (true) rather than starting from the first",
    )
    notifications: bool = setting(
        True, 'publish the bridge state, retained "1" connected / "0" not, to notification_topic'
    )
    notification_topic: str = setting(
        "", 'topic of the bridge state; "" = "$SYS/broker/connection/<name>/state"'
    )
    notifications_local_only: bool = setting(
        True,
        "publish the state on this broker only; false = on the remote too (its will says 0)",
    )
    max_queued_messages: int = setting(
        10_000, "QoS 1/2 messages waiting for the remote, at most; 0 = unlimited", min=0
    )
    queue_overflow: str = setting(
        "drop_new",
        "what a full bridge queue drops: the new message or the oldest one",
        choices=("drop_new", "drop_oldest"),
    )
    topics: list[BridgeTopicConfig] = field(
        default_factory=list, metadata=_doc("the topic rules, written [[bridge.topics]]")
    )


@dataclass(slots=True)
class ClusterConfig:
    """`[cluster]`: several mqttd processes act as one broker over NATS (docs/cluster.md)."""

    enabled: bool = setting(False, "join a cluster through NATS; false = a single broker")
    name: str = setting(
        "mqttd",
        "the cluster's name: prefix of its NATS subjects and KV buckets (letters, digits, "
        "- and _); nodes with the same name form one broker",
    )
    node: str = setting(
        "", "this node's name, unique in the cluster (letters, digits, - and _); empty = host name"
    )
    urls: list[str] = field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        metadata=_doc("NATS servers (nats:// or tls://), tried in order; JetStream required"),
    )
    user: str = setting("", "NATS user name; empty = none")
    password: str = setting("", "password of user")
    token: str = setting("", "NATS authentication token, instead of user and password")
    credentials_file: str = setting("", "NATS .creds file (JWT and NKey seed); empty = none")
    tls_ca_file: str = setting("", "PEM CA bundle to verify the NATS servers; empty = system CAs")
    tls_cert_file: str = setting("", "PEM client certificate for NATS (mutual TLS); empty = none")
    tls_key_file: str = setting("", "PEM private key of tls_cert_file")
    replicas: int = setting(
        1,
        "copies JetStream keeps of the cluster's KV buckets (1 per NATS server at most)",
        min=1,
        max=5,
    )
    connect_timeout: float = setting(
        5.0, "seconds allowed to reach NATS at start-up", min=0.1, max=3600
    )
    request_timeout: float = setting(
        2.0, "seconds one JetStream request (KV read or write) may take", min=0.1, max=600
    )
    heartbeat_interval: float = setting(
        1.0, "seconds between this node's liveness heartbeats", min=0.1, max=3600
    )
    node_timeout: float = setting(
        5.0,
        "seconds without a heartbeat after which a node counts as gone and the others "
        "publish its clients' wills (at least twice heartbeat_interval); a node cut off "
        "from NATS this long, less half an interval, closes its clients (0x9C)",
        min=0.2,
        max=86_400,
    )
    durable_sessions: bool = setting(
        True,
        "keep persistent sessions in JetStream (stream replicas as `replicas`): QoS 1/2 "
        "acknowledgements wait for it, and a session moves to the node its client "
        "connects to; false = sessions stay on their node's store",
    )
    message_retention: float = setting(
        3600.0,
        "seconds JetStream keeps each QoS 1/2 message (durable_sessions): a session whose "
        "node died gets what was published for it in that time and never reached it",
        min=1,
        max=365 * 86_400,
    )
    shared_ack_wait: float = setting(
        10.0,
        "seconds after which a QoS 1/2 message of a $share group that a node took and did "
        "not settle goes to another member (durable_sessions): how soon a dead node's "
        "unacknowledged share messages move; live nodes renew their hold every third of it",
        min=0.5,
        max=86_400,
    )


@dataclass(slots=True)
class Config:
    """The whole configuration of one mqttd process."""

    listeners: list[ListenerConfig] = field(
        default_factory=lambda: [ListenerConfig(name="mqtt")],
        metadata=_doc("where clients connect; default one mqtt listener on 127.0.0.1:1883"),
    )
    limits: LimitsConfig = field(default_factory=LimitsConfig, metadata=_doc("core limits"))
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata=_doc("protocol features"))
    persistence: PersistenceConfig = field(
        default_factory=PersistenceConfig, metadata=_doc("durable state")
    )
    log: LogConfig = field(default_factory=LogConfig, metadata=_doc("logging"))
    sys: SysConfig = field(default_factory=SysConfig, metadata=_doc("$SYS topics"))
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig, metadata=_doc("Prometheus metrics and health check")
    )
    dead_letter: DeadLetterConfig = field(
        default_factory=DeadLetterConfig, metadata=_doc("dead letters of dropped messages")
    )
    admin: AdminConfig = field(default_factory=AdminConfig, metadata=_doc("the admin API"))
    auth: AuthConfig = field(
        default_factory=AuthConfig, metadata=_doc("authentication and authorisation")
    )
    bridge: list[BridgeConfig] = field(
        default_factory=list, metadata=_doc("bridges to other brokers; none by default")
    )
    cluster: ClusterConfig = field(
        default_factory=ClusterConfig, metadata=_doc("cluster of nodes over NATS")
    )

    def broker_settings(self) -> BrokerSettings:
        """The core's settings: `[limits]` and `[mqtt]` joined field by field."""
        values: dict[str, Any] = {}
        for part in (self.limits, self.mqtt):
            for f in fields(part):
                values[f.name] = getattr(part, f.name)
        return BrokerSettings(**values)


@dataclass(slots=True)
class Overrides:
    """Settings given on the command line; None leaves the file's (or default) value.

    `host` applies to every listener (`--host 0.0.0.0` exposes all of them), `port` to
    the first one. `db` sets the SQLite path and turns persistence on.
    """

    host: str | None = None
    port: int | None = None
    db: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    ws_port: int | None = None


def load_config(path: str | Path | None = None, overrides: Overrides | None = None) -> Config:
    """Read `path` (TOML; None = embedded defaults), apply `overrides`, validate.

    Raises `ConfigError` carrying one line per problem.
    """
    if path is not None:
        return config_from_dict(read_config_file(path, overrides))
    raw: dict[str, Any] = {}
    if overrides is not None:
        _apply_overrides(raw, overrides)
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document into a `Config`; raise `ConfigError` if it is wrong."""
    config, errors = config_with_errors(raw)
    if errors or config is None:
        raise ConfigError(errors)
    return config


def config_with_errors(raw: Mapping[str, Any]) -> tuple[Config | None, list[str]]:
    """The config of `raw` and every problem found ("config error: ..." lines).

    A value in error is left at its default, so `mqttd check-config` can go on to check
    the files the rest names (TLS, password, ACL) and report everything in one pass.
    """
    errors: list[str] = []
    config = _build(Config, raw, "", errors)
    if config is not None:
        _check_listeners(config, errors)
        _check_dead_letter(config.dead_letter, errors)
        _check_cluster(config.cluster, errors)
        _check_admin(config, errors)
        persistence = config.persistence
        if config.mqtt.pubrec_first and persistence.enabled and persistence.path != ":memory:":
            errors.append(
                "mqtt.pubrec_first: true needs persistence.enabled = false (with SQLite a "
                "PUBREC waits for the commit of the message it acknowledges)"
            )
        errors.extend(bridge_config_errors(config.bridge))
        _name_listeners(config)
    return config, [f"config error: {line}" for line in errors]


def read_config_file(path: str | Path, overrides: Overrides | None = None) -> dict[str, Any]:
    """The raw TOML document of `path` with `overrides` applied; `ConfigError` if unreadable."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"config error: {path}: cannot read: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config error: {path}: invalid TOML: {exc}"]) from exc
    if overrides is not None:
        _apply_overrides(raw, overrides)
    return raw


def _apply_overrides(raw: dict[str, Any], o: Overrides) -> None:
    # Overrides go into the raw document, so they are validated like the file's values.
    if o.ws_port is not None:
        listeners = raw.setdefault("listeners", [{}])
        if isinstance(listeners, list):
            ws = [x for x in listeners if isinstance(x, dict) and x.get("type") == "ws"]
            if ws:
                ws[0]["port"] = o.ws_port
            else:
                listeners.append({"type": "ws", "port": o.ws_port})
    if o.host is not None or o.port is not None:
        listeners = raw.setdefault("listeners", [{}])
        if isinstance(listeners, list) and listeners:
            for listener in listeners:
                if isinstance(listener, dict) and o.host is not None:
                    listener["host"] = o.host
            if isinstance(listeners[0], dict) and o.port is not None:
                listeners[0]["port"] = o.port
    if o.db is not None:
        persistence = raw.setdefault("persistence", {})
        if isinstance(persistence, dict):
            persistence["path"] = o.db
            persistence["enabled"] = True
    for key, value in (("level", o.log_level), ("format", o.log_format)):
        if value is not None:
            log = raw.setdefault("log", {})
            if isinstance(log, dict):
                log[key] = value


# -- the generic walker ------------------------------------------------------------------

_INVALID: Any = object()  # a value that failed validation (already reported)


def _build(cls: type[T], raw: object, path: str, errors: list[str]) -> T | None:
    """Build dataclass `cls` from TOML table `raw`, reporting problems into `errors`."""
    if not isinstance(raw, Mapping):
        errors.append(f"{path or '(top level)'}: {_show(raw)} is {_kind(raw)}, expected a table")
        return None
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else str(key)
        f = known.get(key)
        if f is None:
            errors.append(f"{key_path}: unknown key{_suggest(key, path, list(known))}")
            continue
        converted = _convert(hints[key], value, key_path, f.metadata, errors)
        if converted is not _INVALID:
            values[key] = converted
    return cls(**values)


def _convert(
    hint: Any, value: object, path: str, meta: Mapping[str, Any], errors: list[str]
) -> Any:
    """Check `value` against type `hint` and the field's constraints; return it typed."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        # `X | None`: TOML has no null, so a present value must be an X.
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner, value, path, meta, errors)
    if origin is dict:
        # A free-form table (plugin options): the plugin checks what is inside.
        if not isinstance(value, Mapping):
            errors.append(f"{path}: {_show(value)} is {_kind(value)}, expected a table")
            return _INVALID
        return dict(value)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            expected = "an array"
            if isinstance(item, type) and is_dataclass(item):
                expected = f"an array of tables (written [[{path.rpartition('.')[2]}]])"
            errors.append(f"{path}: {_show(value)} is {_kind(value)}, expected {expected}")
            return _INVALID
        # A list field's `choices` are those of each item (dead_letter.reasons).
        each = {"choices": meta.get("choices")}
        items = [_convert(item, v, f"{path}[{i}]", each, errors) for i, v in enumerate(value)]
        return _INVALID if any(v is _INVALID for v in items) else items
    if isinstance(hint, type) and is_dataclass(hint):
        built = _build(hint, value, path, errors)
        return _INVALID if built is None else built
    if not _is_instance(value, hint):
        errors.append(f"{path}: {_show(value)} is {_kind(value)}, expected {_type_name(hint)}")
        return _INVALID
    if hint is float and not math.isfinite(typing.cast(float, value)):
        errors.append(f"{path}: {_show(value)} is not a finite number")
        return _INVALID
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(_show(c) for c in choices)
        errors.append(f"{path}: {_show(value)} is not allowed (allowed: {allowed})")
        return _INVALID
    low, high = meta.get("min"), meta.get("max")
    number = typing.cast(float, value)
    if (low is not None and number < low) or (high is not None and number > high):
        errors.append(f"{path}: {_show(value)} is out of range (allowed: {_range(low, high)})")
        return _INVALID
    # Messages show the value as written; the setting gets a float for a float field.
    return float(number) if hint is float else value


def _is_instance(value: object, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # a bool is an int to Python, not to a config file
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f"config field type {hint!r} is not supported")  # a bug here, not input


def _type_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return "a date/time"


def _show(value: object) -> str:
    """A value as it would be written in TOML (tables and arrays are only named)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, Mapping):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    return str(value)


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{_num(low)} to {_num(high)}"
    if low is not None:
        return f">= {_num(low)}"
    return f"<= {_num(high)}"


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _suggest(key: str, path: str, siblings: list[str]) -> str:
    """' (did you mean X?)': the closest sibling key, else the same key in another section."""
    close = difflib.get_close_matches(str(key), siblings, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {path + '.' if path else ''}{close[0]}?)"
    for other in _all_paths():
        head, _, leaf = other.rpartition(".")
        if leaf == key and head != path:
            return f" (did you mean {other}?)"
    return ""


def _all_paths(cls: type[Any] = Config, prefix: str = "") -> list[str]:
    """Every key path of the config tree, array tables written without an index."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        inner = hints[f.name]
        args = [a for a in typing.get_args(inner) if a is not type(None)]
        if args:
            inner = args[0]
        if isinstance(inner, type) and is_dataclass(inner):
            out.extend(_all_paths(inner, path + "."))
    return out


# -- checks across keys --------------------------------------------------------------------


def _check_listeners(config: Config, errors: list[str]) -> None:
    if not config.listeners:
        errors.append("listeners: empty (at least one listener is required)")
    names: dict[str, int] = {}
    addresses: dict[tuple[str, int], int] = {}
    for i, listener in enumerate(config.listeners):
        where = f"listeners[{i}]"
        if listener.name:
            if listener.name in names:
                errors.append(
                    f'{where}.name: "{listener.name}" is already the name of '
                    f"listeners[{names[listener.name]}] (names must be unique)"
                )
            names.setdefault(listener.name, i)
        address = (listener.host, listener.port)
        if listener.port != 0:
            if address in addresses:
                errors.append(
                    f"{where}.port: {listener.port} is already used by "
                    f"listeners[{addresses[address]}] on {listener.host}"
                )
            addresses.setdefault(address, i)
        if listener.type == "ws" and not listener.path.startswith("/"):
            errors.append(f'{where}.path: "{listener.path}" must start with "/"')
        if listener.type == "ws" and listener.max_connections:
            errors.append(
                f"{where}.max_connections: {listener.max_connections} is not "
                'allowed (allowed: 0; only type = "mqtt" listeners enforce it)'
            )
        tls = listener.tls
        if tls is not None:
            if not tls.certfile:
                errors.append(f"{where}.tls.certfile: missing (required when tls is set)")
            if tls.use_identity_as_username and not tls.require_certificate:
                errors.append(
                    f"{where}.tls.use_identity_as_username: true needs "
                    f"{where}.tls.require_certificate = true (and a cafile)"
                )
            if tls.require_certificate and not tls.cafile:
                errors.append(
                    f"{where}.tls.require_certificate: true needs "
                    f"{where}.tls.cafile (the CA that signs client certificates)"
                )


def _check_dead_letter(dead_letter: DeadLetterConfig, errors: list[str]) -> None:
    prefix = dead_letter.prefix
    first = prefix.split("/", 1)[0]
    if (
        not prefix
        or prefix.startswith("/")
        or prefix.endswith("/")
        or any(c in prefix for c in "+#\0")
        or first in ("$SYS", "$share")
    ):
        errors.append(
            f"dead_letter.prefix: {_show(prefix)} is not allowed (allowed: a topic name "
            'without "+", "#" or a "/" at either end, not under $SYS or $share)'
        )


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _check_cluster(cluster: ClusterConfig, errors: list[str]) -> None:
    # Checked even when disabled: turning it on later should not reveal old mistakes.
    allowed = "letters, digits, - and _; it becomes a NATS subject token and a KV bucket name"
    if not cluster.name or not set(cluster.name) <= _NAME_CHARS:
        errors.append(f"cluster.name: {_show(cluster.name)} is not allowed (allowed: {allowed})")
    if cluster.node and not set(cluster.node) <= _NAME_CHARS:
        errors.append(f"cluster.node: {_show(cluster.node)} is not allowed (allowed: {allowed})")
    if cluster.enabled and not cluster.urls:
        errors.append("cluster.urls: empty (at least one NATS server is required)")
    for i, url in enumerate(cluster.urls):
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest:
            errors.append(
                f"cluster.urls[{i}]: {_show(url)} is not allowed (allowed: "
                '"nats://host:port" or "tls://host:port")'
            )
    if cluster.password and not cluster.user:
        errors.append("cluster.password: set without cluster.user")
    if cluster.token and (cluster.user or cluster.credentials_file):
        errors.append("cluster.token: give a token, or user/password, or credentials_file: one")
    if cluster.tls_key_file and not cluster.tls_cert_file:
        errors.append("cluster.tls_key_file: set without cluster.tls_cert_file")
    if cluster.node_timeout < 2 * cluster.heartbeat_interval:
        errors.append(
            f"cluster.node_timeout: {_num(cluster.node_timeout)} is not allowed (allowed: at "
            f"least twice cluster.heartbeat_interval, {_num(2 * cluster.heartbeat_interval)})"
        )


def config_changes(old: object, new: object, path: str) -> list[str]:
    """Each setting that differs between `old` and `new`, as "path old -> new".

    Walks dataclasses and lists; SIGHUP's log lines say exactly what changed with it.
    """
    if old == new:
        return []
    if is_dataclass(old) and is_dataclass(new) and type(old) is type(new):
        out: list[str] = []
        for f in fields(old):
            out += config_changes(getattr(old, f.name), getattr(new, f.name), f"{path}.{f.name}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            line
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for line in config_changes(a, b, f"{path}[{i}]")
        ]
    leaf = path.rpartition(".")[2]
    if any(word in leaf for word in ("password", "secret", "token")):
        return [f"{path} changed"]  # a secret is never written to the log
    return [f"{path} {_show_short(old)} -> {_show_short(new)}"]


def _show_short(value: object) -> str:
    if is_dataclass(value):
        return "(set)"
    if isinstance(value, list):
        if any(is_dataclass(x) for x in value):
            return f"({len(value)} entries)"
        return "[" + ", ".join(_show(x) for x in value) + "]"
    if value is None:
        return "(absent)"
    return _show(value)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_admin(config: Config, errors: list[str]) -> None:
    admin = config.admin
    if not admin.enabled:
        return
    if admin.users and not config.auth.password_file:
        errors.append("admin.users: needs auth.password_file, where their passwords are")
    if not _is_loopback(admin.host) and not admin.api_key_file and not admin.users:
        errors.append(
            f"admin.host: {admin.host!r} is not loopback: set admin.api_key_file or "
            "admin.users (the admin API is never anonymous off loopback)"
        )
    if admin.tls is not None and not admin.tls.certfile:
        errors.append("admin.tls.certfile: required with [admin.tls]")


def _name_listeners(config: Config) -> None:
    # An unnamed listener is called by its scheme; the second of a scheme gets its index.
    taken = {listener.name for listener in config.listeners if listener.name}
    for i, listener in enumerate(config.listeners):
        if not listener.name:
            name = listener.scheme if listener.scheme not in taken else f"{listener.scheme}-{i}"
            listener.name = name
            taken.add(name)


# -- [[bridge]] checks across keys (bridge/ imports these; config imports no bridge/) --

DEFAULT_BRIDGE_PORT = 1883

# A bridge name becomes a topic level ($SYS/broker/connection/{name}/state) and part of
# client identifiers: keep it to characters that are safe in both.
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_address(address: str) -> tuple[str, int]:
    """("host", port) from "host:port", "host" (port 1883) or "[v6]:port".

    Raises ValueError saying what is wrong.
    """
    text = address.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ValueError('an IPv6 address is written "[::1]:1883"')
        if not rest:
            return host, DEFAULT_BRIDGE_PORT
        if not rest.startswith(":"):
            raise ValueError('an IPv6 address is written "[::1]:1883"')
        port_text = rest[1:]
    elif text.count(":") > 1:
        raise ValueError('an IPv6 address is written "[::1]:1883"')
    else:
        host, sep, port_text = text.partition(":")
        if not host:
            raise ValueError("no host")
        if not sep:
            return host, DEFAULT_BRIDGE_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65_535:
        raise ValueError(f"port {port_text!r} is not 1 to 65535")
    return host, int(port_text)


def bridge_config_errors(bridges: Sequence[BridgeConfig]) -> list[str]:
    """One line per problem found across the keys of the bridges (empty when fine)."""
    errors: list[str] = []
    names: dict[str, int] = {}
    for i, bridge in enumerate(bridges):
        where = f"bridge[{i}]"
        if not bridge.name:
            errors.append(f"{where}.name: missing (every bridge needs a name)")
        elif not _BRIDGE_NAME.fullmatch(bridge.name):
            errors.append(
                f'{where}.name: "{bridge.name}" is not allowed (allowed: 1 to 64 letters, '
                "digits, '_', '.' or '-')"
            )
        elif bridge.name in names:
            errors.append(
                f'{where}.name: "{bridge.name}" is already the name of '
                f"bridge[{names[bridge.name]}] (names must be unique)"
            )
        else:
            names[bridge.name] = i
        if not bridge.addresses:
            errors.append(f'{where}.addresses: empty (at least one "host:port" is required)')
        for j, address in enumerate(bridge.addresses):
            try:
                parse_address(address)
            except ValueError as exc:
                errors.append(f'{where}.addresses[{j}]: "{address}" is not host:port ({exc})')
        if bridge.password and not bridge.username and bridge.protocol_version != 5:
            errors.append(
                f"{where}.password: needs {where}.username with protocol_version 4 "
                "(MQTT 3.1.1 sends no password without a user name)"
            )
        if bridge.reconnect_delay_min > bridge.reconnect_delay_max:
            errors.append(
                f"{where}.reconnect_delay_min: {bridge.reconnect_delay_min} is above "
                f"{where}.reconnect_delay_max ({bridge.reconnect_delay_max})"
            )
        topic = bridge.notification_topic
        if topic and ("+" in topic or "#" in topic or "\0" in topic):
            errors.append(
                f'{where}.notification_topic: "{topic}" is not a topic name (no "+" or "#")'
            )
        tls = bridge.tls
        if tls is not None and tls.keyfile and not tls.certfile:
            errors.append(f"{where}.tls.keyfile: needs {where}.tls.certfile (the certificate)")
        if not bridge.topics:
            errors.append(f"{where}.topics: empty (at least one topic rule is required)")
        for j, rule in enumerate(bridge.topics):
            for key, problem in rule_errors(rule.pattern, rule.local_prefix, rule.remote_prefix):
                errors.append(f"{where}.topics[{j}].{key}: {problem}")
    return errors


def rule_errors(pattern: str, local_prefix: str, remote_prefix: str) -> list[tuple[str, str]]:
    """What is wrong with a rule's topics: (key, reason) pairs, empty when it is valid.

    Mosquitto's table: an empty pattern needs both prefixes; prefixes hold no wildcard;
    each side's full filter (prefix + pattern) must be a valid topic filter.
    """
    if not pattern:
        if not (local_prefix and remote_prefix):
            return [
                (
                    "pattern",
                    'empty: "" remaps one topic and then needs both local_prefix and remote_prefix',
                )
            ]
    else:
        try:
            validate_topic_filter(pattern)
        except TopicFilterInvalid as exc:
            return [("pattern", f'"{pattern}" is not a valid topic filter ({exc})')]
    errors: list[tuple[str, str]] = []
    for key, prefix in (("local_prefix", local_prefix), ("remote_prefix", remote_prefix)):
        if "+" in prefix or "#" in prefix:
            errors.append((key, f'"{prefix}" contains a wildcard (+ or #)'))
            continue
        try:
            validate_topic_filter(prefix + pattern)
        except TopicFilterInvalid as exc:
            errors.append((key, f'"{prefix}" + pattern "{pattern}" is not a valid filter ({exc})'))
    return errors
