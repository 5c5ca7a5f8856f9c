"""The admin HTTP API: aiohttp routes over the broker core (docs/admin.md).

Every route is under ``/api/v1``; answers are JSON; errors are
``{"code": "NOT_FOUND", "message": "..."}`` with the matching HTTP status. The OpenAPI
document (`openapi.py`) is served at ``/api/v1/openapi.json`` and a test checks that it
names exactly the routes registered here.

Handlers run on the broker's event loop, between packets, and call the sans-IO core
directly: no locks, and a kick or a retained delete takes effect before the answer is
sent. Each mutating call is logged on "mqttd.admin" with who made it (`auth.py`), from
where, and what it changed, as text and as structured fields for JSON logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from ..broker.broker import Broker
from ..broker.dead_letter import dropped_by_reason, dropped_total
from ..broker.delivery import REFUSED
from ..broker.message import Message
from ..protocol.errors import MQTTError
from ..protocol.topics import validate_topic_filter, validate_topic_name
from .auth import AdminAuth, Denied
from .openapi import openapi_document
from .views import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ClientFilter,
    RetainedIndex,
    client_detail,
    list_clients,
    list_sessions,
    list_subscriptions,
    message_json,
)

__all__ = ["API_PREFIX", "AdminServer", "build_app"]

logger = logging.getLogger("mqttd.admin")

API_PREFIX = "/api/v1"
MAX_BODY = 1024 * 1024  # bytes of a request body (publish payloads included)

Reload = Callable[[], list[str]]
"""Reloads the configuration file; returns what changed (one line each)."""
Figures = Callable[[], dict[str, Any]]
"""Extra figures for GET /stats (process, store), by the App."""

_WHO = web.RequestKey("who", str)
_BROKER = web.AppKey("broker", Broker)


class ApiError(Exception):
    """An error answer: HTTP `status`, an EMQX-style `code` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def _int_arg(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "BAD_REQUEST", f"{name}: {value} is not in {low}..{high}")
    return value


def _bool_arg(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, "BAD_REQUEST", f"{name}: {raw!r} is not true or false")
    return raw in ("true", "1")


def _client_filter(request: web.Request) -> ClientFilter:
    q = request.query
    state = q.get("conn_state")
    if state not in (None, "", "connected", "disconnected"):
        raise ApiError(
            400, "BAD_REQUEST", f"conn_state: {state!r} is not connected or disconnected"
        )
    proto = q.get("proto_ver")
    if proto not in (None, "", "3", "4", "5"):
        raise ApiError(400, "BAD_REQUEST", f"proto_ver: {proto!r} is not 3, 4 or 5")
    return ClientFilter(
        clientid=q.get("like_clientid") or None,
        username=q.get("like_username") or None,
        ip=q.get("ip_address") or None,
        proto_ver=int(proto) if proto else None,
        connected=None if not state else state == "connected",
    )


