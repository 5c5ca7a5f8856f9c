"""One bridge: a local leg, a remote leg, and the QoS flows mirrored between them.

Theory of operation. A bridge is two MQTT client connections (`MqttClient`):

- the LOCAL leg, an MQTT 5.0 client of this broker inside the process
  (`LoopbackTransport`), with client id "$bridge/<name>" and a session that never
  expires. Its subscriptions are the `out`/`both` rules' local filters, with No Local
  (what the bridge itself publishes here never goes back out: origin tracking by the
  core's own rule [MQTT-3.8.3-3]) and Retain As Published. Because it is an ordinary
  persistent session, QoS 1/2 messages waiting for the remote sit in the core's
  session queue, in the store when persistence is on, bounded by the bridge's
  `max_queued_messages` and `queue_overflow`, and survive a restart;
- the REMOTE leg, a client of the other broker over TCP or TLS, MQTT 3.1.1 or 5.0,
  reconnected with backoff over the address list. Its subscriptions are the `in`/`both`
  rules' remote filters: with 5.0 they carry No Local and Retain As Published; with
  3.1.1 the CONNECT carries the bridge bit (level 0x84, Mosquitto's try_private), which
  makes Mosquitto (and mqttd) apply the same two options to them.

Messages from the local leg go to the remote with their topic renamed (`TopicRules`),
messages from the remote come in through the local leg, so they enter `Broker.publish`
like any client's. Each QoS 1/2 flow is mirrored from one leg onto the other with the
same packet id (flows.py), so nothing is acknowledged before the next broker has it.

Life cycle (`_run`): the local leg first (its subscriptions exist before the App says
ready), then the remote addresses in order until one accepts; when the connection
ends, or every address failed, wait (`Backoff`: exponential with jitter) and start over
from the first address. While connected, `state` is 1 and
"$SYS/broker/connection/<name>/state" holds "1" (retained, like Mosquitto's), else "0".
A lost local leg (a takeover of its client id) drops the remote connection too.

Mosquitto's start types and addresses (`config.start_type`, `round_robin`): "automatic"
is the life cycle above; "once" makes one pass and never reconnects; "lazy" waits until
`threshold` messages wait for the remote before connecting, and disconnects after
`idle_timeout` seconds without a message either way. With round_robin a lost connection
makes the next attempt start at the following address instead of the first. The state
topic is `notification_topic` when set; `notifications = false` publishes none, and
`notifications_local_only = false` publishes it on the remote too, "0" as the remote
connection's will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from typing import TYPE_CHECKING

from ..broker.message import Message
from ..protocol.errors import MQTTError
from ..protocol.packets import Connect, Publish, Subscription, Will
from ..protocol.properties import Properties
from .backoff import Backoff
from .client import ConnectionClosed, ConnectRefused, FlowPacket, MqttClient
from .flows import BridgeStats, Flows
from .loopback import LoopbackTransport
from .topics import Direction, TopicRule, TopicRules
from .validate import parse_address

if TYPE_CHECKING:
    from ..broker.broker import Broker
    from ..config import BridgeConfig, BridgeTLSConfig

__all__ = [
    "LISTENER",
    "LOCAL_CLIENT_ID_PREFIX",
    "Bridge",
    "BridgeStats",
    "client_ssl_context",
    "end_local_session",
]

logger = logging.getLogger("mqttd.bridge")

#: The listener name the local leg's connection reports (auth hooks may recognise it).
LISTENER = "$bridge"
#: Local client ids are this prefix and the bridge's name.
LOCAL_CLIENT_ID_PREFIX = "$bridge/"

_NEVER_EXPIRES = 0xFFFF_FFFF
_LOCAL_TIMEOUT = 10.0  # the local broker answers at once; this only guards against bugs
_STOP_TIMEOUT = 2.0
_LAZY_POLL = 0.1  # seconds between two looks at a lazy bridge's queue
_V3_UNACCEPTABLE_PROTOCOL_VERSION = 1

# Errors that end one attempt to connect (or one connection); the loop tries again.
_CONNECT_ERRORS = (OSError, TimeoutError, ConnectionClosed, ConnectRefused, MQTTError)


def client_ssl_context(tls: BridgeTLSConfig) -> ssl.SSLContext:
    """The TLS context of a bridge's remote connection (raises OSError/ssl.SSLError)."""
    context = ssl.create_default_context(cafile=tls.cafile or None)
    if tls.certfile:
        context.load_cert_chain(tls.certfile, tls.keyfile or None)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Bridge:
    """One configured bridge (see the module docstring)."""

    def __init__(
        self,
        config: BridgeConfig,
        broker: Broker,
        ssl_context: ssl.SSLContext | None = None,
        hostname: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.rules = TopicRules(
            TopicRule(t.pattern, Direction(t.direction), t.qos, t.local_prefix, t.remote_prefix)
            for t in config.topics
        )
        self.addresses = [parse_address(a) for a in config.addresses]
        self.client_id = (
            config.client_id or f"mqttd-bridge-{config.name}-{hostname or socket.gethostname()}"
        )
        self.local_client_id = LOCAL_CLIENT_ID_PREFIX + config.name
        self.state_topic = (
            config.notification_topic or f"$SYS/broker/connection/{config.name}/state"
        )
        #: 1 while connected to the remote (its subscriptions made), else 0.
        self.state = 0
        #: "host:port" of the remote while connected.
        self.address: str | None = None
        self.last_error = ""
        self.stats = BridgeStats()
        self.protocol_level = config.protocol_version
        self._broker = broker
        if config.tls is not None and ssl_context is None:
            ssl_context = client_ssl_context(config.tls)
        self._ssl = ssl_context
        self._backoff = Backoff(config.reconnect_delay_min, config.reconnect_delay_max, rng)
        # Mosquitto's try_private: on until a remote refuses the bridge bit.
        self._try_private = config.try_private and config.protocol_version == 4
        self._local: MqttClient | None = None
        self._remote: MqttClient | None = None
        self.flows = Flows(config.name, self.rules, config.protocol_version, self.stats)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._first_address = 0  # where the next pass over the addresses starts
        self._idled = False  # lazy: the last connection ended for want of traffic

    def __repr__(self) -> str:
        where = self.address or "disconnected"
        flows = self.flows
        return f"<Bridge {self.name} {where} out={flows.outbound} in={flows.inbound}>"

    @property
    def queued(self) -> int:
        """QoS 1/2 messages waiting for the remote: the local session's queue and window."""
        session = self._broker.sessions.get(self.local_client_id)
        return self.flows.outbound + (session.queue_length if session is not None else 0)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the local leg (so its subscriptions exist on return), then connect the
        remote in the background. A local refusal is logged and retried."""
        self._publish_state(0)
        try:
            await self._open_local()
        except _CONNECT_ERRORS as exc:
            logger.error("bridge %s: the local broker refused the bridge: %s", self.name, exc)
        self._task = asyncio.create_task(self._run(), name=f"mqttd-bridge-{self.name}")

    async def stop(self) -> None:
        """Disconnect from the remote (DISCONNECT), then from the local broker."""
        self._stopping = True
        remote = self._remote
        if remote is not None and not remote.closed.done():
            if self._remote_notifications and self.state:
                # A DISCONNECT discards the will, so say "0" on the remote ourselves.
                remote.send(Publish(self.state_topic, b"0", 0, True))
            remote.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(remote.closed), _STOP_TIMEOUT)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.state:
            self._set_state(0)
        local = self._local
        if local is not None and not local.closed.done():
            local.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(local.closed), _STOP_TIMEOUT)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if not self._local_up():
                    await self._open_local()
                if self.config.start_type == "lazy":
                    await self._wait_for_threshold()
                await self._connect_remote()
            except _CONNECT_ERRORS as exc:
                logger.error("bridge %s: the local broker refused the bridge: %s", self.name, exc)
            except Exception:
                logger.exception("bridge %s: internal error", self.name)
            if self._stopping:
                return
            if self.config.start_type == "once":
                logger.warning("bridge %s: start_type once: not reconnecting", self.name)
                return
            if self._idled:
                self._idled = False
                continue  # an idle stop, not a failure: wait for the threshold again
            await asyncio.sleep(self._backoff.next())

    async def _wait_for_threshold(self) -> None:
        """lazy: return once `threshold` messages wait for the remote (checked 10 times a
        second: one cheap look at a queue length, not a task per message)."""
        while not self._stopping and self.queued < self.config.threshold:
            await asyncio.sleep(_LAZY_POLL)

    # -- the local leg ---------------------------------------------------------------------

    def _local_up(self) -> bool:
        return self._local is not None and self._local.connected

    async def _open_local(self) -> None:
        config = self.config
        self._apply_queue_limits()
        client = MqttClient(f"bridge {self.name} (local)", 5, self)
        client.packet_ids_in_use = self.flows.in_ids  # our PUBLISH ids there: the remote's
        self._local = self.flows.local = client
        LoopbackTransport(self._broker, client, f"localhost:bridge-{self.name}", LISTENER)
        connect = Connect(
            self.local_client_id,
            5,
            clean_start=False,
            keep_alive=0,
            username=config.local_username or None,
            password=config.local_password.encode() if config.local_password else None,
            properties=Properties(session_expiry_interval=_NEVER_EXPIRES),
        )
        try:
            await client.connect(connect, _LOCAL_TIMEOUT)
            self._apply_queue_limits()
            await self._subscribe_local(client)
        except BaseException:
            client.abort("local leg failed")
            raise
        self.flows.local_connected()

    def _apply_queue_limits(self) -> None:
        session = self._broker.sessions.get(self.local_client_id)
        if session is not None:
            session.set_queue_limits(self.config.max_queued_messages, 0, self.config.queue_overflow)

    async def _subscribe_local(self, client: MqttClient) -> None:
        wanted = self.rules.local_subscriptions()
        session = self._broker.sessions.get(self.local_client_id)
        if session is not None:
            # Left over from an earlier configuration of this bridge.
            stale = [f for f in session.subscriptions if f not in wanted]
            if stale:
                logger.info("bridge %s: dropping old local subscriptions %s", self.name, stale)
                await client.unsubscribe(stale, _LOCAL_TIMEOUT)
        if not wanted:
            return
        subscriptions = [
            # Retain Handling 1: retained messages only for a new subscription, so a
            # restart does not send every retained message to the remote again.
            Subscription(f, qos, no_local=True, retain_as_published=True, retain_handling=1)
            for f, qos in wanted.items()
        ]
        codes = await client.subscribe(subscriptions, _LOCAL_TIMEOUT)
        for sub, code in zip(subscriptions, codes, strict=False):
            if code >= 0x80:
                logger.error(
                    "bridge %s: the local broker refused the subscription to %r (0x%02X)",
                    self.name,
                    sub.topic_filter,
                    code,
                )

    # -- the remote leg --------------------------------------------------------------------

    async def _connect_remote(self) -> None:
        """Try each address in order; serve the first connection that succeeds."""
        count = len(self.addresses)
        for i in range(self._first_address, self._first_address + count):
            index = i % count
            host, port = self.addresses[index]
            if self._stopping or not self._local_up():
                return
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            try:
                client = await self._open_remote(host, port)
            except (*_CONNECT_ERRORS, ssl.SSLError) as exc:
                self.stats.connect_failures += 1
                self.last_error = f"{address}: {exc or type(exc).__name__}"
                logger.warning("bridge %s: cannot connect to %s: %s", self.name, address, exc)
                continue
            self._backoff.reset()
            if self.config.round_robin:
                self._first_address = (index + 1) % count
            await self._serve(client, address)
            return

    async def _open_remote(self, host: str, port: int) -> MqttClient:
        config = self.config
        loop = asyncio.get_running_loop()
        while True:
            bridge_bit = self._try_private
            # No reading limit below MQTT's own: a message too large for this broker is
            # dropped (and acknowledged) by the flows, where a reader error would drop
            # the connection, and the remote would send it again on the next one.
            client = MqttClient(f"bridge {self.name} ({host}:{port})", self.protocol_level, self)
            client.packet_ids_in_use = self.flows.out_ids  # our PUBLISH ids there: the local's
            self._remote = self.flows.remote = client
            try:
                async with asyncio.timeout(config.connect_timeout):
                    await loop.create_connection(
                        lambda client=client: client,
                        host,
                        port,
                        ssl=self._ssl,
                        server_hostname=self._server_hostname(host),
                    )
                    await client.connect(self._remote_connect(bridge_bit), config.connect_timeout)
            except ConnectRefused as exc:
                self._remote = self.flows.remote = None
                if bridge_bit and exc.code == _V3_UNACCEPTABLE_PROTOCOL_VERSION:
                    logger.warning(
                        "bridge %s: %s:%s refused the bridge bit (try_private): connecting "
                        "as a plain MQTT 3.1.1 client, loops are then prevented only by "
                        "this side's rules",
                        self.name,
                        host,
                        port,
                    )
                    self._try_private = False
                    continue
                raise
            except BaseException:
                self._remote = self.flows.remote = None
                client.abort("connect failed")
                raise
            return client

    def _server_hostname(self, host: str) -> str | None:
        tls = self.config.tls
        if tls is None:
            return None
        return tls.server_hostname or host

    def _remote_connect(self, bridge_bit: bool) -> Connect:
        config = self.config
        properties: Properties | None = None
        if self.protocol_level == 5:
            settings = self._broker.settings
            properties = Properties(
                session_expiry_interval=config.session_expiry or None,
                # Inbound flows each hold a slot of the local broker's window until done,
                # and nothing bigger than it accepts can be passed on.
                receive_maximum=settings.receive_maximum
                if settings.receive_maximum < 65_535
                else None,
                maximum_packet_size=settings.max_packet_size,
            )
        will: Will | None = None
        if self._remote_notifications:
            will = Will(self.state_topic, b"0", 1, True)
        return Connect(
            self.client_id,
            self.protocol_level,
            clean_start=config.clean_start,
            keep_alive=config.keepalive,
            username=config.username or None,
            password=config.password.encode() if config.password else None,
            will=will,
            properties=properties,
            bridge=bridge_bit,
        )

    @property
    def _remote_notifications(self) -> bool:
        return self.config.notifications and not self.config.notifications_local_only

    async def _serve(self, client: MqttClient, address: str) -> None:
        """Subscribe, send what waits, and stay until the connection ends."""
        self.address = address
        self.stats.connects += 1
        try:
            if not client.session_present:
                session = self._broker.sessions.get(self.local_client_id)
                self.flows.remote_session_lost(session.inbound_qos2 if session else ())
            await self._subscribe_remote(client)
            if self._remote_notifications:
                # QoS 0: its acknowledgement would reach the flows, which own QoS 1/2 ids.
                client.send(Publish(self.state_topic, b"1", 0, True))
            self._set_state(1)
            logger.info(
                "bridge %s: connected to %s as %r (MQTT %s%s, session %s)",
                self.name,
                address,
                self.client_id,
                "5.0" if self.protocol_level == 5 else "3.1.1",
                ", bridge bit" if self._try_private and self.protocol_level == 4 else "",
                "resumed" if client.session_present else "new",
            )
            self.flows.remote_up()
            if self.config.start_type == "lazy":
                await self._until_idle(client)
            await asyncio.shield(client.closed)
            if not self._stopping and not self._idled:
                logger.warning(
                    "bridge %s: connection to %s lost: %s", self.name, address, client.close_reason
                )
                self.last_error = f"{address}: {client.close_reason}"
        except _CONNECT_ERRORS as exc:
            logger.warning("bridge %s: %s: %s", self.name, address, exc)
            client.abort(str(exc))
        finally:
            self._remote = None
            self.flows.remote_lost()
            self.address = None
            if self.state:
                self._set_state(0)

    async def _until_idle(self, client: MqttClient) -> None:
        """lazy: disconnect once `idle_timeout` passed without a message either way."""
        stats = self.stats
        seen = -1
        while not client.closed.done():
            moved = stats.messages_sent + stats.messages_received
            if moved == seen and not self.queued:
                logger.info(
                    "bridge %s: idle for %ss, disconnecting", self.name, self.config.idle_timeout
                )
                self._idled = True
                client.disconnect()
                return
            seen = moved
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(client.closed), self.config.idle_timeout)

    async def _subscribe_remote(self, client: MqttClient) -> None:
        wanted = self.rules.remote_subscriptions()
        if not wanted:
            return
        v5 = self.protocol_level == 5
        subscriptions = [
            Subscription(
                f, qos, no_local=v5, retain_as_published=v5, retain_handling=1 if v5 else 0
            )
            for f, qos in wanted.items()
        ]
        codes = await client.subscribe(subscriptions, self.config.connect_timeout)
        for sub, code in zip(subscriptions, codes, strict=False):
            if code >= 0x80:
                logger.error(
                    "bridge %s: the remote refused the subscription to %r (0x%02X)",
                    self.name,
                    sub.topic_filter,
                    code,
                )

    # -- state -------------------------------------------------------------------------------

    def _set_state(self, state: int) -> None:
        self.state = state
        self._publish_state(state)

    def _publish_state(self, state: int) -> None:
        # Mosquitto's notification: retained, "1" connected, "0" not.
        if not self.config.notifications:
            return
        self._broker.publish(Message(self.state_topic, b"1" if state else b"0", 1, True))

    # -- ClientHandler -----------------------------------------------------------------------

    def flow_packet(self, client: MqttClient, packet: FlowPacket) -> None:
        """A PUBLISH or acknowledgement from either leg: the flows take it."""
        if client is self._local:
            self.flows.from_local(packet)
        elif client is self._remote:
            self.flows.from_remote(packet)

    def client_closed(self, client: MqttClient) -> None:
        """A leg ended. Losing the local one ends the remote one too."""
        if client is self._local and not self._stopping:
            logger.warning("bridge %s: local connection ended: %s", self.name, client.close_reason)
            remote = self._remote
            if remote is not None:
                remote.abort("the local connection ended")

    def client_writable(self, client: MqttClient, writable: bool) -> None:
        """Backpressure: a slow remote makes the local session queue; a local broker
        that pauses the bridge's publishing pauses reading from the remote."""
        if client is self._remote and self._local is not None:
            if writable:
                self._local.resume_reading()
            else:
                self._local.pause_reading()
        elif client is self._local and self._remote is not None:
            if writable:
                self._remote.resume_reading()
            else:
                self._remote.pause_reading()


class _Quiet:
    """A handler that ignores everything (ending a stale local session)."""

    def flow_packet(self, client: MqttClient, packet: FlowPacket) -> None:
        pass

    def client_closed(self, client: MqttClient) -> None:
        pass

    def client_writable(self, client: MqttClient, writable: bool) -> None:
        pass


async def end_local_session(broker: Broker, client_id: str, username: str = "") -> None:
    """End the stored local session of a bridge that is no longer configured.

    Connects as it with Clean Start and a Session Expiry Interval of 0, then
    disconnects: the core drops the session, its subscriptions and its queue.
    """
    client = MqttClient(f"bridge cleanup {client_id}", 5, _Quiet())
    LoopbackTransport(broker, client, "localhost:bridge-cleanup", LISTENER)
    try:
        await client.connect(
            Connect(client_id, 5, clean_start=True, username=username or None), _LOCAL_TIMEOUT
        )
    except _CONNECT_ERRORS as exc:
        logger.warning("could not end the old bridge session %r: %s", client_id, exc)
        return
    client.disconnect()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(client.closed), _STOP_TIMEOUT)
