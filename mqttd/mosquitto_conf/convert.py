"""Turn mosquitto.conf option lines into mqttd's TOML document (a dict), line by line.

Theory of operation. One pass over the lines, as Mosquitto reads them: `listener` opens
a listener and the listener options after it apply to it (before any `listener` they
apply to the default listener, which `port`/`bind_address` create); `connection` opens
a bridge and bridge options apply to it until the next `connection`. Every option line
ends in exactly one of three places: a key of the TOML document (`origins` remembers
which line set which key, so a value our loader refuses is reported on its line), a
note (accepted, no effect on behaviour, said once at start), or an error naming the
line, the option and why mqttd cannot honour it. Nothing is silently dropped.

Mosquitto's defaults differ from mqttd's in places a client can see, so the document
sets them explicitly: no persistence, Receive Maximum 20 (max_inflight_messages), no
server topic aliases, a QoS 2 PUBREC before the message goes on (without persistence),
assigned client ids starting "auto-", no dashboard on WebSocket listeners, bridge retry
5 to 30 seconds, and the bridge's remote client id and state topic named as Mosquitto
names them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import BRIDGE_OPTIONS, NO_EFFECT, PLUGIN_OPTION_PREFIXES, UNSUPPORTED
from .reader import Line

__all__ = ["Conversion", "convert_lines", "parse_duration"]

# Options that Mosquitto keeps per listener when per_listener_settings is true.
_SECURITY = frozenset(
    {
        "password_file",
        "acl_file",
        "allow_anonymous",
        "allow_zero_length_clientid",
        "auto_id_prefix",
    }
)
# Listener options whose mqttd counterpart is one broker-wide setting.
_LISTENER_WIDE = {
    "max_qos": ("mqtt", "maximum_qos"),
    "max_topic_alias": ("limits", "topic_alias_maximum"),
}
_TLS_OPTIONS = frozenset(
    {
        "cafile",
        "certfile",
        "keyfile",
        "require_certificate",
        "tls_version",
        "use_identity_as_username",
    }
)
_LISTENER_OPTIONS = frozenset(
    {"protocol", "socket_domain", "max_connections", *_TLS_OPTIONS, *_LISTENER_WIDE}
)
_DURATION_UNITS = {"h": 3600, "d": 86_400, "w": 604_800, "m": 2_592_000, "y": 31_536_000}
# log_type -> the least severe level it asks for.
_LOG_LEVELS = {
    "debug": "debug",
    "all": "debug",
    "information": "info",
    "notice": "info",
    "subscribe": "info",
    "unsubscribe": "info",
    "websockets": "info",
    "warning": "warning",
    "error": "error",
    "none": "error",
}
_LEVEL_ORDER = ("debug", "info", "warning", "error")


@dataclass(slots=True)
class Conversion:
    """The TOML document made from a mosquitto.conf, and what could not go into it."""

    raw: dict[str, Any] = field(default_factory=dict)
    #: accepted options without effect on behaviour: `FILE:LINE: option: why`
    notes: list[str] = field(default_factory=list)
    #: options mqttd cannot honour: `FILE:LINE: option value: why`
    errors: list[str] = field(default_factory=list)
    #: TOML key path (e.g. "limits.max_keepalive", "listeners[1].port") -> its line
    origins: dict[str, Line] = field(default_factory=dict)


@dataclass(slots=True)
class _Listener:
    line: Line | None  # None: the default listener
    table: dict[str, Any]
    tls: dict[str, Any] = field(default_factory=dict)
    security: dict[str, tuple[Any, Line]] = field(default_factory=dict)
    wide: dict[str, tuple[Any, Line]] = field(default_factory=dict)
    socket_domain: str = ""
    explicit_host: bool = False


@dataclass(slots=True)
class _Bridge:
    line: Line
    table: dict[str, Any]
    tls: dict[str, Any] = field(default_factory=dict)
    notifications: bool = True
    local_only: bool = False
    cleansession: bool = False


def parse_duration(text: str) -> int | None:
    """persistent_client_expiration's `2m`, `14d`, `1y` in seconds; None if not one."""
    if len(text) < 2 or text[-1] not in _DURATION_UNITS or not text[:-1].isdigit():
        return None
    return int(text[:-1]) * _DURATION_UNITS[text[-1]]


