"""A small blocking client of the admin API, for `mqttd ctl` and scripts.

Standard library only (urllib): a command-line tool that makes one or a few requests
gains nothing from an event loop. Errors come out as two exceptions whose difference
scripts care about: `ApiError` (the API answered with an error: bad parameter, not
found) and `Unreachable` (no answer, TLS failure, or the credentials were refused).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["AdminClient", "ApiError", "Unreachable"]

TIMEOUT = 10.0  # seconds for one request


class ApiError(Exception):
    """The API answered with an error status; `status`, `code` and the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code


class Unreachable(Exception):
    """No usable answer: the API cannot be reached, or refused the credentials."""


@dataclass
class AdminClient:
    """Calls on one admin API at `url` (``http(s)://host:port``).

    Credentials: `api_key` (sent as Bearer) or `username` and `password` (Basic).
    `cafile` verifies an HTTPS API's certificate; `insecure` skips verification.
    """

    url: str = "http://127.0.0.1:9884"
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    insecure: bool = False

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode())
            headers["Authorization"] = f"Basic {token.decode()}"
        return headers

    def _context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """`method` on ``/api/v1`` + `path`; the decoded JSON answer.

        Parameters whose value is None are left out. Raises `ApiError` or `Unreachable`.
        """
        query = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (params or {}).items()
            if v is not None
        }
        url = self.url.rstrip("/") + "/api/v1" + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = self._headers()
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self._context()) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}")
            except ValueError:
                answer = {}
            code = str(answer.get("code", "")) if isinstance(answer, dict) else ""
            message = str(answer.get("message", exc.reason)) if isinstance(answer, dict) else ""
            if exc.code in (401, 403):
                raise Unreachable(f"{self.url}: {exc.code} {message}") from None
            raise ApiError(exc.code, code, message) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach the admin API at {self.url}: {reason}") from None

    def pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every entry of a cursor-paged list (retained), following the cursors."""
        entries: list[dict[str, Any]] = []
        cursor = None
        while True:
            answer = self.request("GET", path, {**params, "cursor": cursor})
            entries += answer["data"]
            cursor = answer["meta"].get("cursor")
            if not answer["meta"].get("hasnext") or cursor is None:
                return entries
