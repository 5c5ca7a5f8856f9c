"""Bridges to other MQTT brokers (docs/bridges.md).

- `topics`: the topic rules (Mosquitto's ``topic pattern direction qos local remote``);
- `validate`: the checks of `[[bridge]]` tables that config.py runs;
- `client`: a small asyncio MQTT client on our codec (`MqttClient`);
- `loopback`: the in-process transport joining a client to the local broker;
- `bridge`: one bridge (`Bridge`), its two legs and the QoS flows mirrored between them;
- `service`: every configured bridge of an App (`BridgeService`).

This package imports nothing here, so that loading a configuration (which runs
`validate`) does not pull in asyncio and the broker.
"""
