#!/usr/bin/env python3
"""Benchmarks of the SQLite store: start-up load time, and QoS 1 throughput with group commit.

    python scripts/bench_store.py load                       # 1,000,000 retained, 100,000 sessions
    python scripts/bench_store.py load --retained 100000 --sessions 10000
    python scripts/bench_store.py throughput                 # 3 rounds, persistence on vs off
    python scripts/bench_store.py throughput -m 60000

`load` fills a database file directly (sqlite3, the store's own schema): retained messages
of 64 bytes on `fleet/<n>/<m>/state`, persistent sessions with two subscriptions and one
queued QoS 1 message each. Then it times `SqliteStore.open()` (locking, quick_check),
`load()`, and a whole `Broker.start()` on a fresh store (open + load + restoring the
retained tree, the subscription tree and the sessions), and prints the peak RSS.

`throughput` runs `loadgen -s fan-in -P 4 -q 1 -b 64` against a fresh `python -m mqttd`
process, once with `--db FILE` (SQLite, durability safe) and once with `--db :memory:`,
interleaved, `--rounds` times. In both, one extra subscriber with a persistent session
(clean session 0) subscribes QoS 1 to `bench/in/#` (loadgen's fan-in publishers use
`bench/in/<i>`) and acknowledges at once, so every message is recorded for it and every
PUBACK to the publishers waits for a group commit. It prints the medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import build_loadgen  # noqa: E402

from mqttd.broker.broker import Broker  # noqa: E402
from mqttd.broker.clock import MonotonicClock  # noqa: E402
from mqttd.broker.settings import BrokerSettings  # noqa: E402
from mqttd.store.base import pack_retained  # noqa: E402
from mqttd.store.sqlite import SqliteStore  # noqa: E402

LISTENING_RE = re.compile(r"listening on mqtt://([\d.]+):(\d+)")
NEVER = 0xFFFFFFFF
#: How the broker is run (MQTTD_BENCH_PYTHON="python -m cProfile -o FILE" to profile it).
PYTHON = os.environ.get("MQTTD_BENCH_PYTHON", sys.executable).split()


# -- load ----------------------------------------------------------------------------------


def fill(path: Path, retained: int, sessions: int) -> None:
    """Create the schema through the store, then insert rows directly, in bulk."""

    async def create() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous = OFF")
    payload = b"x" * 64
    now = time.time()
    with con:
        con.executemany(
            "INSERT INTO retained (topic, record) VALUES (?, ?)",
            (
                (f"fleet/{i // 1000}/{i % 1000}/state", pack_retained(1, True, f"dev-{i}", payload))
                for i in range(retained)
            ),
        )
        con.executemany(
            "INSERT INTO sessions (client_id, protocol_level, expiry_interval, disconnected_at)"
            " VALUES (?, 4, ?, ?)",
            ((f"client-{i}", NEVER, now) for i in range(sessions)),
        )
        con.executemany(
            "INSERT INTO subscriptions (client_id, topic_filter, qos, no_local,"
            " retain_as_published, retain_handling, subscription_identifier)"
            " VALUES (?, ?, 1, 0, 0, 0, NULL)",
            (
                row
                for i in range(sessions)
                for row in (
                    (f"client-{i}", f"cmd/client-{i}/#"),
                    (f"client-{i}", f"fleet/{i % 1000}/+/state"),
                )
            ),
        )
        con.executemany(
            "INSERT INTO messages (id, topic, payload, qos, retain, properties, expiry_at, origin)"
            " VALUES (?, ?, ?, 1, 0, NULL, NULL, 'server')",
            ((i + 1, f"cmd/client-{i}/reboot", payload) for i in range(sessions)),
        )
        con.executemany(
            "INSERT INTO outbound (client_id, seq, message_id, qos, retain, subscription_ids,"
            " packet_id, state) VALUES (?, 1, ?, 1, 0, NULL, NULL, 0)",
            ((f"client-{i}", i + 1) for i in range(sessions)),
        )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


async def time_load(path: Path) -> dict[str, float]:
    """Seconds for open, load, and a whole Broker.start() on a fresh store."""
    figures: dict[str, float] = {}
    store = SqliteStore(path)
    t0 = time.perf_counter()
    await store.open()
    t1 = time.perf_counter()
    state = await store.load()
    t2 = time.perf_counter()
    await store.close()
    figures["open"] = t1 - t0
    figures["load"] = t2 - t1
    figures["loaded_retained"] = len(state.retained)
    figures["loaded_sessions"] = len(state.sessions)
    del state
    broker = Broker(BrokerSettings(), SqliteStore(path), MonotonicClock())
    t0 = time.perf_counter()
    await broker.start()
    figures["broker_start"] = time.perf_counter() - t0
    figures["broker_retained"] = len(broker.retained)
    figures["broker_sessions"] = len(broker.sessions)
    t0 = time.perf_counter()
    await broker.stop()
    figures["broker_stop"] = time.perf_counter() - t0
    return figures


def run_load(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "mqttd.db"
        if not path.exists():
            t0 = time.perf_counter()
            fill(path, args.retained, args.sessions)
            print(f"filled {path} in {time.perf_counter() - t0:.1f} s", flush=True)
        size = path.stat().st_size / 1e6
        print(
            f"database: {args.retained:,} retained, {args.sessions:,} sessions "
            f"(2 subscriptions and 1 queued message each), {size:.0f} MB"
        )
        f = asyncio.run(time_load(path))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"SqliteStore.open()  {f['open']:7.2f} s   (flock, WAL, quick_check)")
        print(
            f"SqliteStore.load()  {f['load']:7.2f} s   ({f['loaded_retained']:,.0f} retained, "
            f"{f['loaded_sessions']:,.0f} sessions)"
        )
        print(
            f"Broker.start()      {f['broker_start']:7.2f} s   (open + load + restore: "
            f"{f['broker_retained']:,.0f} retained, {f['broker_sessions']:,.0f} sessions)"
        )
        print(f"Broker.stop()       {f['broker_stop']:7.2f} s")
        print(f"peak RSS            {rss:7.0f} MB")


# -- throughput ------------------------------------------------------------------------------


class _Drain(asyncio.Protocol):
    """A persistent-session subscriber that PUBACKs every QoS 1 PUBLISH at once."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.received = 0
        self.connack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        out = bytearray()
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length = 0
            shift = 0
            i = pos + 1
            while True:
                if i >= end:
                    break
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            if byte & 0x80 or i + length > end:
                break
            kind = first >> 4
            if kind == 3:
                self.received += 1
                if first & 0x06:
                    n = (buf[i] << 8) | buf[i + 1]
                    out += b"\x40\x02" + buf[i + 2 + n : i + 4 + n]
            elif kind == 2 and not self.connack.done():
                self.connack.set_result(bytes(buf[i : i + length]))
            elif kind == 9 and not self.suback.done():
                self.suback.set_result(bytes(buf[i : i + length]))
            pos = i + length
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(ConnectionError("closed"))


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x00\x00\x00" + len(cid).to_bytes(2, "big") + cid  # clean 0
    return bytes((0x10, len(body))) + body


