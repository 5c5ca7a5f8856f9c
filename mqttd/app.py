"""Wires one `Config` into a running broker and owns start-up and graceful shutdown.

An `App` is the store, the sans-IO `Broker`, one network listener per configured
`[[listeners]]` and the single timer-driver task that runs the core's scheduler. It is
used two ways:

- in a process, by `run(config)` (the `mqttd` command): uvloop when installed,
  SIGINT/SIGTERM start a graceful stop, SIGHUP reloads what can change without a
  restart (`App.reload`), and the exit status is returned;
- in-process, by tests: ``async with running(config) as app:`` gives a started App
  (`app.broker`, `app.listeners`, `app.port`) and stops it on the way out.

Once every listener is up the App logs, on the "mqttd" logger, one line per listener and
then the ready line, in exactly this shape (tests and scripts parse them)::

    mqttd 0.1.0 listening on mqtt://127.0.0.1:1883
    mqttd ready

With `[cluster] enabled` the core gets a NATS backplane (`mqttd.cluster`, docs/cluster.md)
before it starts; the backplane connects and loads the cluster's retained messages after
the store is open and before the listeners, and stops after `Broker.stop()`.

Bridges (`[[bridge]]`) start after the listeners, before the ready line; their local
subscriptions exist by then, the remote connections come up in the background.

Shutdown order: bridges disconnect from their remotes and from the core, stop accepting,
`Broker.stop()` (5.0 clients get DISCONNECT 0x8B, every
Connection is closed, the store flushed and closed), give sockets a moment to send what
is queued, abort the rest, stop the timer driver. Each step is bounded in time, so a
client that stops reading cannot hold the process up.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import signal
import socket
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from websockets.asyncio.server import Server as WsServer

from . import __version__
from .admin.auth import AdminAuth, ApiKeyError
from .auth.scram import METHOD as SCRAM_METHOD
from .bridge.service import BridgeService
from .broker.broker import Broker
from .broker.clock import Clock, MonotonicClock
from .config import Config, ConfigError, ListenerConfig, PersistenceConfig, config_changes
from .net import epoll_tcp
from .net.epoll_tcp import EpollServer, serve_epoll_tcp
from .net.tcp import (
    ListenerConnections,
    log_failed_handshakes,
    serve_tcp,
    server_ssl_context,
)
from .net.ws import serve_ws
from .ops.figures import process_figures
from .ops.logging import log_options, set_log_level, setup_logging
from .ops.loop_lag import LoopLagMonitor
from .ops.metrics import (
    Collector,
    MetricsServer,
    collect_broker,
    collect_cluster,
    collect_process,
    collect_store,
    collect_store_histograms,
)
from .ops.sys_tree import SysTree, clear_sys_topics
from .runtime import tune_gc
from .security import Security
from .store.base import Store
from .store.memory import MemoryStore

if TYPE_CHECKING:
    from .admin.server import AdminServer
    from .cluster.backplane import NatsBackplane

__all__ = [
    "App",
    "ReloadHook",
    "StartupError",
    "build_ssl_contexts",
    "build_store",
    "check_admin_files",
    "ephemeral_config",
    "run",
    "running",
    "serve",
]

logger = logging.getLogger("mqttd")

# Bounds of a graceful stop, in seconds.
BROKER_STOP_TIMEOUT = 5.0  # Broker.stop(): DISCONNECTs and the last store commit
DRAIN_TIMEOUT = 2.0  # sockets sending what Broker.stop() queued before they are dropped

# The timer driver sleeps at most this long, so a timer scheduled without waking it
# (see `Scheduler.on_earliest`) is never late by more than this.
TIMER_MAX_SLEEP = 0.5
TIMER_MIN_SLEEP = 0.01


class StartupError(Exception):
    """The broker could not start (a port in use, a store that cannot open)."""


ReloadHook = Callable[[Config], None]
"""Called by `App.reload` (SIGHUP) with the newly loaded config; see `App.reload_hooks`."""


def build_store(persistence: PersistenceConfig) -> Store:
    """The one place where persistence is chosen.

    `persistence.enabled` with a file path: the SQLite store (WAL, group commit;
    `durability`, `commit_interval_ms`, `commit_batch`). Disabled, or the path
    ":memory:" (``--db :memory:``): memory only, lost on exit.
    """
    if not persistence.enabled or persistence.path == ":memory:":
        logger.info("persistence: off, state is kept in memory only")
        return MemoryStore()
    # Imported here: a broker without persistence never loads aiosqlite.
    from .store.sqlite import SqliteStore

    store = SqliteStore(
        persistence.path,
        durability=persistence.durability,
        commit_interval=persistence.commit_interval_ms / 1000,
        commit_batch=persistence.commit_batch,
    )
    logger.info("persistence: %s (durability %s)", store.path, store.durability)
    return store


def build_ssl_contexts(config: Config) -> dict[int, ssl.SSLContext]:
    """A TLS context for every listener with `[listeners.tls]`, keyed by listener index.

    Raises `ConfigError` naming the listener when a file cannot be read or is invalid,
    so `mqttd check-config` catches a bad certificate before a start does.
    """
    contexts: dict[int, ssl.SSLContext] = {}
    errors: list[str] = []
    for i, listener in enumerate(config.listeners):
        tls = listener.tls
        if tls is None:
            continue
        try:
            contexts[i] = server_ssl_context(
                tls.certfile, tls.keyfile, tls.cafile, tls.require_certificate, tls.min_version
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            errors.append(
                f"config error: listeners[{i}].tls: cannot load {tls.certfile!r}"
                f"{f' / {tls.keyfile!r}' if tls.keyfile else ''}"
                f"{f' / {tls.cafile!r}' if tls.cafile else ''}: {reason}"
            )
    if errors:
        raise ConfigError(errors)
    return contexts


def check_admin_files(config: Config) -> None:
    """Read `[admin]`'s API key file and admin users' password file; `ConfigError` if bad."""
    admin = config.admin
    if not admin.enabled:
        return
    try:
        AdminAuth.from_files(admin.api_key_file, admin.users, config.auth.password_file)
    except ApiKeyError as exc:
        raise ConfigError([f"config error: {exc}"]) from exc


def ephemeral_config() -> Config:
    """The defaults, but on a free port of 127.0.0.1 and without persistence (for tests)."""
    config = Config()
    config.listeners[0].port = 0
    config.persistence.enabled = False
    return config


class _Listener(abc.ABC):
    """One started listener, whichever transport: stop accepting, drain, abort the rest."""

    def __init__(self, config: ListenerConfig, url: str, address: tuple[str, int]) -> None:
        self.config = config
        self.url = url
        self.address = address

    @abc.abstractmethod
    def stop_accepting(self) -> None:
        """Close the listening socket; open connections stay."""

    @abc.abstractmethod
    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for open connections to close, then drop the rest."""