def _paging(request: web.Request) -> tuple[int, int]:
    return (
        _int_arg(request, "page", 1, 1, 10**9),
        _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


class AdminServer:
    """The admin API's routes and listener for one broker.

    `reload` (None when there is no config file) is what POST /reload calls; `figures`
    adds process and store figures to GET /stats.
    """

    def __init__(
        self,
        broker: Broker,
        auth: AdminAuth,
        reload: Reload | None = None,
        figures: Figures | None = None,
    ) -> None:
        self.broker = broker
        self.auth = auth
        self.reload = reload
        self.figures = figures
        self.retained_index = RetainedIndex(broker)
        #: Browser origins (the dashboards) that may call the API (`allow_origins`).
        self.cors_origins: frozenset[str] = frozenset()
        self.app = build_app(self)
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port`` of the bound listener."""
        if self.address is None:
            raise RuntimeError("the admin API is not started")
        host, port = self.address
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    def allow_origins(self, origins: set[str]) -> None:
        """Let pages from `origins` ("http://host:port") call the API (CORS)."""
        self.cors_origins = frozenset(origins)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Bind `host:port` (0 = a free port); `address` tells where."""
        self._ssl = ssl_context
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host or None, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        names = sorted(runner.addresses, key=len)  # IPv4 (host, port) before IPv6
        self.address = (str(names[0][0]), int(names[0][1]))

    async def stop(self) -> None:
        """Stop listening and close open requests."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the log line of a mutating call -----------------------------------------------

    def audit(self, request: web.Request, action: str, **fields: Any) -> None:
        """Log a change made through the API, with who and from where."""
        who = request[_WHO]
        details = " ".join(f"{k}={v!r}" for k, v in fields.items())
        logger.info(
            "admin: %s by %s from %s%s",
            action,
            who,
            request.remote,
            f" ({details})" if details else "",
            extra={"admin_user": who, "address": request.remote, "action": action, **fields},
        )

    # -- handlers ------------------------------------------------------------------------

    async def get_openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def get_stats(self, request: web.Request) -> web.Response:
        counters = self.broker.refresh_gauges()
        stats = asdict(counters)
        # Every drop but "no subscribers", as $SYS publish/messages/dropped counts them.
        stats["dropped"] = dropped_total(counters)
        stats["dropped_by_reason"] = {r.value: n for r, n in dropped_by_reason(counters).items()}
        body: dict[str, Any] = {"broker": stats}
        if self.figures is not None:
            body.update(self.figures())
        return web.json_response(body)

    async def list_clients(self, request: web.Request) -> web.Response:
        page, limit = _paging(request)
        return web.json_response(
            list_clients(self.broker, _client_filter(request), page, limit).json()
        )

    async def list_sessions(self, request: web.Request) -> web.Response:
        page, limit = _paging(request)
        return web.json_response(
            list_sessions(self.broker, _client_filter(request), page, limit).json()
        )

    def _session(self, request: web.Request) -> Any:
        client_id = request.match_info["clientid"]
        session = self.broker.sessions.get(client_id)
        if session is None:
            raise ApiError(404, "CLIENTID_NOT_FOUND", f"no client or session {client_id!r}")
        return session

    async def get_client(self, request: web.Request) -> web.Response:
        return web.json_response(client_detail(self._session(request)))

    async def kick_client(self, request: web.Request) -> web.Response:
        session = self._session(request)
        discard = _bool_arg(request, "discard_session")
        was_connected = session.connection is not None
        self.broker.kick(session.client_id, discard_session=discard)
        self.audit(
            request,
            "kick",
            client_id=session.client_id,
            discard_session=discard,
            was_connected=was_connected,
        )
        return web.json_response(
            {
                "clientid": session.client_id,
                "was_connected": was_connected,
                "session_discarded": discard,
            }
        )

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        page, limit = _paging(request)
        q = request.query
        return web.json_response(
            list_subscriptions(
                self.broker,
                q.get("clientid") or None,
                q.get("topic") or None,
                q.get("match_topic") or None,
                page,
                limit,
            ).json()
        )

    def _filter(self, request: web.Request) -> str:
        topic_filter = request.query.get("filter", "#") or "#"
        try:
            validate_topic_filter(topic_filter)
        except MQTTError as exc:
            raise ApiError(400, "BAD_TOPIC_FILTER", f"filter {topic_filter!r}: {exc}") from None
        return topic_filter

    async def list_retained(self, request: web.Request) -> web.Response:
        limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = request.query.get("cursor") or None
        with_count = _bool_arg(request, "count")
        page = self.retained_index.page(self._filter(request), cursor, limit, with_count)
        return web.json_response(page)

    async def get_retained(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        message = self.broker.retained.get(topic)
        if message is None:
            raise ApiError(404, "TOPIC_NOT_FOUND", f"no retained message on {topic!r}")
        return web.json_response(message_json(topic, message, self.broker.clock.now()))

    async def delete_retained(self, request: web.Request) -> web.Response:
        topic = request.match_info["topic"]
        if not self.broker.delete_retained(topic):
            raise ApiError(404, "TOPIC_NOT_FOUND", f"no retained message on {topic!r}")
        self.audit(request, "delete retained", topic=topic)
        return web.json_response({"deleted": 1})

    async def delete_retained_matching(self, request: web.Request) -> web.Response:
        if "filter" not in request.query:
            raise ApiError(400, "BAD_REQUEST", "filter is required to delete by filter")
        topic_filter = self._filter(request)
        topics = [topic for topic, _ in self.broker.retained.match(topic_filter)]
        deleted = sum(self.broker.delete_retained(topic) for topic in topics)
        self.audit(request, "delete retained", filter=topic_filter, deleted=deleted)
        return web.json_response({"deleted": deleted})

    async def publish(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "BAD_REQUEST", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "the body must be a JSON object")
        topic = body.get("topic")
        if not isinstance(topic, str):
            raise ApiError(400, "BAD_REQUEST", "topic: a string is required")
        try:
            validate_topic_name(topic)
        except MQTTError as exc:
            raise ApiError(400, "BAD_TOPIC", f"topic {topic!r}: {exc}") from None
        qos = body.get("qos", 0)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ApiError(400, "BAD_REQUEST", f"qos: {qos!r} is not 0, 1 or 2")
        retain = body.get("retain", False)
        if not isinstance(retain, bool):
            raise ApiError(400, "BAD_REQUEST", "retain: true or false")
        payload = _payload(body)
        flags = self.broker.publish(Message(topic, payload, qos, retain), None)
        if flags & REFUSED:
            # In a cluster: larger than NATS carries (docs/cluster.md, "Large messages").
            raise ApiError(413, "TOO_LARGE", "larger than the cluster carries (NATS max_payload)")
        self.audit(request, "publish", topic=topic, qos=qos, retain=retain, size=len(payload))
        return web.json_response({"topic": topic, "matched": bool(flags & 1)})

    async def post_reload(self, request: web.Request) -> web.Response:
        if self.reload is None:
            raise ApiError(409, "NO_CONFIG_FILE", "the broker was started without a config file")
        try:
            changes = self.reload()
        except ValueError as exc:
            raise ApiError(400, "BAD_CONFIG", str(exc)) from None
        self.audit(request, "reload", changes=changes)
        return web.json_response({"changes": changes})


def _payload(body: dict[str, Any]) -> bytes:
    if "payload_base64" in body:
        raw = body["payload_base64"]
        if not isinstance(raw, str):
            raise ApiError(400, "BAD_REQUEST", "payload_base64: a string is required")
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise ApiError(400, "BAD_REQUEST", "payload_base64: not base64") from None
    text = body.get("payload", "")
    if not isinstance(text, str):
        raise ApiError(400, "BAD_REQUEST", "payload: a string is required")
    return text.encode("utf-8")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(server: AdminServer) -> web.Application:
    """The aiohttp application: auth and error middleware, then the routes."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The dashboard is served by a ws listener, another origin: it may call the API
        # from the origins `allow_origins` was given, with its Authorization header.
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in server.cors_origins
        if request.method == "OPTIONS" and origin is not None:
            response: web.StreamResponse = web.Response(status=204 if allowed else 403)
        else:
            response = await handler(request)
        if allowed:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE"
            response.headers["Access-Control-Max-Age"] = "600"
            response.headers["Vary"] = "Origin"
        return response

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            request[_WHO] = server.auth.identify(request.headers.get("Authorization"))
        except Denied as exc:
            # No Basic challenge for a page's fetch (it has an Origin): the browser would
            # open its own login box over the dashboard's.
            challenge = exc.status == 401 and "Origin" not in request.headers
            headers = {"WWW-Authenticate": 'Basic realm="mqttd admin"'} if challenge else {}
            response = _error(
                exc.status, "UNAUTHORIZED" if exc.status == 401 else "FORBIDDEN", str(exc)
            )
            response.headers.update(headers)
            logger.info(
                "admin: refused %s %s from %s: %s",
                request.method,
                request.path,
                request.remote,
                exc,
            )
            return response
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.code, str(exc))

    app = web.Application(middlewares=[cors, guard], client_max_size=MAX_BODY)
    app[_BROKER] = server.broker
    for method, path, handler in routes(server):
        app.router.add_route(method, API_PREFIX + path, handler)
    return app


def routes(server: AdminServer) -> list[tuple[str, str, Handler]]:
    """(method, path under /api/v1, handler) of every route; the OpenAPI test reads it."""
    return [
        ("GET", "/openapi.json", server.get_openapi),
        ("GET", "/stats", server.get_stats),
        ("GET", "/clients", server.list_clients),
        ("GET", "/clients/{clientid}", server.get_client),
        ("DELETE", "/clients/{clientid}", server.kick_client),
        ("GET", "/sessions", server.list_sessions),
        ("GET", "/subscriptions", server.list_subscriptions),
        ("GET", "/retained", server.list_retained),
        ("DELETE", "/retained", server.delete_retained_matching),
        ("GET", "/retained/{topic:.+}", server.get_retained),
        ("DELETE", "/retained/{topic:.+}", server.delete_retained),
        ("POST", "/publish", server.publish),
        ("POST", "/reload", server.post_reload),
    ]
