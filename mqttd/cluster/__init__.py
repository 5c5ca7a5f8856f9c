"""Cluster mode: several mqttd processes act as one broker over NATS (docs/cluster.md).

`backplane.NatsBackplane` is the core's `Backplane` on NATS with JetStream; `subjects`
maps MQTT topics and filters to NATS subjects; `envelope` is the bytes of one message
between nodes; `tls` builds the TLS context for NATS. Only `backplane` imports nats-py,
and only a process with `[cluster] enabled = true` imports it.
"""
