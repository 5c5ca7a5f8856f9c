"""The OpenAPI document describes exactly the routes the admin server registers."""

from __future__ import annotations

import re

import aiohttp

from admin.test_api import admin_config
from mqttd.admin.server import API_PREFIX
from mqttd.app import running


async def test_openapi_served_and_matches_the_routes() -> None:
    async with running(admin_config()) as app:
        assert app.admin is not None
        async with (
            aiohttp.ClientSession(base_url=app.admin.url) as http,
            http.get(API_PREFIX + "/openapi.json") as r,
        ):
            assert r.status == 200
            document = await r.json()
        registered = set()
        for route in app.admin.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            # aiohttp writes "{topic:.+}"; OpenAPI writes "{topic}".
            path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)
            if route.method != "HEAD":
                registered.add((route.method.lower(), path.removeprefix(API_PREFIX)))
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert document["openapi"].startswith("3.")
    assert described == registered
    for path, item in document["paths"].items():
        for operation in item.values():
            assert operation["summary"], path
            names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), path
