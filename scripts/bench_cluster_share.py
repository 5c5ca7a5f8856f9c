"""QoS 1 throughput of a shared subscription ($share) with a member on each of two nodes.

Starts nats-server (-js, temp store) and two mqttd nodes (persistence off, durable
sessions on: the cluster's default); one member of "$share/bench/bench/#" on each node
(clean 3.1.1 sessions that PUBACK each message as it comes) and publishers on node b
sending QoS 1 with a window of unacknowledged PUBLISHes each, 64-byte payloads. Prints
the messages per second the group received, how they split between the nodes, and any
message missing or received twice.

    python scripts/bench_cluster_share.py [--messages 20000] [--rounds 3] [--tree DIR]

`--tree DIR` runs the nodes from another checkout of mqttd (to compare two versions
with the same client side).
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cluster_bench import ROOT, Packets, open_client, packet, publish_qos1, string, two_nodes

GROUP = "$share/bench/bench/#"


async def run(
    a: int, b: int, messages: int, publishers: int, window: int
) -> tuple[float, Counter[str], int, int]:
    members = []
    for name, port in (("a", a), ("b", b)):
        writer, packets = await open_client(port, f"member-{name}")
        writer.write(packet(0x82, struct.pack("!H", 1) + string(GROUP) + b"\x01"))
        async for first, _ in packets:
            if first >> 4 == 9:
                break
        members.append((name, writer, packets))
    await asyncio.sleep(1.5)  # both nodes pull from the group's consumer
    each = messages // publishers
    messages = each * publishers
    seen: Counter[bytes] = Counter()
    per_node: Counter[str] = Counter()
    done = asyncio.Event()

    async def member(name: str, writer: asyncio.StreamWriter, packets: Packets) -> None:
        async for first, body in packets:
            if first >> 4 != 3:
                continue
            (tlen,) = struct.unpack_from("!H", body)
            if (first >> 1) & 3:
                writer.write(packet(0x40, body[2 + tlen : 4 + tlen]))
                key = body[4 + tlen : 12 + tlen]
            else:
                key = body[2 + tlen : 10 + tlen]
            seen[key] += 1
            per_node[name] += 1
            if len(seen) >= messages:
                done.set()

    def payload(index: int) -> Callable[[int], bytes]:
        return lambda i: struct.pack("!II", index, i) + b"x" * 56

    tasks = [asyncio.create_task(member(*m)) for m in members]
    started = time.perf_counter()
    await asyncio.gather(
        *(publish_qos1(b, i, each, window, payload(i), done) for i in range(publishers))
    )
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # duplicates still on their way
    for task in tasks:
        task.cancel()
    for _, writer, _ in members:
        writer.close()
    twice = sum(n - 1 for n in seen.values() if n > 1)
    return messages / elapsed, per_node, messages - len(seen), twice


def measure(args: argparse.Namespace) -> tuple[float, Counter[str], int, int]:
    with two_nodes(args.tree) as (a, b):
        return asyncio.run(run(a, b, args.messages, args.publishers, args.window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument(
        "--window", type=int, default=50, help="unacknowledged PUBLISHes per publisher"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the mqttd checkout the nodes run")
    args = parser.parse_args()
    rates = []
    for _ in range(args.rounds):
        rate, per_node, missing, twice = measure(args)
        rates.append(rate)
        print(
            f"  {rate:,.0f} msg/s  node a {per_node['a']}, node b {per_node['b']}, "
            f"missing {missing}, twice {twice}",
            flush=True,
        )
    rates.sort()
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(
        f"$share QoS 1, a member on each of 2 nodes: median {rates[len(rates) // 2]:,.0f} msg/s"
        f"  (runs: {runs})"
    )


if __name__ == "__main__":
    main()
