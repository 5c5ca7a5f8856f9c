"""The broker core, free of I/O: Broker, Connection, Session, topic and retained trees.

The network shell creates a `broker.Broker` with `settings.BrokerSettings`, a `Store`
and a `clock.Clock`, calls `Broker.connection(sink, peer)` per socket and drives
`Broker.scheduler`.

Import from the modules (`from mqttd.broker.broker import Broker`). This file imports
nothing, so that loading one leaf (the settings the configuration builds) does not load
the whole core.
"""
