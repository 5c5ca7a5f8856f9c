"""`mqttd ctl`: manage a running broker through its admin API (docs/admin.md).

    mqttd ctl [--url URL] [--key KEY | --user USER] [--json] COMMAND ...

Human-readable tables by default, the API's JSON with ``--json``. Exit status, for
scripts: 0 done, 1 the API answered with an error (not found, bad parameter),
2 bad usage, 3 the API cannot be reached or refused the credentials.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .auth import keygen
from .client import AdminClient, ApiError, Unreachable

__all__ = ["EXIT_API_ERROR", "EXIT_UNREACHABLE", "add_ctl_parser", "run_ctl"]

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

_DESCRIPTION = """\
Talk to the admin API of a running mqttd ([admin] enabled = true in its config).
The URL, key and user come from the options or from the environment: MQTTD_ADMIN_URL
(default http://127.0.0.1:9884), MQTTD_API_KEY, MQTTD_ADMIN_USER and
MQTTD_ADMIN_PASSWORD (asked for when a user is given without it)."""

_EPILOG = """\
exit status: 0 done, 1 API error (e.g. not found), 2 bad usage,
             3 cannot connect or credentials refused

examples:
  mqttd ctl clients --like sensor --state connected
  mqttd ctl client sensor-17
  mqttd ctl kick sensor-17 --discard-session
  mqttd ctl sessions --state disconnected
  mqttd ctl retained list 'site/+/temp'
  mqttd ctl retained delete site/3/temp
  mqttd ctl publish cmd/all reboot --qos 1
  mqttd ctl --json stats
  mqttd ctl keygen ops >> /etc/mqttd/admin-keys   (prints the key on stderr)"""


def add_ctl_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ctl` and its subcommands to the `mqttd` argument parser."""
    ctl = commands.add_parser(
        "ctl",
        help="manage a running broker through its admin API (clients, kick, retained, ...)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ctl.add_argument("--url", help="the admin API, e.g. https://broker:9884")
    ctl.add_argument("--key", help="API key (better: MQTTD_API_KEY, not in the process list)")
    ctl.add_argument("--user", help="admin user of the password file (HTTP Basic)")
    ctl.add_argument("--cafile", help="CA bundle to verify an https API")
    ctl.add_argument("--insecure", action="store_true", help="do not verify https certificates")
    ctl.add_argument("--json", action="store_true", help="print the API's JSON, not a table")
    sub = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--like", help="client id contains this")
        p.add_argument("--username", help="user name contains this")
        p.add_argument("--ip", help="client address is exactly this")
        p.add_argument("--proto", type=int, choices=(3, 4, 5), help="protocol level")
        p.add_argument("--state", choices=("connected", "disconnected"))
        p.add_argument("--page", type=int, default=1)
        p.add_argument("--limit", type=int, default=100)

    filters(sub.add_parser("clients", help="list clients (sessions, connected or not)"))
    filters(sub.add_parser("sessions", help="list sessions, offline ones included"))
    client = sub.add_parser("client", help="one client with its subscriptions")
    client.add_argument("clientid")
    kick = sub.add_parser("kick", help="disconnect a client (5.0: DISCONNECT 0x98)")
    kick.add_argument("clientid")
    kick.add_argument("--discard-session", action="store_true", help="also end its session")
    subs = sub.add_parser("subscriptions", help="list subscriptions")
    subs.add_argument("--client", help="of this client id")
    subs.add_argument("--topic", help="exactly this filter")
    subs.add_argument("--match", help="filters a message on this topic would match")
    subs.add_argument("--page", type=int, default=1)
    subs.add_argument("--limit", type=int, default=100)
    retained = sub.add_parser("retained", help="list, show or delete retained messages")
    rsub = retained.add_subparsers(dest="retained_command", metavar="ACTION", required=True)
    rlist = rsub.add_parser("list", help="retained messages matching FILTER, in topic order")
    rlist.add_argument("filter", nargs="?", default="#", metavar="FILTER")
    rlist.add_argument("--limit", type=int, default=100, help="at most this many (1..1000)")
    rlist.add_argument("--all", action="store_true", help="every match, page after page")
    rget = rsub.add_parser("get", help="one retained message")
    rget.add_argument("topic")
    rdel = rsub.add_parser("delete", help="delete by TOPIC, or every match of --filter")
    target = rdel.add_mutually_exclusive_group(required=True)
    target.add_argument("topic", nargs="?")
    target.add_argument("--filter", dest="delete_filter")
    publish = sub.add_parser("publish", help="publish a message as the broker")
    publish.add_argument("topic")
    publish.add_argument("payload", nargs="?", default="")
    publish.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=0)
    publish.add_argument("-r", "--retain", action="store_true")
    sub.add_parser("stats", help="broker, process and store figures")
    sub.add_parser("reload", help="reload the config file (as SIGHUP)")
    gen = sub.add_parser("keygen", help="make an API key: the file line on stdout, key on stderr")
    gen.add_argument("name")


def _client(args: argparse.Namespace) -> AdminClient:
    user = args.user or os.environ.get("MQTTD_ADMIN_USER")
    password = os.environ.get("MQTTD_ADMIN_PASSWORD")
    if user and password is None:
        password = getpass.getpass(f"password for {user}: ")
    return AdminClient(
        url=args.url or os.environ.get("MQTTD_ADMIN_URL", "http://127.0.0.1:9884"),
        api_key=args.key or os.environ.get("MQTTD_API_KEY"),
        username=user,
        password=password,
        cafile=args.cafile,
        insecure=args.insecure,
    )


def run_ctl(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `mqttd ctl` with parsed `args`; return the exit status."""
    out = out if out is not None else sys.stdout
    command = args.ctl_command
    if command == "keygen":
        try:
            key, line = keygen(args.name)
        except ValueError as exc:
            print(f"mqttd ctl: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(line, file=out)
        print(f"API key for {args.name} (shown once): {key}", file=sys.stderr)
        return EXIT_OK
    api = _client(args)
    try:
        answer, table = _call(api, args)
    except Unreachable as exc:
        print(f"mqttd ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ApiError as exc:
        print(f"mqttd ctl: {exc}", file=sys.stderr)
        return EXIT_API_ERROR
    if args.json:
        json.dump(answer, out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(table)
    return EXIT_OK


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "like_clientid": args.like,
        "like_username": args.username,
        "ip_address": args.ip,
        "proto_ver": args.proto,
        "conn_state": args.state,
        "page": args.page,
        "limit": args.limit,
    }


_CLIENT_COLUMNS = (
    ("CLIENT ID", "clientid"),
    ("USER", "username"),
    ("ADDRESS", "peer"),
    ("PROTO", "proto_ver"),
    ("STATE", "connected"),
    ("SINCE", "connected_at"),
    ("KEEPALIVE", "keepalive"),
    ("INFLIGHT", "inflight"),
    ("QUEUED", "queued"),
    ("SUBS", "subscriptions_cnt"),
)


def _call(api: AdminClient, args: argparse.Namespace) -> tuple[Any, str]:
    """Make the request(s) of one command; (JSON answer, human table)."""
    command = args.ctl_command
    if command in ("clients", "sessions"):
        answer = api.request("GET", f"/{command}", _filters(args))
        return answer, _table(answer["data"], _CLIENT_COLUMNS) + _paged(answer["meta"])
    if command == "client":
        answer = api.request("GET", f"/clients/{_quote(args.clientid)}")
        lines = [f"{k}: {_cell(v)}" for k, v in answer.items() if k != "subscriptions"]
        subs = _table(
            answer["subscriptions"],
            (("FILTER", "topic"), ("QOS", "qos"), ("NO LOCAL", "nl"), ("RAP", "rap"), ("RH", "rh")),
        )
        return answer, "\n".join(lines) + "\n\nsubscriptions:\n" + subs
    if command == "kick":
        answer = api.request(
            "DELETE",
            f"/clients/{_quote(args.clientid)}",
            {"discard_session": args.discard_session},
        )
        state = "disconnected" if answer["was_connected"] else "was not connected"
        extra = ", session discarded" if answer["session_discarded"] else ""
        return answer, f"{answer['clientid']}: {state}{extra}\n"
    if command == "subscriptions":
        params = {
            "clientid": args.client,
            "topic": args.topic,
            "match_topic": args.match,
            "page": args.page,
            "limit": args.limit,
        }
        answer = api.request("GET", "/subscriptions", params)
        columns = (("CLIENT ID", "clientid"), ("FILTER", "topic"), ("QOS", "qos"))
        return answer, _table(answer["data"], columns) + _paged(answer["meta"])
    if command == "retained":
        return _retained(api, args)
    if command == "publish":
        body = {
            "topic": args.topic,
            "payload": args.payload,
            "qos": args.qos,
            "retain": args.retain,
        }
        answer = api.request("POST", "/publish", body=body)
        matched = "delivered to subscribers" if answer["matched"] else "no subscriber matched"
        return answer, f"published to {answer['topic']}: {matched}\n"
    if command == "stats":
        answer = api.request("GET", "/stats")
        lines = []
        for section, figures in answer.items():
            if isinstance(figures, dict):
                lines += [f"{section}.{k}: {_cell(v)}" for k, v in figures.items()]
        return answer, "\n".join(lines) + "\n"
    if command == "reload":
        answer = api.request("POST", "/reload")
        return answer, "\n".join(answer["changes"] or ["nothing changed"]) + "\n"
    raise AssertionError(command)  # argparse allows no other


def _retained(api: AdminClient, args: argparse.Namespace) -> tuple[Any, str]:
    columns = (("TOPIC", "topic"), ("QOS", "qos"), ("SIZE", "size"), ("PAYLOAD", "payload"))
    action = args.retained_command
    if action == "list":
        params = {"filter": args.filter, "limit": args.limit, "count": True}
        if args.all:
            entries = api.pages("/retained", {**params, "limit": 1000, "count": None})
            answer: Any = {"data": entries, "meta": {"count": len(entries)}}
            return answer, _table(entries, columns)
        answer = api.request("GET", "/retained", params)
        meta = answer["meta"]
        more = f"({len(answer['data'])} of {meta['count']}; --all for every one)\n"
        return answer, _table(answer["data"], columns) + (more if meta["hasnext"] else "")
    if action == "get":
        answer = api.request("GET", f"/retained/{_quote(args.topic)}")
        return answer, "\n".join(f"{k}: {_cell(v)}" for k, v in answer.items()) + "\n"
    if args.delete_filter is not None:
        answer = api.request("DELETE", "/retained", {"filter": args.delete_filter})
    else:
        answer = api.request("DELETE", f"/retained/{_quote(args.topic)}")
    return answer, f"deleted {answer['deleted']} retained message(s)\n"


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as aligned columns under a header line."""
    cells = [[title for title, _ in columns]]
    for row in rows:
        values = []
        for _, key in columns:
            value = row.get(key)
            if key == "connected":
                value = "connected" if value else "offline"
            values.append(_cell(value))
        cells.append(values)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in cells
    )


def _paged(meta: dict[str, Any]) -> str:
    if not meta.get("hasnext") and meta.get("page", 1) == 1:
        return ""
    return f"(page {meta['page']}, {meta['limit']} per page, {meta['count']} in all)\n"
