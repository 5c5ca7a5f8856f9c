"""Two nodes as in-process Apps on one event loop and a real nats-server: figures, leaving.

Faster than processes, and it can look inside: the backplane's counters, its NATS
subscriptions, the heartbeat bucket, and the node's /metrics.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import nats
import pytest
from ops.netclient import NetClient, http_get

from mqttd.app import App, ephemeral_config, running
from mqttd.cluster.backplane import NatsBackplane, _kv_key
from mqttd.config import Config
from mqttd.protocol import Publish

from .conftest import NatsServer

pytestmark = pytest.mark.timeout(60)


def node_config(nats: NatsServer, node: str, metrics: bool = False) -> Config:
    config = ephemeral_config()
    config.cluster.enabled = True
    config.cluster.name = "t"
    config.cluster.node = node
    config.cluster.urls = [nats.url]
    config.cluster.heartbeat_interval = 0.2
    # Room for a loaded machine: a node whose heartbeats stall this long fences itself.
    config.cluster.node_timeout = 3.0
    if metrics:
        config.metrics.enabled = True
        config.metrics.port = 0
    return config


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def cluster_of(app: App) -> NatsBackplane:
    assert app.cluster is not None
    return app.cluster


async def test_nodes_count_their_routing_and_show_it_on_metrics(nats_server: NatsServer) -> None:
    async with (
        running(node_config(nats_server, "a", metrics=True)) as a,
        running(node_config(nats_server, "b")) as b,
    ):
        ca, cb = cluster_of(a), cluster_of(b)
        await until(lambda: ca.peers == ["a", "b"] and cb.peers == ["a", "b"])
        sub = await NetClient.connect(("127.0.0.1", b.port), "sub")
        await sub.subscribe("fig/+", 0)
        # "fig/+" is one filter, one subject; a second holder adds no NATS subscription.
        other = await NetClient.connect(("127.0.0.1", b.port), "other")
        await other.subscribe("fig/+", 0)
        assert cb.interest["fig/+"] == 2
        assert cb.figures()["nats_subscriptions"] == 1
        pub = await NetClient.connect(("127.0.0.1", a.port), "pub")
        got: list[bytes] = []
        for i in range(50):
            await pub.publish("fig/x", f"{i}".encode())
            try:
                packet = await asyncio.wait_for(sub.expect(Publish), 0.1)
                got.append(packet.payload)
                break
            except TimeoutError:
                continue
        assert got
        assert ca.figures()["routed_out_total"] >= 1
        assert cb.figures()["routed_in_total"] >= 1
        assert a.metrics_address is not None
        status, _, body = await http_get(a.metrics_address, "/metrics")
        text = body.decode()
        assert status.endswith("200 OK"), status
        assert 'mqttd_cluster_peers{node="a"} 2' in text
        assert 'mqttd_cluster_nats_connected{node="a"} 1' in text
        assert "mqttd_cluster_routed_out_total" in text
        assert "mqttd_cluster_routed_in_total" in text
        # The NATS round trip, measured at each heartbeat: a real, small figure.
        await until(lambda: ca.rtt > 0)
        rtt = ca.figures()["nats_rtt_seconds"]
        assert 0 < rtt < 1
        status, _, body = await http_get(a.metrics_address, "/metrics")
        line = next(
            x for x in body.decode().splitlines() if x.startswith("mqttd_cluster_nats_rtt_seconds")
        )
        assert 0 < float(line.split()[-1]) < 1, line
        # The last holder of the filter leaving takes the NATS subscription away.
        await sub.disconnect()
        await other.disconnect()
        await until(lambda: cb.figures()["nats_subscriptions"] == 0 and not cb.interest)
        await pub.disconnect()


async def test_a_stopped_node_leaves_the_live_nodes_before_its_heartbeat_runs_out(
    nats_server: NatsServer,
) -> None:
    async with running(node_config(nats_server, "stays")) as stays:
        cluster = cluster_of(stays)
        async with running(node_config(nats_server, "leaves")):
            await until(lambda: cluster.peers == ["leaves", "stays"])
        started = time.monotonic()
        await until(lambda: cluster.peers == ["stays"], timeout=0.9)  # under node_timeout
        assert time.monotonic() - started < 1.0  # far under node_timeout


async def test_a_released_client_id_leaves_the_bucket(nats_server: NatsServer) -> None:
    async with running(node_config(nats_server, "a")) as a:
        cluster = cluster_of(a)
        client = await NetClient.connect(("127.0.0.1", a.port), "short-lived")
        await until(lambda: cluster.claims.token("short-lived") is not None)
        assert cluster._clients is not None
        keys = await cluster._clients.keys()
        assert len(keys) == 1
        await client.disconnect()
        await until(lambda: cluster.claims.token("short-lived") is None)
        await until(lambda: not cluster.requests.busy)
        from nats.js.errors import NoKeysError

        with pytest.raises(NoKeysError):
            await cluster._clients.keys()


async def test_a_topic_too_long_for_a_subject_still_crosses(nats_server: NatsServer) -> None:
    long_topic = "long/" + "x" * 4000
    async with (
        running(node_config(nats_server, "a")) as a,
        running(node_config(nats_server, "b")) as b,
    ):
        sub = await NetClient.connect(("127.0.0.1", b.port), "sub")
        await sub.subscribe("long/+", 0)
        other = await NetClient.connect(("127.0.0.1", b.port), "other")
        await other.subscribe("short/#", 0)  # gets the long subject too: its tree says no
        pub = await NetClient.connect(("127.0.0.1", a.port), "pub")
        packet = None
        for _ in range(50):
            await pub.publish(long_topic, b"far")
            try:
                packet = await asyncio.wait_for(sub.expect(Publish), 0.1)
                break
            except TimeoutError:
                continue
        assert packet is not None and packet.topic == long_topic
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.next(), 0.3)


async def test_sys_shows_the_nodes_cluster_figures(nats_server: NatsServer) -> None:
    config = node_config(nats_server, "a")
    config.sys.interval = 1
    async with running(config) as a:
        client = await NetClient.connect(("127.0.0.1", a.port), "sys-reader")
        await client.subscribe("$SYS/broker/cluster/#", 0)
        figures: dict[str, bytes] = {}
        wanted = ("node", "peers", "nats/connected", "nats/rtt_seconds", "routed/in")
        while any(f"$SYS/broker/cluster/{key}" not in figures for key in wanted):
            packet = await client.expect(Publish)
            figures[packet.topic] = packet.payload
        assert figures["$SYS/broker/cluster/node"] == b"a"
        assert figures["$SYS/broker/cluster/nats/connected"] == b"1"
        assert figures["$SYS/broker/cluster/peers"] == b"1"
        assert figures["$SYS/broker/cluster/routed/in"] == b"0"
        # -1 until the first heartbeat has measured it.
        assert float(figures["$SYS/broker/cluster/nats/rtt_seconds"]) != 0


async def test_a_slow_takeover_does_not_delay_other_clients_connacks(
    nats_server: NatsServer,
) -> None:
    # Node "ghost" holds client id "stuck" and never answers its takeover request (alive
    # but stuck): the claim of "stuck" waits `request_timeout` for it. The CONNECTs of
    # other clients to the same node meanwhile are answered at once.
    config = node_config(nats_server, "a")
    config.cluster.request_timeout = 3.0
    ghost = await nats.connect(nats_server.url)
    try:
        asked = asyncio.Event()

        async def never_answer(msg: object) -> None:
            asked.set()

        await ghost.subscribe("mqttd.t.node.ghost.takeover", cb=never_answer)
        async with running(config) as a:
            kv = await ghost.jetstream().key_value("mqttd_t_clients")
            await kv.put(_kv_key("stuck"), json.dumps({"node": "ghost", "boot": 1}).encode())
            started = time.monotonic()
            stuck = asyncio.create_task(NetClient.connect(("127.0.0.1", a.port), "stuck"))
            await asyncio.wait_for(asked.wait(), 2.0)
            others = await asyncio.gather(
                *(NetClient.connect(("127.0.0.1", a.port), f"other-{i}") for i in range(20))
            )
            others_done = time.monotonic() - started
            assert not stuck.done()
            assert cluster_of(a).figures()["jetstream_requests"] == 1  # the stuck claim
            client = await stuck
            stuck_done = time.monotonic() - started
            # One queue for every claim made the 20 wait the full 3 s behind "stuck".
            assert others_done < 1.5, others_done
            assert stuck_done >= 2.9, stuck_done
            for other in (client, *others):
                await other.disconnect()
    finally:
        await ghost.close()