class _TcpListener(_Listener):
    def __init__(
        self,
        config: ListenerConfig,
        url: str,
        address: tuple[str, int],
        server: asyncio.Server | EpollServer,
        connections: ListenerConnections,
    ) -> None:
        super().__init__(config, url, address)
        self.server = server
        self.connections = connections

    def stop_accepting(self) -> None:
        self.server.close()

    async def drain(self, timeout: float) -> None:
        if not await self.connections.wait_closed(timeout):
            logger.info(
                "%s: dropping %d sockets that did not close in time",
                self.config.name,
                len(self.connections),
            )
            self.connections.abort_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), timeout)


class _WsListener(_Listener):
    def __init__(
        self, config: ListenerConfig, url: str, address: tuple[str, int], server: WsServer
    ) -> None:
        super().__init__(config, url, address)
        self.server = server

    def stop_accepting(self) -> None:
        # Not close_connections: Broker.stop() first tells 5.0 clients why (0x8B).
        self.server.close(close_connections=False)

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.server.wait_closed(), timeout)
        except TimeoutError:
            logger.info(
                "%s: dropping %d WebSockets that did not close in time",
                self.config.name,
                len(self.server.connections),
            )
            for connection in self.server.connections:
                connection.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), timeout)


def _bound(sockets: Iterable[socket.socket]) -> tuple[str, int]:
    """(host, port) a server is bound to: its first socket (IPv4 first when both)."""
    names = [s.getsockname() for s in sockets]
    names.sort(key=lambda name: len(name))  # (host, port) before (host, port, flow, scope)
    return str(names[0][0]), int(names[0][1])


def _url(scheme: str, host: str, port: int, path: str = "") -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}{path}"


