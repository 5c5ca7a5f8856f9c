#!/usr/bin/env python3
"""Latency of the admin API's list pages with 20,000 clients and 1,000,000 retained messages.

The broker core runs in this process with a memory store. The clients are in-process
sans-IO connections (`Broker.connection` with a sink that keeps nothing), because the
machine's file-descriptor limit (20,000) leaves no room for 20,000 sockets plus the
benchmark's own: the API walks the same Session and Connection objects either way. Half
of them subscribe to two filters; every tenth is offline with a persistent session. The
retained messages are "site/<s>/dev/<d>/temp" with 1000 sites x 1000 devices.

The admin API is the real aiohttp server on 127.0.0.1 and each page is fetched with the
aiohttp client over a socket, so a figure includes HTTP parsing, JSON encoding and the
loopback round trip. Each page is fetched `--runs` times; the median and the slowest are
printed, in milliseconds. Retained pages walk the retained tree from their cursor
(RetainedTree.iter_sorted); a first page also counts the matches.

Usage: .venv/bin/python scripts/bench_admin.py [--clients N] [--retained N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from mqttd.admin.auth import AdminAuth
from mqttd.admin.server import AdminServer
from mqttd.broker.broker import Broker
from mqttd.broker.clock import MonotonicClock
from mqttd.broker.message import Message
from mqttd.broker.settings import BrokerSettings
from mqttd.protocol import Connect, Subscribe, Subscription, encode
from mqttd.store.memory import MemoryStore


class NullSink:
    """A client that reads everything and keeps nothing."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def populate(broker: Broker, clients: int, retained: int) -> None:
    # Retained first: published before anyone subscribes, nothing is delivered.
    started = time.perf_counter()
    sites = max(1, retained // 1000)
    for n in range(retained):
        topic = f"site/{n % sites}/dev/{n // sites}/temp"
        broker.publish(Message(topic, b"21.5", 0, True), None)
    print(f"{retained:,} retained messages in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    for i in range(clients):
        peer = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{1024 + i % 60000}"
        connection = broker.connection(NullSink(), peer, "mqtt")
        offline = i % 10 == 9
        connection.data_received(
            encode(Connect(f"device-{i:06d}", 4, not offline, 60, f"user{i % 50}", b"pw"), 4)
        )
        if i % 2 == 0:
            # Subscribing to site/N/# delivers that site's retained messages: to a sink
            # that keeps nothing, but it takes a while with a million of them.
            requests = [
                Subscription(f"site/{i % sites}/dev/{i}/cmd", 1),
                Subscription(f"site/{i % sites}/dev/{i}/#", 0),
            ]
            connection.data_received(encode(Subscribe(1, requests), 4))
        if offline:
            connection.connection_lost()
    print(
        f"{clients:,} clients ({clients // 10:,} offline) in {time.perf_counter() - started:.1f} s"
    )


async def timed(fetch: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await fetch()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), max(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--retained", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    settings = BrokerSettings(max_connections=0)
    broker = Broker(settings, MemoryStore(), MonotonicClock())
    await broker.start()
    populate(broker, args.clients, args.retained)
    gc.collect()
    gc.freeze()  # a million retained messages: keep the collector off them while timing

    server = AdminServer(broker, AdminAuth())
    await server.start("127.0.0.1", 0)
    async with aiohttp.ClientSession(base_url=server.url) as http:

        def get(path: str, **params: Any) -> Callable[[], Awaitable[Any]]:
            async def fetch() -> Any:
                async with http.get("/api/v1" + path, params=params) as r:
                    assert r.status == 200, (path, r.status, await r.text())
                    return await r.json()

            return fetch

        probe = f"device-{(args.clients // 2) & ~1:06d}"  # connected, two subscriptions
        pages: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("clients page 1 (100 per page)", get("/clients", limit=100)),
            ("clients page 150 (100 per page)", get("/clients", page=150, limit=100)),
            ("clients like_clientid=device-0199", get("/clients", like_clientid="device-0199")),
            ("clients conn_state=disconnected", get("/clients", conn_state="disconnected")),
            ("clients limit=1000", get("/clients", limit=1000)),
            ("sessions page 1", get("/sessions")),
            ("one client's detail", get(f"/clients/{probe}")),
            ("subscriptions page 1", get("/subscriptions")),
            ("subscriptions of one client", get("/subscriptions", clientid=probe)),
            ("retained site/17/# (1,000 match)", get("/retained", filter="site/17/#")),
            ("retained one topic", get("/retained/site/17/dev/3/temp")),
        ]
        print(f"\nper page, {args.runs} runs each, milliseconds   median   slowest")
        for name, fetch in pages:
            median, worst = await timed(fetch, args.runs)
            print(f"  {name:<44} {median:7.1f}  {worst:7.1f}")

        # Retained "#" (every message), first page and pages further on (cursor).
        median, worst = await timed(get("/retained", filter="#", limit=100), args.runs)
        print(f"  {'retained # first page (counted by a length)':<44} {median:7.1f}  {worst:7.1f}")
        sites = max(1, args.retained // 1000)
        cursor = f"site/{sites // 2}/dev/{args.retained // sites // 2}/temp"  # halfway
        times = []
        for _ in range(args.runs):
            began = time.perf_counter()
            page = await get("/retained", filter="#", limit=100, cursor=cursor)()
            times.append((time.perf_counter() - began) * 1000)
            cursor = page["meta"]["cursor"]
        print(
            f"  {'retained # next pages, from halfway (cursor)':<44}"
            f" {statistics.median(times):7.1f}  {max(times):7.1f}"
        )
        name = "retained site/+/dev/7/temp, count=true"
        page_of = get("/retained", filter="site/+/dev/7/temp", count="true")
        median, worst = await timed(page_of, args.runs)
        print(f"  {name:<44} {median:7.1f}  {worst:7.1f}")
        deep = (await get("/retained", filter="#", limit=1)())["meta"]["count"]
        print(f"\n{deep:,} retained messages match '#'")
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
