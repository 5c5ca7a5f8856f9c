"""Bridges to other MQTT brokers (docs/bridges.md).

- `topics`: the topic rules (Mosquitto's ``topic pattern direction qos local remote``);
- `validate`: the names of the `[[bridge]]` checks, which live in config.py;
- `client`: a small asyncio MQTT client on our codec (`MqttClient`);
- `loopback`: the in-process transport joining a client to the local broker;
- `bridge`: one bridge (`Bridge`), its two legs and the QoS flows mirrored between them;
- `service`: every configured bridge of an App (`BridgeService`).

Nothing below this package imports it: config.py holds the `[[bridge]]` checks, so
loading a configuration does not pull in asyncio, the bridges or the broker.
"""
