"""/metrics read with prometheus_client's own parser: the store's figures, the process
figures, and counts of client traffic that leave out the broker's own $SYS publishes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mqttd.app import App, ephemeral_config
from mqttd.broker.message import Message

from .netclient import NetClient


async def scrape(app: App) -> dict[str, list[Sample]]:
    assert app.metrics is not None
    async with (
        aiohttp.ClientSession() as http,
        http.get(app.metrics.url + "/metrics") as r,
    ):
        assert r.status == 200
        text = await r.text()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def one(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s.value for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


async def test_store_process_and_client_traffic_figures(tmp_path: Path) -> None:
    config = ephemeral_config()
    config.persistence.enabled = True
    config.persistence.path = str(tmp_path / "mqttd.db")
    config.metrics.enabled = True
    config.metrics.port = 0
    config.sys.interval = 1  # $SYS publishes while the test runs
    app = App(config)
    await app.start()
    try:
        keeper = await NetClient.connect(app.listeners["mqtt"], "keeper", clean=False)
        await keeper.subscribe("q/#", qos=1)
        pub = await NetClient.connect(app.listeners["mqtt"], "pub")
        for packet_id in range(1, 11):
            await pub.publish("q/x", b"m", qos=1, packet_id=packet_id)
        await pub.publish("r/one", b"kept", qos=1, packet_id=11)
        app.broker.publish(Message("r/one", b"kept", 0, True))
        for _ in range(10):
            await keeper.next()
        assert app.sys_tree is not None
        assert app.sys_tree.update() > 0  # the broker publishes its $SYS figures now
        await asyncio.sleep(0.6)  # one loop-lag sample
        samples = await scrape(app)

        # The store: commit latency and batch sizes as histograms, queue depth, file size.
        commits = one(samples, "mqttd_store_commit_seconds_count")
        assert commits >= 1
        assert one(samples, "mqttd_store_commit_seconds_bucket", le="+Inf") == commits
        assert one(samples, "mqttd_store_commit_seconds_sum") > 0
        assert one(samples, "mqttd_store_batch_changes_count") == commits
        assert one(samples, "mqttd_store_batch_changes_sum") >= 11  # 10 queued + 1 retained
        assert one(samples, "mqttd_store_pending_writes") >= 0
        assert one(samples, "mqttd_store_database_bytes") > 0
        assert one(samples, "mqttd_store_transactions_total") == commits

        # The process: memory, CPU, file descriptors (2 clients, the db, listeners), lag.
        assert one(samples, "process_resident_memory_bytes") > 1_000_000
        assert one(samples, "process_cpu_seconds_total") > 0
        assert one(samples, "process_open_fds") >= 6
        assert one(samples, "mqttd_event_loop_lag_seconds") >= 0
        assert one(samples, "mqttd_event_loop_lag_max_seconds") >= 0

        # Client traffic only: 11 publishes from pub, 1 from the test; $SYS not counted.
        assert one(samples, "mqttd_messages_routed_total") == 12
        assert one(samples, "mqttd_retained_messages") == 1
        await pub.disconnect()
        await keeper.disconnect()
    finally:
        await app.stop()
