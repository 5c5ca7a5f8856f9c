"""The options of mosquitto.conf(5) (Mosquitto 2.0) and what mqttd does with each.

Three kinds: MAPPED options become a TOML key (convert.py holds the mapping);
NO_EFFECT options change nothing a client could see (log formatting and the like) and
are accepted with a note said once at start; UNSUPPORTED options stop mqttd with the
reason here, because silently ignoring them would change what the broker does.
docs/migrating-from-mosquitto.md lists the same three tables for people.
"""

from __future__ import annotations

__all__ = ["BRIDGE_OPTIONS", "KNOWN", "NO_EFFECT", "UNSUPPORTED"]

# Options that start with these are plugin options (`auth_opt_NAME`, `plugin_opt_NAME`).
PLUGIN_OPTION_PREFIXES = ("auth_opt_", "plugin_opt_")

NO_EFFECT: dict[str, str] = {
    "autosave_interval": "mqttd commits every change to SQLite within "
    "persistence.commit_interval_ms (5 ms), so there is no periodic save to time",
    "autosave_on_changes": "mqttd commits every change within persistence.commit_interval_ms",
    "log_timestamp": "mqttd's log lines always start with an ISO 8601 time",
    "log_timestamp_format": "mqttd's log lines always start with an ISO 8601 time",
    "log_facility": "mqttd logs to stderr (journald or your supervisor keeps it), not syslog",
    "connection_messages": "mqttd logs every connection and disconnection at level info",
    "websockets_log_level": "mqttd logs WebSocket events with its own log level",
    "websockets_headers_size": "mqttd's WebSocket server sizes its HTTP header buffer itself",
    "set_tcp_nodelay": "mqttd gathers each read's output into one write; Nagle is left as set",
    "pid_file": "mqttd writes no pid file; its supervisor (systemd, docker) knows the pid",
    "user": "mqttd does not change user: start it as the user it should run as "
    "(systemd User=, docker USER)",
    "bridge_attempt_unsubscribe": "mqttd unsubscribes a bridge's stale filters itself",
    "auth_plugin_deny_special_chars": "mqttd loads no Mosquitto plugins",
    "allow_duplicate_messages": "mqttd sends one copy per session for overlapping "
    "subscriptions (3.3.4), with every matching 5.0 Subscription Identifier",
}

UNSUPPORTED: dict[str, str] = {
    "auth_plugin": "Mosquitto's C plugins cannot load into mqttd; see [auth] plugin "
    "(a Python factory) in config/mqttd.toml",
    "plugin": "Mosquitto's C plugins cannot load into mqttd; see [auth] plugin "
    "(a Python factory) in config/mqttd.toml",
    "psk_file": "mqttd has no TLS-PSK (Python's ssl module offers it only from 3.13)",
    "psk_hint": "mqttd has no TLS-PSK",
    "bind_interface": "mqttd binds addresses, not interfaces: give the interface's address "
    "to listener",
    "http_dir": "mqttd serves no static files over HTTP (its WebSocket listener serves "
    "its own dashboard, dashboard = true in TOML)",
    "mount_point": "mqttd has no per-listener topic prefix",
    "use_username_as_clientid": "mqttd keeps the client's own client id",
    "use_subject_as_username": "mqttd can use the certificate's Common Name "
    "(use_identity_as_username), not the whole subject",
    "capath": "mqttd reads one CA bundle: concatenate the directory's PEM files into one "
    "file and name it with cafile",
    "ciphers": "mqttd uses Python's default TLS cipher suites",
    "ciphers_tls1.3": "mqttd uses Python's default TLS 1.3 cipher suites",
    "crlfile": "mqttd does not check certificate revocation lists",
    "dhparamfile": "mqttd uses ECDHE key exchange only (no DH parameters)",
    "tls_engine": "mqttd has no OpenSSL engine support",
    "tls_engine_kpass_sha1": "mqttd has no OpenSSL engine support",
    "tls_keyform": "mqttd reads PEM keys only",
    "memory_limit": "mqttd has no heap cap; its memory is bounded by the queue limits "
    "(max_queued_messages, max_queued_bytes) instead",
    "clientid_prefixes": "mqttd does not restrict client ids by prefix (use an ACL on topics)",
    "check_retain_source": "mqttd does not re-check a retained message's publisher against "
    "the ACL at delivery",
    "local_clientid": "mqttd's bridge is always the local client $bridge/<name>",
    "bridge_bind_address": "mqttd's bridge lets the system pick its source address",
    "bridge_alpn": "mqttd's bridge sends no ALPN",
    "bridge_capath": "mqttd's bridge reads one CA bundle: name it with bridge_cafile",
    "bridge_identity": "mqttd's bridge has no TLS-PSK",
    "bridge_psk": "mqttd's bridge has no TLS-PSK",
    "bridge_require_ocsp": "mqttd's bridge does not check OCSP",
    "bridge_max_packet_size": "mqttd's bridge passes on what the local limits.max_packet_size "
    "accepts",
}

BRIDGE_OPTIONS = frozenset(
    {
        "address",
        "addresses",
        "bridge_attempt_unsubscribe",
        "bridge_bind_address",
        "bridge_max_packet_size",
        "bridge_outgoing_retain",
        "bridge_protocol_version",
        "cleansession",
        "local_cleansession",
        "keepalive_interval",
        "idle_timeout",
        "local_clientid",
        "local_password",
        "local_username",
        "notifications",
        "notifications_local_only",
        "notification_topic",
        "remote_clientid",
        "clientid",
        "remote_password",
        "password",
        "remote_username",
        "username",
        "restart_timeout",
        "round_robin",
        "start_type",
        "threshold",
        "topic",
        "try_private",
        "bridge_alpn",
        "bridge_cafile",
        "bridge_capath",
        "bridge_certfile",
        "bridge_identity",
        "bridge_insecure",
        "bridge_keyfile",
        "bridge_psk",
        "bridge_require_ocsp",
        "bridge_tls_version",
    }
)

# Every option mqttd maps (convert.py), besides the tables above.
MAPPED = frozenset(
    {
        "acl_file",
        "allow_anonymous",
        "allow_zero_length_clientid",
        "auto_id_prefix",
        "bind_address",
        "cafile",
        "certfile",
        "connection",
        "include_dir",
        "keyfile",
        "listener",
        "log_dest",
        "log_type",
        "max_connections",
        "max_inflight_bytes",
        "max_inflight_messages",
        "max_keepalive",
        "max_packet_size",
        "max_qos",
        "max_queued_bytes",
        "max_queued_messages",
        "max_topic_alias",
        "message_size_limit",
        "password_file",
        "per_listener_settings",
        "persistence",
        "persistence_file",
        "persistence_location",
        "persistent_client_expiration",
        "port",
        "protocol",
        "queue_qos0_messages",
        "require_certificate",
        "retain_available",
        "socket_domain",
        "sys_interval",
        "tls_version",
        "upgrade_outgoing_qos",
        "use_identity_as_username",
    }
)

KNOWN = frozenset(MAPPED | BRIDGE_OPTIONS | NO_EFFECT.keys() | UNSUPPORTED.keys())
