"""QoS 1 throughput to a persistent session across two cluster nodes, durable or not.

Starts nats-server (-js, temp store) and two mqttd nodes (persistence off) for each
setting of `[cluster] durable_sessions`; a persistent 3.1.1 subscriber on node a, and
publishers on node b sending QoS 1 with a window of unacknowledged PUBLISHes each.
Prints the messages per second the subscriber received (PUBACKed as they come). The
nodes queue without bound (`max_queued_messages = 0`): back-pressure does not cross
nodes, so a bounded queue on node a would drop what node b routes faster than a sends.

    python scripts/bench_cluster_sessions.py [--messages 20000] [--publishers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time

from cluster_bench import open_client, packet, publish_qos1, string, two_nodes


async def run(a: int, b: int, messages: int, publishers: int, window: int) -> float:
    sub_w, sub_packets = await open_client(a, "bench-sub", clean=False)
    sub_w.write(packet(0x82, struct.pack("!H", 1) + string("bench/#") + b"\x01"))
    async for first, _ in sub_packets:
        if first >> 4 == 9:
            break
    await asyncio.sleep(1.0)  # the subscription reaches node b
    received = 0
    done = asyncio.Event()

    async def subscriber() -> None:
        nonlocal received
        async for first, body in sub_packets:
            if first >> 4 != 3:
                continue
            (tlen,) = struct.unpack_from("!H", body)
            if (first >> 1) & 3:
                sub_w.write(packet(0x40, body[2 + tlen : 4 + tlen]))
            received += 1
            if received >= messages:
                done.set()
                return

    sub_task = asyncio.create_task(subscriber())
    started = time.perf_counter()
    each = messages // publishers
    messages = each * publishers
    payload = b"x" * 64
    await asyncio.gather(
        *(publish_qos1(b, i, each, window, lambda _: payload, done) for i in range(publishers))
    )
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    sub_task.cancel()
    sub_w.close()
    return messages / elapsed


def measure(durable: bool, args: argparse.Namespace) -> float:
    with two_nodes(cluster_extra=f"durable_sessions = {str(durable).lower()}") as (a, b):
        return asyncio.run(run(a, b, args.messages, args.publishers, args.window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument(
        "--window", type=int, default=50, help="unacknowledged PUBLISHes per publisher"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for durable in (False, True):
        rates = [measure(durable, args) for _ in range(args.rounds)]
        rates.sort()
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(
            f"durable_sessions={str(durable).lower():5}  QoS 1 to a persistent session "
            f"across 2 nodes: median {rates[len(rates) // 2]:,.0f} msg/s  (runs: {runs})"
        )


if __name__ == "__main__":
    main()
