"""The broker core, free of I/O: Broker, Connection, Session, topic and retained trees.

The network shell creates a `Broker` with `BrokerSettings`, a `Store` and a `Clock`,
calls `Broker.connection(sink, peer)` per socket and drives `Broker.scheduler`.
"""

from .auth import Authenticate, AuthResult, ConnectInfo, allow_all
from .broker import PUBLISH_MATCHED, PUBLISH_RECORDED, Broker
from .clock import Clock, FakeClock, MonotonicClock
from .connection import Connection, Sink
from .message import Message
from .scheduler import Scheduler, Timer
from .session import Session, SubOptions
from .settings import BrokerSettings
from .stats import BrokerStats

__all__ = [
    "PUBLISH_MATCHED",
    "PUBLISH_RECORDED",
    "AuthResult",
    "Authenticate",
    "Broker",
    "BrokerSettings",
    "BrokerStats",
    "Clock",
    "ConnectInfo",
    "Connection",
    "FakeClock",
    "Message",
    "MonotonicClock",
    "Scheduler",
    "Session",
    "Sink",
    "SubOptions",
    "Timer",
    "allow_all",
]
