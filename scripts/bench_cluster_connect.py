"""Connection storm on one cluster node: CONNECTs answered per second.

Starts nats-server (-js, temp store) and two mqttd nodes a and b (persistence off,
durable sessions on: the cluster's default), then in turn:

- *clean*: `--clients` fresh client ids connect to node a with a clean session,
  `--concurrency` at a time (each slot opens a connection, sends CONNECT, waits for
  the CONNACK, keeps the connection, takes the next client); every CONNECT claims its
  client id in the cluster;
- *persistent*: as many persistent sessions (3.1.1 clean session 0, one QoS 1
  subscription each) are made on node b, node b is killed (SIGKILL), and their clients
  connect to node a at once, as a fleet reconnects after an outage: every CONNECT takes
  its session over from the dead node (claim, hand-over, the session's log read and
  replayed).

Prints connects per second for each, the CPU time node a and nats-server spent per
connect meanwhile, and the load average. `--before DIR` runs every
round twice, first with the nodes from the checkout DIR (the version to compare with),
then from this one, interleaved, and prints the medians of both.

    python scripts/bench_cluster_connect.py [--clients 2000] [--concurrency 100]
        [--rounds 3] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cluster_bench import NATS, ROOT, connect, free_port, packet, read_packets, start_node, string

SCENARIOS = ("clean", "persistent")


@contextlib.contextmanager
def cluster(tree: Path) -> Iterator[tuple[int, int, dict[str, subprocess.Popen[bytes]]]]:
    """nats-server and nodes a and b run from `tree`: a's port, b's port, the processes
    by name ("nats", "a", "b")."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        nats_port = free_port()
        nats = subprocess.Popen(
            [NATS, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp / "js")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs = [nats]
        try:
            time.sleep(0.5)
            node_a, a = start_node(tmp, nats_port, "a", tree, "")
            procs.append(node_a)
            node_b, b = start_node(tmp, nats_port, "b", tree, "")
            procs.append(node_b)
            yield a, b, {"nats": nats, "a": node_a, "b": node_b}
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) a process used so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def storm(
    port: int, ids: list[str], clean: bool, concurrency: int, subscribe: bool = False
) -> tuple[float, int, list[asyncio.StreamWriter]]:
    """Connect `ids` to `port`, `concurrency` at a time: seconds from the first CONNECT
    to the last CONNACK, CONNACKs refusing, and the open connections."""
    todo = iter(ids)
    writers: list[asyncio.StreamWriter] = []
    refused = 0

    async def slot() -> None:
        nonlocal refused
        for client_id in todo:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            writer.write(connect(client_id, clean))
            packets = read_packets(reader)
            first, body = await packets.__anext__()
            assert first >> 4 == 2, "no CONNACK"
            if body[1]:
                refused += 1
            if subscribe:
                topic = string(f"dev/{client_id}/cmd")
                writer.write(packet(0x82, struct.pack("!H", 1) + topic + b"\x01"))
                first, _ = await packets.__anext__()
                assert first >> 4 == 9, "no SUBACK"

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(slot() for _ in range(concurrency))), 600)
    return time.perf_counter() - started, refused, writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.write(b"\xe0\x00")  # DISCONNECT
        writer.close()
    await asyncio.sleep(0.5)


async def round_on(
    a: int, b: int, procs: dict[str, subprocess.Popen[bytes]], clients: int, concurrency: int
) -> dict[str, float]:
    """Connects per second of each scenario, and the CPU per connect (µs) of node a
    ("<scenario> a") and of nats-server ("<scenario> nats")."""
    rates: dict[str, float] = {}

    def cpu() -> tuple[float, float]:
        return cpu_seconds(procs["a"]), cpu_seconds(procs["nats"])

    def count(scenario: str, before: tuple[float, float], elapsed: float) -> None:
        after = cpu()
        rates[scenario] = clients / elapsed
        rates[f"{scenario} a"] = (after[0] - before[0]) / clients * 1e6
        rates[f"{scenario} nats"] = (after[1] - before[1]) / clients * 1e6

    ids = [f"clean-{i}" for i in range(clients)]
    used = cpu()
    elapsed, refused, writers = await storm(a, ids, True, concurrency)
    assert not refused, f"{refused} CONNECTs refused"
    count("clean", used, elapsed)
    await close_all(writers)
    ids = [f"dev-{i}" for i in range(clients)]
    _, refused, writers = await storm(b, ids, False, concurrency, subscribe=True)
    assert not refused, f"{refused} CONNECTs refused on node b"
    await asyncio.sleep(1.0)  # the sessions' records stored in JetStream
    os.killpg(procs["b"].pid, signal.SIGKILL)
    procs["b"].wait()
    for writer in writers:
        writer.close()
    used = cpu()
    elapsed, refused, writers = await storm(a, ids, False, concurrency)
    assert not refused, f"{refused} CONNECTs refused"
    count("persistent", used, elapsed)
    await close_all(writers)
    return rates


def measure(tree: Path, clients: int, concurrency: int) -> dict[str, float]:
    with cluster(tree) as (a, b, procs):
        return asyncio.run(round_on(a, b, procs, clients, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100, help="CONNECTs at a time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a checkout to compare with, interleaved")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients)), hard))
    trees = {"this tree": ROOT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": ROOT}
    results: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    loads = []
    for n in range(args.rounds):
        for name, tree in trees.items():
            rates = measure(tree, args.clients, args.concurrency)
            load = os.getloadavg()[0]
            loads.append(load)
            for key, value in rates.items():
                results[name].setdefault(key, []).append(value)
            figures = ", ".join(
                f"{s} {rates[s]:,.0f}/s (CPU µs per connect: node a {rates[s + ' a']:,.0f},"
                f" nats-server {rates[s + ' nats']:,.0f})"
                for s in SCENARIOS
            )
            print(f"round {n + 1} {name}: {figures}  (load average {load:.2f})", flush=True)
    print(
        f"{args.clients} clients, {args.concurrency} at a time, to one of 2 nodes; "
        f"load average {min(loads):.2f}-{max(loads):.2f}"
    )
    for scenario in SCENARIOS:
        for name in trees:
            runs = results[name][scenario]
            listed = " / ".join(f"{r:,.0f}" for r in sorted(runs))
            node_a = statistics.median(results[name][scenario + " a"])
            nats = statistics.median(results[name][scenario + " nats"])
            print(
                f"  {scenario:<10} {name:<9} median {statistics.median(runs):,.0f} connects/s"
                f"  (runs: {listed}); CPU µs per connect: node a {node_a:,.0f},"
                f" nats-server {nats:,.0f}"
            )


if __name__ == "__main__":
    main()