def _subscribe_packet(topic_filter: str, qos: int) -> bytes:
    raw = topic_filter.encode()
    body = b"\x00\x01" + len(raw).to_bytes(2, "big") + raw + bytes((qos,))
    return bytes((0x82, len(body))) + body


async def _drain_run(host: str, port: int, command: list[str]) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    transport, drain = await loop.create_connection(_Drain, host, port)
    transport.write(_connect_packet("bench-store-keeper"))
    await asyncio.wait_for(drain.connack, 5)
    transport.write(_subscribe_packet("bench/in/#", 1))
    assert (await asyncio.wait_for(drain.suback, 5))[-1] == 1, "SUBACK did not grant QoS 1"
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    transport.close()
    return out.decode(errors="replace"), drain.received


def _start_mqttd(
    db: str, cwd: Path, persistence: dict[str, object]
) -> tuple[subprocess.Popen[bytes], str, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    config = cwd / "mqttd.toml"
    lines = ["[persistence]"]
    for key, value in persistence.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    config.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [*PYTHON, "-m", "mqttd", "-c", str(config), "-p", "0", "--host", "127.0.0.1", "--db", db],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    text = ""
    deadline = time.monotonic() + 20
    while "mqttd ready" not in text:
        line = proc.stderr.readline().decode(errors="replace")
        if not line or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mqttd did not start:\n{text}")
        text += line
    match = LISTENING_RE.search(text)
    assert match is not None, text
    return proc, match.group(1), int(match.group(2))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _result(output: str) -> dict[str, str]:
    """loadgen's JSON result line, values as text (as the callers read them)."""
    line = next((ln for ln in reversed(output.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"no result line from loadgen:\n{output}")
    return {k: str(v) for k, v in json.loads(line).items()}


def run_throughput(args: argparse.Namespace) -> None:
    bench = Path(args.bench) if args.bench else build_loadgen()
    rates: dict[str, list[float]] = {"sqlite": [], "memory": []}
    persistence: dict[str, object] = {"durability": args.durability}
    if args.commit_interval_ms is not None:
        persistence["commit_interval_ms"] = args.commit_interval_ms
    for round_no in range(1, args.rounds + 1):
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
                db = str(Path(tmp) / "data" / "mqttd.db") if mode == "sqlite" else ":memory:"
                proc, host, port = _start_mqttd(db, Path(tmp), persistence)
                try:
                    command = [
                        str(bench), "-H", host, "-p", str(port), "-s", "fan-in", "-P", "4",
                        "-q", "1", "-m", str(args.messages), "-b", "64", "-R", str(proc.pid),
                        "-L", f"mqttd-{mode}",
                    ]  # fmt: skip
                    output, extra = asyncio.run(_drain_run(host, port, command))
                finally:
                    _stop(proc)
            result = _result(output)
            rate = float(result["msgs_per_s"])
            rates[mode].append(rate)
            print(
                f"round {round_no} {mode:6}: {rate:9,.0f} msg/s"
                f" delivered={result.get('delivered')}"
                f" lost={result.get('lost')} p99={result.get('p99_us')}us"
                f" broker_cpu={result.get('broker_cpu_s')}s;"
                f" persistent subscriber got {extra:,}",
                flush=True,
            )
    if not (rates["sqlite"] and rates["memory"]):
        return
    on = statistics.median(rates["sqlite"])
    off = statistics.median(rates["memory"])
    print(
        f"\nfan-in QoS 1, 4 publishers, 64 B, + 1 persistent-session subscriber "
        f"(medians of {args.rounds}):\n"
        f"  persistence on (SQLite, {args.durability}, group commit): {on:9,.0f} msg/s\n"
        f"  persistence off (--db :memory:):             {off:9,.0f} msg/s\n"
        f"  ratio on/off: {on / off:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="start-up load time of a big database")
    load.add_argument("--retained", type=int, default=1_000_000)
    load.add_argument("--sessions", type=int, default=100_000)
    load.add_argument("--db", help="use (and keep) this file; filled if it does not exist")
    throughput = commands.add_parser("throughput", help="QoS 1 fan-in, persistence on vs off")
    throughput.add_argument(
        "--bench", default="", help="a loadgen binary (default: built as scripts/bench.py does)"
    )
    throughput.add_argument("-m", "--messages", type=int, default=100_000)
    throughput.add_argument("--rounds", type=int, default=3)
    throughput.add_argument("--durability", choices=("safe", "fast"), default="safe")
    throughput.add_argument("--modes", default="sqlite,memory", help="which runs, in order")
    throughput.add_argument(
        "--commit-interval-ms", type=int, help="persistence.commit_interval_ms (default: mqttd's)"
    )
    args = parser.parse_args()
    if args.command == "load":
        run_load(args)
    else:
        run_throughput(args)


if __name__ == "__main__":
    main()
