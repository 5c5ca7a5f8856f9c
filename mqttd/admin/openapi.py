"""The OpenAPI 3.1 description of the admin API, served at GET /api/v1/openapi.json.

Written as data beside the routes (server.py); tests/admin/test_openapi.py checks that
every registered route is described here and nothing else is.
"""

from __future__ import annotations

from typing import Any

from .. import __version__

__all__ = ["openapi_document"]


def _param(name: str, where: str, kind: str, text: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": text,
        "schema": {"type": kind},
    }


_PAGING = [
    _param("page", "query", "integer", "page number, from 1 (default 1)"),
    _param("limit", "query", "integer", "entries per page, 1..1000 (default 100)"),
]
_CLIENT_FILTERS = [
    _param("like_clientid", "query", "string", "substring of the client id"),
    _param("like_username", "query", "string", "substring of the user name"),
    _param("ip_address", "query", "string", "exact client address"),
    _param("proto_ver", "query", "integer", "protocol level: 3, 4 (3.1.1) or 5"),
    _param("conn_state", "query", "string", "connected or disconnected"),
]
_CLIENTID = _param("clientid", "path", "string", "the client id")
_TOPIC = _param("topic", "path", "string", "the topic name (slashes as they are)")
_FILTER = _param("filter", "query", "string", "topic filter, wildcards allowed (default #)")


def _ok(text: str, schema: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": text}
    if schema is not None:
        answer["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
        }
    return answer


_ERRORS = {
    "400": _ok("bad parameter", "Error"),
    "401": _ok("no or wrong credentials", "Error"),
    "403": _ok("the user has no admin role", "Error"),
}


def _op(summary: str, params: list[dict[str, Any]], ok: dict[str, Any], **more: Any) -> Any:
    return {"summary": summary, "parameters": params, "responses": {"200": ok, **_ERRORS}, **more}


def _page(**position: dict[str, Any]) -> dict[str, Any]:
    """A page of results; `position` is how the client asks for the next one."""
    meta = {
        **position,
        "limit": {"type": "integer"},
        "count": {"type": "integer"},
        "hasnext": {"type": "boolean"},
    }
    return {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "meta": {"type": "object", "properties": meta},
        },
    }


def openapi_document() -> dict[str, Any]:
    """The whole document as a dict (JSON-ready)."""
    not_found = {"404": _ok("no such client, session or topic", "Error")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mqttd admin API",
            "version": __version__,
            "description": "Manage a running mqttd broker (docs/admin.md).",
        },
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                "adminUser": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "Page": _page(page={"type": "integer"}),
                "CursorPage": _page(cursor={"type": ["string", "null"]}),
                "Object": {"type": "object"},
            },
        },
        "security": [{"apiKey": []}, {"adminUser": []}],
        "paths": {
            "/openapi.json": {"get": _op("this document", [], _ok("OpenAPI 3.1", "Object"))},
            "/stats": {
                "get": _op("broker, process and store figures", [], _ok("figures", "Object"))
            },
            "/clients": {
                "get": _op(
                    "list clients (sessions, connected or not), filtered and paged",
                    _CLIENT_FILTERS + _PAGING,
                    _ok("a page of clients", "Page"),
                )
            },
            "/clients/{clientid}": {
                "get": _op(
                    "one client with its subscriptions and queue sizes",
                    [_CLIENTID],
                    _ok("the client", "Object"),
                    responses={"200": _ok("the client", "Object"), **not_found, **_ERRORS},
                ),
                "delete": _op(
                    "kick: disconnect the client (5.0: DISCONNECT 0x98)",
                    [
                        _CLIENTID,
                        _param(
                            "discard_session",
                            "query",
                            "boolean",
                            "also end its session, persistent or not",
                        ),
                    ],
                    _ok("kicked", "Object"),
                    responses={"200": _ok("kicked", "Object"), **not_found, **_ERRORS},
                ),
            },
            "/sessions": {
                "get": _op(
                    "list sessions, offline ones included, filtered and paged",
                    _CLIENT_FILTERS + _PAGING,
                    _ok("a page of sessions", "Page"),
                )
            },
            "/subscriptions": {
                "get": _op(
                    "list subscriptions",
                    [
                        _param("clientid", "query", "string", "exact client id"),
                        _param("topic", "query", "string", "exact topic filter"),
                        _param("match_topic", "query", "string", "filters matching this topic"),
                        *_PAGING,
                    ],
                    _ok("a page of subscriptions", "Page"),
                )
            },
            "/retained": {
                "get": _op(
                    "list retained messages in topic order, cursor-paged",
                    [
                        _FILTER,
                        _param("cursor", "query", "string", "meta.cursor of the previous page"),
                        _param(
                            "count",
                            "query",
                            "boolean",
                            "first page: also count the matches (always done for #)",
                        ),
                        _param("limit", "query", "integer", "1..1000 (default 100)"),
                    ],
                    _ok("a page of retained messages", "CursorPage"),
                ),
                "delete": _op(
                    "delete every retained message matching filter (required)",
                    [_FILTER],
                    _ok("how many were deleted", "Object"),
                ),
            },
            "/retained/{topic}": {
                "get": _op(
                    "one retained message",
                    [_TOPIC],
                    _ok("the message", "Object"),
                    responses={"200": _ok("the message", "Object"), **not_found, **_ERRORS},
                ),
                "delete": _op(
                    "delete one retained message (nothing is sent to subscribers)",
                    [_TOPIC],
                    _ok("deleted", "Object"),
                    responses={"200": _ok("deleted", "Object"), **not_found, **_ERRORS},
                ),
            },
            "/publish": {
                "post": _op(
                    "publish a message as the broker",
                    [],
                    _ok("published", "Object"),
                    responses={
                        "200": _ok("published", "Object"),
                        "413": _ok("larger than the cluster carries (NATS max_payload)", "Error"),
                        **_ERRORS,
                    },
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["topic"],
                                    "properties": {
                                        "topic": {"type": "string"},
                                        "payload": {"type": "string"},
                                        "payload_base64": {"type": "string"},
                                        "qos": {"type": "integer", "enum": [0, 1, 2]},
                                        "retain": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    },
                )
            },
            "/reload": {
                "post": _op(
                    "reload the configuration file (as SIGHUP)",
                    [],
                    _ok("what changed", "Object"),
                    responses={
                        "200": _ok("what changed", "Object"),
                        "409": _ok("started without a config file", "Error"),
                        **_ERRORS,
                    },
                )
            },
        },
    }
