"""The `mqttd` command: run the broker, or check a configuration file.

    mqttd [-c FILE] [--host ADDR] [-p N] [--db PATH] [-v] [--log-format text|json]
    mqttd check-config FILE
    mqttd convert MOSQUITTO.CONF > mqttd.toml
    mqttd passwd [-c | -D] [-b] FILE USER [PASSWORD]
    mqttd ctl [--url URL] [--json] COMMAND ...   (the admin API's client: admin/ctl.py)

Exit status: 0 after a clean stop (SIGINT/SIGTERM) or a valid config, 1 when the broker
cannot start (a port in use), 2 for bad usage or an invalid configuration (one line per
problem on stderr, each naming the key). SIGHUP reloads the config file (`App.reload`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .admin.ctl import add_ctl_parser, run_ctl
from .auth.password_file import add_passwd_parser, run_passwd
from .config import (
    Config,
    ConfigError,
    Overrides,
    config_with_errors,
    load_config,
    read_config_file,
)
from .mosquitto_conf import (
    convert_to_toml,
    is_mosquitto_conf,
    load_mosquitto_config,
    locate_errors,
)

__all__ = ["build_parser", "main"]

_EPILOG = """\
With no config file mqttd listens on 127.0.0.1:1883 only (loopback), where clients need
no password. To accept clients from other machines (--host 0.0.0.0) set [auth]
password_file (written by `mqttd passwd`), or [auth] allow_anonymous = true to serve
anonymous clients on purpose: an exposed listener without authentication refuses to
start (see SECURITY.md). --host applies to every listener, --port to the first one;
port 0 picks a free port (the "listening on" line says which).
See config/mqttd.toml for every setting.

signals:
  SIGTERM, SIGINT  stop gracefully: 5.0 clients are told why, the store is flushed
                   (a second signal exits at once)
  SIGHUP           reload the config file: log.level, log.format, sys.interval and
                   the [auth] password and ACL files apply at once, without dropping
                   a connection; other changes are logged and wait for the next start

exit status: 0 clean stop, 1 cannot start (e.g. a port in use), 2 bad usage or config

examples:
  mqttd                               loopback only, state in ./data/mqttd.db
  mqttd -c mqttd.toml --host 0.0.0.0  every interface (the file sets [auth])
  mqttd passwd -c /etc/mqttd/passwd alice   a password file with user alice
  mqttd -c /etc/mqttd/mqttd.toml -v   a config file, DEBUG logs
  mqttd check-config /etc/mqttd/mqttd.toml
  mqttd ctl clients                   who is connected (needs [admin] enabled)
  mqttd -c /etc/mosquitto/mosquitto.conf   an existing Mosquitto configuration
  mqttd convert /etc/mosquitto/mosquitto.conf > mqttd.toml"""

_CONVERT_DESCRIPTION = """\
Print the TOML equivalent of a Mosquitto configuration (mosquitto.conf(5), with its
include_dir files) on stdout. Every key names the mosquitto.conf line it comes from;
options mqttd cannot honour are listed as comments at the top (and on stderr), as are
options accepted without effect on behaviour. `mqttd -c MOSQUITTO.CONF` runs the same
broker directly. See docs/migrating-from-mosquitto.md.

Exit status: 0 when every option converted, 2 when some could not (the TOML is printed
anyway, without them)."""

_CHECK_DESCRIPTION = """\
Validate FILE exactly as `mqttd -c FILE` would load it, without starting anything:
TOML syntax, every key and value (type, range, allowed values), listeners that would
clash, the TLS certificate, key and CA files (readable and matching), the [auth]
password file, ACL file and plugin, and that no listener reachable from the network
is left without authentication. Options
given before the command (--host, -p, --db, --log-format) are applied first, as they
would be at a start.