@dataclass(eq=False)
class App:
    """One broker: store, core, listeners and timer driver, built from one `Config`.

    `broker` and `store` exist from construction; `start()` starts the core (which
    opens and loads the store) and the listeners and logs the ready lines; `stop()`
    shuts everything down (idempotent, bounded in time). `listeners` maps each
    listener's name to the (host, port) it is bound to, the real port when 0 was asked;
    `urls` maps it to its URL.

    `sys_tree` publishes $SYS when `sys.interval` > 0; `metrics` serves /metrics and
    /health when `metrics.enabled` (`metrics_address` is where); each scrape also calls
    every `metrics_collectors` entry (bridges add theirs). `reload(config)` (SIGHUP)
    applies what can change without a restart and then calls every `reload_hooks`
    entry with the new config (the password file and ACLs register there).
    """

    config: Config
    clock: Clock = field(default_factory=MonotonicClock)
    broker: Broker = field(init=False)
    store: Store = field(init=False)
    listeners: dict[str, tuple[str, int]] = field(default_factory=dict, init=False)
    urls: dict[str, str] = field(default_factory=dict, init=False)
    _listeners: list[_Listener] = field(default_factory=list, init=False)
    _timer_task: asyncio.Task[None] | None = field(default=None, init=False)
    _wake: asyncio.Future[None] | None = field(default=None, init=False)
    _wake_at: float = field(default=0.0, init=False)
    _started: bool = field(default=False, init=False)
    _stopping: asyncio.Task[None] | None = field(default=None, init=False)
    _ready: bool = field(default=False, init=False)
    sys_tree: SysTree | None = field(default=None, init=False)
    metrics: MetricsServer | None = field(default=None, init=False)
    metrics_address: tuple[str, int] | None = field(default=None, init=False)
    reload_hooks: list[ReloadHook] = field(default_factory=list, init=False)
    metrics_collectors: list[Collector] = field(default_factory=list, init=False)
    #: Authentication and ACLs (`[auth]`); files are read by `start()`, again on SIGHUP.
    security: Security = field(init=False)
    #: The `[[bridge]]` connections to other brokers, once started (docs/bridges.md).
    bridge_service: BridgeService | None = field(default=None, init=False)
    #: This node's link to the other nodes when `[cluster]` is enabled (docs/cluster.md).
    cluster: NatsBackplane | None = field(default=None, init=False)
    #: How late the event loop runs callbacks (metrics, admin figures).
    loop_lag: LoopLagMonitor = field(default_factory=LoopLagMonitor, init=False)
    #: The admin HTTP API (`[admin]`, docs/admin.md), once started.
    admin: AdminServer | None = field(default=None, init=False)
    #: Loads the config file again (set by `run` when there is one): SIGHUP and the
    #: admin API's POST /reload use it.
    config_loader: Callable[[], Config] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.store = build_store(self.config.persistence)
        self.security = Security(self.config)
        self.broker = Broker(
            self.config.broker_settings(), self.store, self.clock, self.security.authenticate
        )
        self._wire_security()
        self.reload_hooks.append(self._reload_security)
        # [dead_letter] applies from the start and again on every reload (SIGHUP).
        dead_letters = self.broker.dead_letters
        dead_letters.configure(self.config.dead_letter.settings())
        self.reload_hooks.append(lambda new: dead_letters.configure(new.dead_letter.settings()))

    def _wire_security(self) -> None:
        # The core knows the hooks, not `Security`: auth/ and the core stay below it.
        self.broker.authorise = self.security.authorise_hook
        self.broker.sessions_owned = self.security.sessions_owned

    def _reload_security(self, config: Config) -> None:
        self.security.reload(config)
        self._wire_security()

    @property
    def host(self) -> str:
        """The bound address of the first listener."""
        return next(iter(self.listeners.values()))[0]

    @property
    def port(self) -> int:
        """The bound port of the first listener (the real one when 0 was asked)."""
        return next(iter(self.listeners.values()))[1]

    @property
    def running(self) -> bool:
        """True from the ready line until a stop begins (what /health reports)."""
        return self._ready and self._stopping is None

    @property
    def bridges(self) -> dict[str, int]:
        """Each bridge's name -> 1 while connected to its remote broker, else 0."""
        return self.bridge_service.states if self.bridge_service is not None else {}

    def _load_scram_users(self) -> None:
        """Offer SCRAM-SHA-256 enhanced authentication (MQTT 5 AUTH) when configured."""
        users = self.security.scram  # read by security.load(), which also checks plain
        if users is not None:  # CONNECT passwords against these verifiers
            self.broker.auth_methods.register(SCRAM_METHOD, users.authenticator_factory())

    async def start(self) -> None:
        """Start the core (it opens the store), bind every listener, log the ready lines.

        Raises `ConfigError` for unusable TLS files and `StartupError` when a listener
        cannot bind or the store cannot open; what was started is stopped again first.
        """
        if self._started:
            raise RuntimeError("App.start() called twice")
        contexts = build_ssl_contexts(self.config)
        bridges = BridgeService(self.config, self.broker)  # ConfigError: bridge TLS files
        # The password file, the ACL, the plugin, and no exposed listener without auth.
        self.security.load()
        self._load_scram_users()
        self._join_cluster()
        self._started = True
        try:
            try:
                await self.broker.start()  # opens the store and loads it
            except (OSError, ValueError, sqlite3.Error) as exc:
                raise StartupError(f"cannot open the store: {exc}") from exc
            if self.cluster is not None:
                # After the store (the cluster's retained messages win over the file's),
                # before the listeners (a client sees the cluster's state at once).
                from .cluster.backplane import BackplaneError

                try:
                    await self.cluster.start()
                except BackplaneError as exc:
                    raise StartupError(str(exc)) from exc
                self._bound_packets_by_cluster(self.cluster)
            self.broker.scheduler.on_earliest = self._on_earliest
            self._timer_task = asyncio.create_task(self._drive_timers(), name="mqttd-timers")
            self.loop_lag.start()
            self._start_sys_tree()
            # The admin API first: the dashboards of ws listeners learn where it is.
            if self.config.admin.enabled:
                await self._start_admin()
            for i, listener in enumerate(self.config.listeners):
                await self._start_listener(listener, contexts.get(i))
            if self.admin is not None:
                self.admin.allow_origins(self._dashboard_origins())
            if self.config.metrics.enabled:
                await self._start_metrics()
            # Also without bridges: it ends the stored sessions of removed ones.
            self.bridge_service = bridges
            await bridges.start()
        except BaseException:
            await self.stop()
            raise
        for entry in self._listeners:
            logger.info("mqttd %s listening on %s", __version__, entry.url)
        if self.metrics is not None:
            logger.info("metrics listening on %s/metrics", self.metrics.url)
        if self.admin is not None:
            logger.info("admin API listening on %s/api/v1", self.admin.url)
        self._ready = True
        logger.info("mqttd ready")

    def _join_cluster(self) -> None:
        """With `[cluster] enabled`, give the core its NATS backplane (nats-py loads here)."""
        if not self.config.cluster.enabled:
            return
        from .cluster.backplane import NatsBackplane
        from .cluster.tls import cluster_ssl_context

        tls = cluster_ssl_context(self.config.cluster)  # ConfigError: unusable TLS files
        self.cluster = NatsBackplane(self.config.cluster, self.clock, tls)
        self.broker.use_backplane(self.cluster)

    def _bound_packets_by_cluster(self, cluster: NatsBackplane) -> None:
        """A message crosses the cluster as NATS messages, which NATS bounds by its
        `max_payload`: the broker's largest packet becomes what fits (before the
        listeners open, so every CONNACK says it; docs/cluster.md, "Large messages")."""
        settings = self.broker.settings
        configured = settings.max_packet_size
        limit = cluster.packet_limit
        if limit < 512:
            raise StartupError(
                f"cluster: NATS's max_payload of {cluster.max_payload} bytes leaves"
                f" {limit} bytes for an MQTT packet: raise max_payload in nats-server"
            )
        if limit < configured:
            settings.max_packet_size = limit
            logger.info(
                "cluster: largest MQTT packet %d bytes (limits.max_packet_size is %d):"
                " NATS's max_payload of %d bytes, less what the envelope, JetStream"
                " headers and session records add",
                limit,
                configured,
                cluster.max_payload,
            )
        else:
            logger.info(
                "cluster: largest MQTT packet %d bytes (limits.max_packet_size; NATS's"
                " max_payload of %d bytes would allow %d)",
                configured,
                cluster.max_payload,
                limit,
            )

    def _start_sys_tree(self) -> None:
        interval = self.config.sys.interval
        if interval > 0:
            self.sys_tree = SysTree(self.broker, interval)
            cluster = self.cluster
            if cluster is not None:
                self.sys_tree.sources.append(cluster.sys_figures)
            self.sys_tree.start()
        else:
            # Retained $SYS values of an earlier run would otherwise be served forever.
            clear_sys_topics(self.broker)

    async def _start_metrics(self) -> None:
        config = self.config.metrics
        started_at = self.clock.now()
        names = [listener.name for listener in self.config.listeners]
        # The broker's and the store's figures first, then whatever was registered.
        self.metrics_collectors[:0] = [
            lambda: collect_broker(self.broker, names, started_at),
            lambda: collect_store(self.store),
            lambda: collect_store_histograms(self.store),
            lambda: collect_process(self.loop_lag),
        ]
        cluster = self.cluster
        if cluster is not None:
            self.metrics_collectors.insert(
                2, lambda: collect_cluster(cluster.figures(), cluster.node)
            )
        server = MetricsServer(self.metrics_collectors, lambda: self.running)
        try:
            self.metrics_address = await server.start(config.host, config.port)
        except OSError as exc:
            asked = _url("http", config.host, config.port)
            raise StartupError(
                f"cannot listen on {asked} (metrics): {exc.strerror or exc}"
            ) from exc
        self.metrics = server

    def _admin_api(self) -> str | None:
        """The admin API as "scheme:port" for the dashboards, None when it is off."""
        if self.admin is None or self.admin.address is None:
            return None
        return f"{self.admin.url.partition(':')[0]}:{self.admin.address[1]}"

    async def _start_admin(self) -> None:
        config = self.config.admin
        check_admin_files(self.config)
        password_file = self.config.auth.password_file
        auth = AdminAuth.from_files(config.api_key_file, config.users, password_file)
        context = None
        if config.tls is not None:
            try:
                context = server_ssl_context(config.tls.certfile, config.tls.keyfile)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError([f"config error: admin.tls: {exc}"]) from exc
        reload = self._admin_reload if self.config_loader is not None else None
        # Imported here: aiohttp's web server is a fifth of mqttd's start-up time and
        # memory, and most brokers run without the admin API.
        from .admin.server import AdminServer

        server = AdminServer(self.broker, auth, reload, self._admin_figures)
        try:
            await server.start(config.host, config.port, context)
        except OSError as exc:
            asked = _url("http", config.host, config.port)
            raise StartupError(f"cannot listen on {asked} (admin): {exc.strerror or exc}") from exc
        self.admin = server

    def _dashboard_origins(self) -> set[str]:
        """The origins the dashboards are served from: they may call the admin API.

        A loopback listener is reached as 127.0.0.1, localhost or [::1]; another as its
        bound address. Names a browser uses beyond those go in `[admin] cors_origins`.
        """
        origins = set(self.config.admin.cors_origins)
        for entry in self._listeners:
            if entry.config.type != "ws" or not entry.config.dashboard:
                continue
            scheme = "https" if entry.config.tls is not None else "http"
            host, port = entry.address
            hosts = {f"[{host}]" if ":" in host else host}
            if host in ("127.0.0.1", "::1", "0.0.0.0", "::", ""):
                hosts |= {"127.0.0.1", "localhost", "[::1]"}
            origins |= {f"{scheme}://{name}:{port}" for name in hosts}
        return origins

    def _admin_reload(self) -> list[str]:
        if self.config_loader is None:
            raise LookupError("no config file")
        try:
            new = self.config_loader()
        except ConfigError as exc:
            raise ValueError("; ".join(exc.lines)) from exc
        return self.reload(new)

    def _admin_figures(self) -> dict[str, object]:
        figures: dict[str, object] = {"process": process_figures(self.loop_lag.lag)}
        stats = getattr(self.store, "stats", None)
        if callable(stats):
            figures["store"] = dict(stats())
        figures["listeners"] = dict(self.urls)
        return figures

    async def _start_listener(
        self, listener: ListenerConfig, context: ssl.SSLContext | None
    ) -> None:
        asked = _url(listener.scheme, listener.host, listener.port)
        started: _Listener
        try:
            if listener.type == "ws":
                if context is not None:
                    log_failed_handshakes(context, listener.name)
                ws_server = await serve_ws(
                    self.broker,
                    listener.host,
                    listener.port,
                    path=listener.path,
                    ssl=context,
                    name=listener.name,
                    allowed_origins=listener.allowed_origins or None,
                    trust_proxy=listener.trust_proxy,
                    dashboard=listener.dashboard,
                    admin_api=self._admin_api(),
                    subprotocols=tuple(listener.subprotocols),
                    max_size=listener.max_size or None,
                    compression=listener.compression,
                    open_timeout=self.config.limits.connect_timeout,
                )
                address = _bound(ws_server.sockets)
                url = _url(listener.scheme, *address, listener.path)
                started = _WsListener(listener, url, address, ws_server)
            else:
                connections = ListenerConnections(listener.max_connections)
                server: asyncio.Server | EpollServer
                if context is None and epoll_tcp.AVAILABLE:
                    # Plain TCP without transports: ~1,100 B less per idle client.
                    server = await serve_epoll_tcp(
                        self.broker,
                        listener.host,
                        listener.port,
                        name=listener.name,
                        connections=connections,
                    )
                else:
                    server = await serve_tcp(
                        self.broker,
                        listener.host,
                        listener.port,
                        ssl=context,
                        name=listener.name,
                        connections=connections,
                        ssl_handshake_timeout=self.config.limits.connect_timeout,
                    )
                address = _bound(server.sockets)
                url = _url(listener.scheme, *address)
                started = _TcpListener(listener, url, address, server, connections)
        except OSError as exc:
            raise StartupError(f"cannot listen on {asked}: {exc.strerror or exc}") from exc
        self._listeners.append(started)
        self.listeners[listener.name] = started.address
        self.urls[listener.name] = started.url

    async def stop(self) -> None:
        """Stop gracefully: see the module docstring for the order. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self.sys_tree is not None:
            self.sys_tree.stop()
        if self.bridge_service is not None:
            # First: a bridge says DISCONNECT to its remote while the core still runs.
            await self.bridge_service.stop()
        for entry in self._listeners:
            entry.stop_accepting()
        if self.cluster is not None:
            self.cluster.stop_inbound()  # nothing from other nodes once the store closes
        if self._started:
            try:
                await asyncio.wait_for(self.broker.stop(), BROKER_STOP_TIMEOUT)
            except TimeoutError:
                logger.warning("broker stop took over %.0f s; closing anyway", BROKER_STOP_TIMEOUT)
            except Exception:
                logger.exception("broker stop failed")
        if self.cluster is not None:
            # After the broker: the client ids its sessions held are released first.
            await self.cluster.stop()
        await asyncio.gather(*(entry.drain(DRAIN_TIMEOUT) for entry in self._listeners))
        await self.loop_lag.stop()
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        self.broker.scheduler.on_earliest = None
        if self.admin is not None:
            await self.admin.stop()
        if self.metrics is not None:
            # Last: /health answers 503 while the stop is under way.
            await self.metrics.stop()

    # -- reload (SIGHUP) ---------------------------------------------------------------------

    def reload(self, config: Config) -> list[str]:
        """Apply a newly loaded config without dropping a connection; log what changed.

        Applied at once: `[log]` and `sys.interval`. Then every `reload_hooks` entry is
        called with `config` (an exception in one is logged and the others still run).
        Each changed setting is named with its old and new value ("limits.max_inflight_
        messages 20 -> 3"): applied ones on the "reloaded:" line, the ones that wait for
        the next start in a warning. Returns both lists, one line per setting.
        """
        old = self.config
        applied: list[str] = []
        if config.log != old.log:
            changed = [
                line
                for line in config_changes(old.log, config.log, "log")
                if not line.startswith("log.level ")
            ]
            if changed:
                try:
                    setup_logging(**log_options(config))
                except (OSError, ValueError) as exc:
                    logger.error("log: %s; the log keeps going where it went", exc)
                else:
                    applied.extend(changed)
        set_log_level(config.log.level)
        applied += config_changes(old.log.level, config.log.level, "log.level")
        if config.sys.interval != old.sys.interval:
            self._reload_sys_interval(config.sys.interval)
            applied += config_changes(old.sys, config.sys, "sys")
        # Applied by the reload hooks (Security, dead letters): named here, done below.
        for name in ("auth", "dead_letter"):
            applied += config_changes(getattr(old, name), getattr(config, name), name)
        restart: list[str] = []
        for name in ("listeners", "limits", "mqtt", "persistence", "metrics", "admin", "bridge"):
            restart += config_changes(getattr(old, name), getattr(config, name), name)
        # Sections only partly reloadable keep what the running broker uses.
        config.listeners, config.bridge = old.listeners, old.bridge
        config.limits, config.mqtt = old.limits, old.mqtt
        config.persistence, config.metrics = old.persistence, old.metrics
        config.admin = old.admin
        self.config = config
        logger.info("reloaded: %s", ", ".join(applied) if applied else "nothing changed")
        if restart:
            logger.warning("changed, applied at the next start: %s", ", ".join(restart))
        for hook in list(self.reload_hooks):
            try:
                hook(config)
            except Exception:
                logger.exception("reload hook %r failed", hook)
        return applied + [f"{line} (applied at the next start)" for line in restart]

    def _reload_sys_interval(self, interval: int) -> None:
        if self.sys_tree is not None:
            self.sys_tree.set_interval(interval)
        elif interval > 0 and self._started:
            self.sys_tree = SysTree(self.broker, interval)
            self.sys_tree.start()

    # -- the timer driver: one task for every timer of the core ---------------------------

    async def _drive_timers(self) -> None:
        scheduler = self.broker.scheduler
        clock = self.clock
        loop = asyncio.get_running_loop()
        while True:
            scheduler.run_due()
            deadline = scheduler.next_deadline()
            now = clock.now()
            delay = TIMER_MAX_SLEEP if deadline is None else deadline - now
            delay = min(max(delay, TIMER_MIN_SLEEP), TIMER_MAX_SLEEP)
            wake = self._wake = loop.create_future()
            self._wake_at = now + delay
            handle = loop.call_later(delay, _resolve, wake)
            try:
                await wake
            finally:
                handle.cancel()
                self._wake = None

    def _on_earliest(self, deadline: float) -> None:
        # A new timer is due before the driver planned to wake: wake it now, it re-plans.
        wake = self._wake
        if wake is not None and deadline < self._wake_at and not wake.done():
            wake.set_result(None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def serve(config: Config) -> App:
    """Build and start an App for `config`; the caller stops it with `await app.stop()`."""
    app = App(config)
    await app.start()
    return app


@contextlib.asynccontextmanager
async def running(config: Config | None = None) -> AsyncIterator[App]:
    """``async with running(config) as app:`` a started App, stopped on the way out.

    Without `config`, `ephemeral_config()`: the defaults on a free port of 127.0.0.1,
    persistence off. Connect to `app.host`, `app.port` (or `app.listeners[name]`).
    """
    app = App(config if config is not None else ephemeral_config())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (default dependency on Linux/macOS)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run the broker until SIGINT/SIGTERM; return the exit status.

    0 after a graceful stop, 1 when start-up failed or a second signal cut the stop
    short, 2 for a configuration error found while starting (a TLS file). SIGHUP calls
    `reload()` (which loads the config file again) and applies the result with
    `App.reload`; an invalid file is logged and changes nothing.
    """
    tune_gc()  # fewer garbage collector passes: runtime.py says why and what it gave
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            return runner.run(_main(config, reload))
        except asyncio.CancelledError:
            logger.warning("stopped before the shutdown completed")
            return 1


async def _main(config: Config, reload: Callable[[], Config] | None = None) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    stop = asyncio.Event()
    signals_seen: list[str] = []
    app: App | None = None

    def on_signal(sig: signal.Signals) -> None:
        signals_seen.append(sig.name)
        if len(signals_seen) == 1:
            logger.info("%s received: stopping", sig.name)
            stop.set()
        elif main_task is not None:
            logger.warning("%s received again: exiting without waiting", sig.name)
            main_task.cancel()

    def on_hangup() -> None:
        if app is None or not app.running:
            logger.info("SIGHUP received before the broker is ready: ignored")
            return
        if reload is None:
            logger.info("SIGHUP received: no config file to reload")
            return
        logger.info("SIGHUP received: reloading the configuration")
        try:
            new = reload()
        except ConfigError as exc:
            for line in exc.lines:
                logger.error("%s", line)
            logger.error("configuration not reloaded: the running one stays")
            return
        app.reload(new)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    logger.debug("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    try:
        app = App(config)
        app.config_loader = reload
        try:
            await app.start()
        except ConfigError as exc:
            for line in exc.lines:
                logger.error("%s", line)
            return 2
        except StartupError as exc:
            logger.error("%s", exc)
            return 1
        await stop.wait()
        await app.stop()
        logger.info("mqttd stopped")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
