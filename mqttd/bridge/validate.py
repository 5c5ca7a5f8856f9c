"""Checks across the keys of `[[bridge]]` tables, beyond what each key's type and range say.

`config.py` calls `bridge_config_errors` while loading; each problem is one line that
names the key, like the rest of the configuration's errors. This module imports no
asyncio and nothing of the broker, so loading a configuration stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .topics import rule_errors

if TYPE_CHECKING:
    from ..config import BridgeConfig

__all__ = ["DEFAULT_PORT", "bridge_config_errors", "parse_address"]

DEFAULT_PORT = 1883

# A bridge name becomes a topic level ($SYS/broker/connection/{name}/state) and part of
# client identifiers: keep it to characters that are safe in both.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
            return host, DEFAULT_PORT
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
            return host, DEFAULT_PORT
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
        elif not _NAME.fullmatch(bridge.name):
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