Prints "FILE: OK" and exits 0 when the file is usable; otherwise prints one line per
problem on stderr, each naming the key, and exits 2."""

_CHECK_EPILOG = """\
examples:
  mqttd check-config config/mqttd.toml
  mqttd --port 1884 check-config /etc/mqttd/mqttd.toml"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mqttd` (exits 2 with a usage message on bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="mqttd",
        description="An MQTT 3.1/3.1.1/5.0 broker.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML configuration file, or a mosquitto.conf (recognised by its content)",
    )
    parser.add_argument("--host", metavar="ADDR", help="bind address of every listener")
    parser.add_argument("-p", "--port", metavar="N", type=int, help="port of the first listener")
    parser.add_argument(
        "--ws-port",
        metavar="N",
        type=int,
        help="also serve MQTT over WebSocket on port N at /mqtt, dashboard on / (0 = a free port)",
    )
    parser.add_argument("--db", metavar="PATH", help="SQLite file (turns persistence on)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--log-format", choices=("text", "json"), help="log line format")
    parser.add_argument("--version", action="version", version=f"mqttd {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        title="commands",
        description="without a command mqttd runs the broker; "
        "`mqttd COMMAND --help` tells more about each",
    )
    check = commands.add_parser(
        "check-config",
        help="validate a config file (and its TLS files), print OK or the errors",
        description=_CHECK_DESCRIPTION,
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", metavar="FILE", help="the TOML configuration file to check")
    convert = commands.add_parser(
        "convert",
        help="print a mosquitto.conf as mqttd TOML",
        description=_CONVERT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("file", metavar="FILE", help="the mosquitto.conf to convert")
    add_passwd_parser(commands)
    add_ctl_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `mqttd` with `argv` (default: sys.argv[1:]); return the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "passwd":
        return run_passwd(args)
    if args.command == "ctl":
        return run_ctl(args)
    if args.command == "convert":
        return _convert(args.file)
    overrides = Overrides(
        host=args.host,
        port=args.port,
        db=args.db,
        log_level="debug" if args.verbose else None,
        log_format=args.log_format,
        ws_port=getattr(args, "ws_port", None),
    )
    # Imported here: `--help` and `--version` need none of the broker.
    from .app import build_ssl_contexts, check_admin_files, run
    from .bridge.service import build_bridge_ssl_contexts
    from .security import Security

    if args.command == "check-config":
        try:
            if is_mosquitto_conf(args.file):
                mosquitto_config, _ = _load(args.file, overrides)
                checked: Config | None = mosquitto_config
                lines: list[str] = []
            else:
                # Every problem in one pass: the keys and values first, then the files
                # named by the rest (a value in error is left at its default and its
                # file not reported again).
                checked, lines = config_with_errors(read_config_file(args.file, overrides))
        except ConfigError as exc:
            _print_errors(exc)
            return 2
        if checked is not None:
            from .cluster.tls import cluster_ssl_context

            checks = (
                build_ssl_contexts,
                build_bridge_ssl_contexts,
                lambda c: Security(c).load(),
                check_admin_files,
                lambda c: cluster_ssl_context(c.cluster),
            )
            for check in checks:
                try:
                    check(checked)
                except ConfigError as exc:
                    lines += [line for line in exc.lines if not _reported(line, lines)]
        if lines and is_mosquitto_conf(args.file):
            lines = locate_errors(args.file, lines)
        if lines:
            _print_errors(ConfigError(lines))
            return 2
        print(f"{args.file}: OK")
        if checked is not None and checked.cluster.enabled:
            print(_cluster_packet_note(checked))
        return 0
    try:
        config, notes = _load(args.config, overrides)
    except ConfigError as exc:
        _print_errors(exc)
        return 2
    from .ops.logging import log_options, setup_logging

    try:
        setup_logging(**log_options(config))
    except (OSError, ValueError) as exc:
        print(f"config error: log: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        # Said once: options of a mosquitto.conf that change nothing a client sees.
        logging.getLogger("mqttd").info("mosquitto.conf option without effect: %s", note)
    # SIGHUP loads the same file with the same command-line overrides again.
    path = args.config
    return run(config, reload=(lambda: _load(path, overrides)[0]) if path else None)


def _cluster_packet_note(config: Config) -> str:
    """What bounds a cluster node's packets: NATS's max_payload is known only once the
    node connects, so say the rule and the figure for nats-server's default."""
    import socket

    from .cluster.limits import packet_limit

    configured = config.limits.max_packet_size
    limit = packet_limit(1024 * 1024, config.cluster.node or socket.gethostname())
    return (
        "note: [cluster] is on: the largest MQTT packet is limits.max_packet_size"
        f" ({configured} bytes) or what fits NATS's max_payload, whichever is smaller;"
        f" with nats-server's default max_payload of 1 MiB that is {min(configured, limit)}"
        " bytes (the node logs its limit when it joins the cluster)"
    )


def _load(path: str | None, overrides: Overrides) -> tuple[Config, list[str]]:
    """Load a TOML file or a mosquitto.conf (told apart by content); notes to log."""
    if path is not None and is_mosquitto_conf(path):
        return load_mosquitto_config(path, overrides)
    return load_config(path, overrides), []


def _convert(path: str) -> int:
    try:
        text, errors = convert_to_toml(path)
    except OSError as exc:  # pragma: no cover - convert_file reports unreadable files
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    for line in errors:
        print(f"not converted: {line}", file=sys.stderr)
    return 2 if errors else 0


def _reported(line: str, earlier: list[str]) -> bool:
    """True when `line`'s key (e.g. "listeners[0].tls") already has an error in `earlier`."""
    key = line.removeprefix("config error: ").partition(":")[0]
    return any(e.removeprefix("config error: ").startswith(key) for e in earlier)


def _print_errors(exc: ConfigError) -> None:
    for line in exc.lines:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