class _Converter:
    def __init__(self, hostname: str) -> None:
        self.out = Conversion()
        self.hostname = hostname
        self.per_listener = False
        self.default = _Listener(None, {"port": 1883, "host": ""})
        self.default_used = False  # `port`/`bind_address` or a listener option before any listener
        self.listeners: list[_Listener] = []
        self.current: _Listener | None = None
        self.bridges: list[_Bridge] = []
        self.bridge: _Bridge | None = None
        self.security: dict[str, tuple[Any, Line]] = {}
        self.persistence: dict[str, Any] = {"enabled": False}
        self.persistence_file = "mosquitto.db"
        self.persistence_location = ""
        self.log_levels: list[str] = []
        self.log_type_line: Line | None = None

    # -- helpers ---------------------------------------------------------------------------

    def error(self, line: Line, why: str) -> None:
        self.out.errors.append(f"{line.where}: {line.option} {line.value}".rstrip() + f": {why}")

    def note(self, line: Line, why: str) -> None:
        self.out.notes.append(f"{line.where}: {line.option}: {why}")

    def put(self, line: Line, section: str, key: str, value: Any) -> None:
        self.out.raw.setdefault(section, {})[key] = value
        self.out.origins[f"{section}.{key}"] = line

    def boolean(self, line: Line) -> bool | None:
        if line.value in ("true", "false"):
            return line.value == "true"
        self.error(line, 'expected "true" or "false"')
        return None

    def integer(self, line: Line, low: int | None = None) -> int | None:
        text = line.value
        if text.lstrip("-").isdigit():
            value = int(text)
            if low is None or value >= low:
                return value
        self.error(line, "expected an integer" + (f" >= {low}" if low is not None else ""))
        return None

    def listener(self) -> _Listener:
        if self.current is None:
            self.default_used = True
            return self.default
        return self.current

    # -- the pass --------------------------------------------------------------------------

    def feed(self, line: Line) -> None:
        option = line.option
        if option.startswith(PLUGIN_OPTION_PREFIXES):
            self.error(line, "options of Mosquitto plugins have no meaning to mqttd")
            return
        if self.bridge is not None and option in BRIDGE_OPTIONS:
            self.bridge_option(self.bridge, line)
            return
        if option in UNSUPPORTED:
            self.error(line, UNSUPPORTED[option])
            return
        if option in NO_EFFECT:
            self.note(line, NO_EFFECT[option])
            return
        handler = getattr(self, "on_" + option, None)
        if handler is None:
            if option in BRIDGE_OPTIONS:
                self.error(line, "a bridge option outside a `connection` section")
            else:
                self.error(line, "unknown option (not in mosquitto.conf(5) of Mosquitto 2.0)")
            return
        handler(line)

    def on_include_dir(self, line: Line) -> None:
        pass  # the reader followed it already

    def on_per_listener_settings(self, line: Line) -> None:
        value = self.boolean(line)
        if value is not None:
            self.per_listener = value

    def on_listener(self, line: Line) -> None:
        self.bridge = None  # a listener line ends nothing in Mosquitto, but options after
        # it are listener options; bridge sections are conventionally last anyway
        args = line.args
        if not args or not args[0].isdigit() or int(args[0]) > 65_535:
            self.error(line, "expected `listener PORT [ADDRESS]` with PORT 0 to 65535")
            return
        port = int(args[0])
        if port == 0 or (len(args) > 1 and args[1].startswith("/")):
            self.error(line, "mqttd listens on TCP ports only, not on Unix sockets")
            return
        table: dict[str, Any] = {"port": port, "host": args[1] if len(args) > 1 else ""}
        listener = _Listener(line, table, explicit_host=len(args) > 1)
        self.listeners.append(listener)
        self.current = listener

    def on_port(self, line: Line) -> None:
        port = self.integer(line, 1)
        if port is not None:
            self.default.table["port"] = port
            self.default.line = self.default.line or line
            self.default_used = True

    def on_bind_address(self, line: Line) -> None:
        self.default.table["host"] = line.value
        self.default.explicit_host = True
        self.default_used = True

    def on_protocol(self, line: Line) -> None:
        if line.value not in ("mqtt", "websockets"):
            self.error(line, 'expected "mqtt" or "websockets"')
            return
        listener = self.listener()
        if line.value == "websockets":
            # Mosquitto serves MQTT over WebSocket on any path and no web page.
            listener.table.update(type="ws", dashboard=False)
            listener.table.setdefault("path", "/mqtt")

    def on_socket_domain(self, line: Line) -> None:
        if line.value not in ("ipv4", "ipv6"):
            self.error(line, 'expected "ipv4" or "ipv6"')
            return
        self.listener().socket_domain = line.value

    def on_max_connections(self, line: Line) -> None:
        value = self.integer(line, -1)
        if value is not None:
            self.listener().table["max_connections"] = max(value, 0)
            self.listener().table["_max_connections_line"] = line

    def on_max_qos(self, line: Line) -> None:
        value = self.integer(line, 0)
        if value is not None and value > 2:
            self.error(line, "expected 0, 1 or 2")
        elif value is not None:
            self.listener().wide["max_qos"] = (value, line)

    def on_max_topic_alias(self, line: Line) -> None:
        value = self.integer(line, 0)
        if value is not None:
            self.listener().wide["max_topic_alias"] = (value, line)

    def tls_option(self, line: Line) -> None:
        listener = self.listener()
        option = line.option
        if option in ("certfile", "keyfile", "cafile"):
            listener.tls[option] = line.value
        elif option == "tls_version":
            versions = {"tlsv1.2": "1.2", "tlsv1.3": "1.3"}
            if line.value not in versions:
                self.error(line, "mqttd accepts tlsv1.2 or tlsv1.3 (TLS 1.1 is not offered)")
                return
            listener.tls["min_version"] = versions[line.value]
        else:
            value = self.boolean(line)
            if value is None:
                return
            listener.tls[option] = value
        listener.tls.setdefault("_lines", []).append(line)

    on_certfile = on_keyfile = on_cafile = on_tls_version = tls_option
    on_require_certificate = on_use_identity_as_username = tls_option

    # -- security (global, or per listener with per_listener_settings true) ----------------

    def security_option(self, line: Line) -> None:
        option = line.option
        value: Any = line.value
        if option in ("allow_anonymous", "allow_zero_length_clientid"):
            value = self.boolean(line)
            if value is None:
                return
        # Per listener, before any `listener` line it is the default listener's, which it
        # then starts (as Mosquitto's config__read does); globally it starts nothing.
        target = self.listener().security if self.per_listener else self.security
        target[option] = (value, line)

    on_password_file = on_acl_file = on_allow_anonymous = security_option
    on_allow_zero_length_clientid = on_auto_id_prefix = security_option

    # -- global options --------------------------------------------------------------------

    def on_persistence(self, line: Line) -> None:
        value = self.boolean(line)
        if value is not None:
            self.persistence["enabled"] = value
            self.out.origins["persistence.enabled"] = line

    def on_persistence_file(self, line: Line) -> None:
        self.persistence_file = line.value
        self.out.origins["persistence.path"] = line

    def on_persistence_location(self, line: Line) -> None:
        self.persistence_location = line.value
        self.out.origins["persistence.path"] = line

    def on_persistent_client_expiration(self, line: Line) -> None:
        seconds = parse_duration(line.value)
        if seconds is None:
            self.error(line, "expected a number followed by h, d, w, m or y (e.g. 14d)")
            return
        self.put(line, "limits", "persistent_client_expiration", seconds)

    def on_log_dest(self, line: Line) -> None:
        kind = line.args[0] if line.args else ""
        if kind == "topic":
            self.error(line, "mqttd does not publish its log on $SYS/broker/log topics")
        elif kind in ("stderr", "none"):
            pass
        elif kind in ("stdout", "file", "syslog", "dlt"):
            self.note(line, "mqttd logs to stderr; redirect it (2>>FILE) or let journald keep it")
        else:
            self.error(line, "expected stdout, stderr, syslog, topic, file, dlt or none")

    def on_log_type(self, line: Line) -> None:
        for kind in line.args:
            if kind not in _LOG_LEVELS:
                self.error(line, f"unknown log type {kind!r}")
                return
            self.log_levels.append(_LOG_LEVELS[kind])
        self.log_type_line = line

    def limit(self, line: Line, key: str, low: int, zero_means_default: bool = False) -> None:
        value = self.integer(line, low)
        if value is None or (zero_means_default and value == 0):
            return
        self.put(line, "limits", key, value)

    def on_max_inflight_messages(self, line: Line) -> None:
        value = self.integer(line, 0)
        if value is None:
            return
        # Mosquitto: 0 = no maximum; it also advertises this as the CONNACK Receive Maximum.
        window = value or 65_535
        self.put(line, "limits", "max_inflight_messages", window)
        self.put(line, "limits", "receive_maximum", window)

    def on_max_inflight_bytes(self, line: Line) -> None:
        self.limit(line, "max_inflight_bytes", 0)

    def on_max_keepalive(self, line: Line) -> None:
        self.limit(line, "max_keepalive", 0)

    def on_max_packet_size(self, line: Line) -> None:
        self.limit(line, "max_packet_size", 0, zero_means_default=True)

    def on_message_size_limit(self, line: Line) -> None:
        self.limit(line, "message_size_limit", 0)

    def on_max_queued_messages(self, line: Line) -> None:
        self.limit(line, "max_queued_messages", 0)

    def on_max_queued_bytes(self, line: Line) -> None:
        self.limit(line, "max_queued_bytes", 0)

    def on_queue_qos0_messages(self, line: Line) -> None:
        value = self.boolean(line)
        if value:
            self.error(
                line,
                "mqttd queues QoS 0 messages only for connected sessions, never for offline ones",
            )

    def on_retain_available(self, line: Line) -> None:
        value = self.boolean(line)
        if value is not None:
            self.put(line, "mqtt", "retain_available", value)

    def on_upgrade_outgoing_qos(self, line: Line) -> None:
        value = self.boolean(line)
        if value is not None:
            self.put(line, "mqtt", "upgrade_outgoing_qos", value)

    def on_sys_interval(self, line: Line) -> None:
        value = self.integer(line, 0)
        if value is not None:
            self.put(line, "sys", "interval", value)

    def on_connection(self, line: Line) -> None:
        if not line.value or len(line.args) != 1:
            self.error(line, "expected `connection NAME`")
            self.bridge = None
            return
        name = line.value
        table: dict[str, Any] = {
            "name": name,
            "addresses": [],
            "topics": [],
            # Mosquitto's restart_timeout default: jitter from 5 up to 30 seconds.
            "reconnect_delay_min": 5.0,
            "reconnect_delay_max": 30.0,
        }
        self.bridge = _Bridge(line, table)
        self.bridges.append(self.bridge)

    # -- bridges ---------------------------------------------------------------------------

    def bridge_option(self, bridge: _Bridge, line: Line) -> None:
        option = line.option
        table = bridge.table
        index = len(self.bridges) - 1
        self.out.origins[f"bridge[{index}]"] = bridge.line
        if option in UNSUPPORTED:
            self.error(line, UNSUPPORTED[option])
        elif option in NO_EFFECT:
            self.note(line, NO_EFFECT[option])
        elif option in ("address", "addresses"):
            for address in line.args:
                if address.count(":") > 1 and not address.startswith("["):
                    # An IPv6 address with its port, as Mosquitto takes it: last colon.
                    host, _, port = address.rpartition(":")
                    address = f"[{host}]:{port}"
                table["addresses"].append(address)
            self.out.origins[f"bridge[{index}].addresses"] = line
        elif option == "topic":
            self.bridge_topic(bridge, line)
        elif option == "bridge_protocol_version":
            versions = {"mqttv311": 4, "mqttv50": 5}
            if line.value not in versions:
                self.error(line, "mqttd bridges speak mqttv311 or mqttv50 (not MQTT 3.1)")
            else:
                table["protocol_version"] = versions[line.value]
        elif option in ("remote_username", "username"):
            table["username"] = line.value
        elif option in ("remote_password", "password"):
            table["password"] = line.value
        elif option in ("remote_clientid", "clientid"):
            table["client_id"] = line.value
        elif option == "local_username":
            table["local_username"] = line.value
        elif option == "local_password":
            table["local_password"] = line.value
        elif option in (
            "cleansession",
            "try_private",
            "round_robin",
            "notifications",
            "notifications_local_only",
            "bridge_outgoing_retain",
            "bridge_insecure",
            "local_cleansession",
        ):
            flag = self.boolean(line)
            if flag is None:
                return
            self.bridge_flag(bridge, line, flag)
        elif option == "keepalive_interval":
            value = self.integer(line, 5)
            if value is not None:
                table["keepalive"] = value
                self.out.origins[f"bridge[{index}].keepalive"] = line
        elif option == "restart_timeout":
            args = line.args
            if len(args) not in (1, 2) or not all(a.isdigit() and int(a) > 0 for a in args):
                self.error(line, "expected `restart_timeout SECONDS` or `restart_timeout BASE CAP`")
                return
            table["reconnect_delay_min"] = float(args[0])
            table["reconnect_delay_max"] = float(args[-1])
        elif option == "start_type":
            if line.value not in ("automatic", "lazy", "once"):
                self.error(line, 'expected "automatic", "lazy" or "once"')
            else:
                table["start_type"] = line.value
        elif option == "threshold":
            value = self.integer(line, 1)
            if value is not None:
                table["threshold"] = value
        elif option == "idle_timeout":
            value = self.integer(line, 1)
            if value is not None:
                table["idle_timeout"] = float(value)
        elif option == "notification_topic":
            table["notification_topic"] = line.value
        elif option in ("bridge_cafile", "bridge_certfile", "bridge_keyfile"):
            bridge.tls[option.removeprefix("bridge_")] = line.value
            self.out.origins.setdefault(f"bridge[{index}].tls", line)
        elif option == "bridge_tls_version":
            if line.value not in ("tlsv1.2", "tlsv1.3"):
                self.error(line, "mqttd's bridge offers TLS 1.2 and 1.3 only")
            elif line.value == "tlsv1.3":
                self.error(
                    line,
                    "mqttd's bridge negotiates the highest version both sides "
                    "support (TLS 1.2 or 1.3) and cannot require 1.3",
                )
        else:  # pragma: no cover - BRIDGE_OPTIONS and this chain list the same names
            self.error(line, "not handled")

    def bridge_flag(self, bridge: _Bridge, line: Line, value: bool) -> None:
        option = line.option
        table = bridge.table
        if option == "cleansession":
            bridge.cleansession = value
            table["clean_start"] = value
        elif option == "try_private":
            table["try_private"] = value
        elif option == "round_robin":
            table["round_robin"] = value
        elif option == "notifications":
            bridge.notifications = value
        elif option == "notifications_local_only":
            bridge.local_only = value
        elif option == "bridge_outgoing_retain":
            if not value:
                self.error(
                    line, "mqttd's bridge always passes the retain flag on (Retain As Published)"
                )
        elif option == "bridge_insecure":
            if value:
                self.error(
                    line,
                    "mqttd checks the remote's certificate and host name together; "
                    "set [bridge.tls] server_hostname to the name in the certificate "
                    "(or verify = false to check nothing) in the converted TOML",
                )
        elif option == "local_cleansession" and value:
            self.error(
                line,
                "mqttd's bridge keeps its local session (messages for the remote "
                "wait in it while the remote is away)",
            )

    def bridge_topic(self, bridge: _Bridge, line: Line) -> None:
        args = _split_quoted(line.value)
        if not args or len(args) > 5 or len(args) == 4:
            self.error(line, "expected `topic PATTERN [[[out|in|both] QOS] LOCAL REMOTE]`")
            return
        rule: dict[str, Any] = {"pattern": args[0]}
        if len(args) > 1:
            if args[1] not in ("out", "in", "both"):
                self.error(line, 'direction must be "out", "in" or "both"')
                return
            rule["direction"] = args[1]
        if len(args) > 2:
            if args[2] not in ("0", "1", "2"):
                self.error(line, "QoS must be 0, 1 or 2")
                return
            rule["qos"] = int(args[2])
        if len(args) == 5:
            rule["local_prefix"], rule["remote_prefix"] = args[3], args[4]
        topics = bridge.table["topics"]
        self.out.origins[f"bridge[{len(self.bridges) - 1}].topics[{len(topics)}]"] = line
        topics.append(rule)

    # -- the end: the document -------------------------------------------------------------

    def finish(self) -> Conversion:
        raw = self.out.raw
        listeners = list(self.listeners)
        if self.default_used or not listeners:
            if not self.default_used:
                # Mosquitto 2.0 without listeners: port 1883 on loopback only.
                self.default.table["host"] = "127.0.0.1"
            listeners.insert(0, self.default)
        raw["listeners"] = [self.listener_table(i, item) for i, item in enumerate(listeners)]
        local_only = not self.listeners and not self.default_used
        self.finish_security(listeners, local_only)
        self.finish_wide(listeners)
        self.finish_persistence()
        limits = raw.setdefault("limits", {})
        # Mosquitto's defaults where a client sees them (see the module docstring).
        limits.setdefault("max_inflight_messages", 20)
        limits.setdefault("receive_maximum", limits["max_inflight_messages"])
        mqtt = raw.setdefault("mqtt", {})
        mqtt["server_topic_aliases"] = False
        # Mosquitto's PUBREC comes first; mqttd can promise that without a durable store.
        mqtt["pubrec_first"] = not self.persistence["enabled"]
        mqtt.setdefault("client_id_prefix", "auto-")
        if self.log_levels:
            level = min(self.log_levels, key=_LEVEL_ORDER.index)
            self.out.origins["log.level"] = self.log_type_line  # type: ignore[assignment]
            raw.setdefault("log", {})["level"] = level
        if self.bridges:
            raw["bridge"] = [self.bridge_table(b) for b in self.bridges]
        return self.out

    def listener_table(self, index: int, listener: _Listener) -> dict[str, Any]:
        table = dict(listener.table)
        line = listener.line
        if line is not None:
            self.out.origins[f"listeners[{index}]"] = line
        limit_line = table.pop("_max_connections_line", None)
        if table.get("type") == "ws" and table.get("max_connections"):
            self.error(
                limit_line,
                "mqttd limits connections per listener on mqtt listeners "
                "only; use limits.max_connections (every listener) instead",
            )
        if not listener.explicit_host and listener.socket_domain:
            table["host"] = "0.0.0.0" if listener.socket_domain == "ipv4" else "::"
        tls = dict(listener.tls)
        lines = tls.pop("_lines", [])
        if tls:
            if "certfile" not in tls:
                first = lines[0]
                self.error(
                    first,
                    "TLS options on a listener without certfile (mqttd "
                    "serves TLS only with a certificate)",
                )
            else:
                table["tls"] = tls
                self.out.origins[f"listeners[{index}].tls"] = lines[0]
        return table

    def finish_security(self, listeners: list[_Listener], local_only: bool) -> None:
        if self.per_listener:
            chosen: dict[str, tuple[Any, Line]] | None = None
            for listener in listeners:
                current = listener.security
                if chosen is None:
                    chosen = current
                elif _values(current) != _values(chosen):
                    differing = sorted(set(_values(current).items()) ^ set(_values(chosen).items()))
                    option = differing[0][0]
                    line = (current.get(option) or chosen[option])[1]
                    self.error(
                        line,
                        "per_listener_settings true with listeners that differ in "
                        f"{option}: mqttd has one [auth] and one [mqtt] for all listeners",
                    )
                    return
            security = chosen or {}
        else:
            security = self.security
        auth = self.out.raw.setdefault("auth", {})
        for option, (value, line) in security.items():
            if option == "auto_id_prefix":
                self.put(line, "mqtt", "client_id_prefix", value)
            elif option == "allow_zero_length_clientid":
                self.put(line, "mqtt", "allow_zero_length_client_id", value)
            else:
                auth[option] = value
                self.out.origins[f"auth.{option}"] = line
        if "allow_anonymous" not in auth and not local_only:
            # Mosquitto 2.0: anonymous clients are refused once a listener is configured.
            auth["allow_anonymous"] = False

    def finish_wide(self, listeners: list[_Listener]) -> None:
        for option, (section, key) in _LISTENER_WIDE.items():
            values = {listener.wide[option][0] for listener in listeners if option in listener.wide}
            if not values:
                continue
            setting = [listener.wide[option] for listener in listeners if option in listener.wide]
            if len(values) > 1 or len(setting) < len(listeners):
                self.error(
                    setting[0][1],
                    f"mqttd has one {section}.{key} for all listeners; "
                    f"give every listener the same {option}",
                )
                continue
            self.put(setting[0][1], section, key, setting[0][0])

    def finish_persistence(self) -> None:
        persistence = dict(self.persistence)
        stem = Path(self.persistence_file).stem or "mosquitto"
        # Not Mosquitto's own file: mqttd keeps its state in SQLite, beside it.
        persistence["path"] = str(Path(self.persistence_location or ".") / f"{stem}.mqttd.sqlite3")
        self.out.raw["persistence"] = persistence

    def bridge_table(self, bridge: _Bridge) -> dict[str, Any]:
        table = bridge.table
        name = table["name"]
        # Mosquitto's remote client id is "<hostname>.<connection name>", and its state
        # topic is named after that client id.
        client_id = table.setdefault("client_id", f"{self.hostname}.{name}")
        if not bridge.notifications:
            table["notifications"] = False
        else:
            table.setdefault("notification_topic", f"$SYS/broker/connection/{client_id}/state")
            table["notifications_local_only"] = bridge.local_only
        if not table["addresses"]:
            self.error(bridge.line, "a bridge needs an address line")
        if bridge.tls:
            table["tls"] = bridge.tls
        return table


def _values(security: dict[str, tuple[Any, Line]]) -> dict[str, Any]:
    return {option: value for option, (value, _) in security.items()}


def _split_quoted(text: str) -> list[str]:
    """Split a topic line's value; `""` is an empty argument, as in Mosquitto."""
    return ["" if word == '""' else word for word in text.split()]


def convert_lines(lines: list[Line], hostname: str | None = None) -> Conversion:
    """The TOML document for `lines`; see `Conversion` for what else it carries."""
    converter = _Converter(hostname or socket.gethostname())
    for line in lines:
        converter.feed(line)
    return converter.finish()
