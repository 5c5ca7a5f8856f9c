"""Headless Debian Chromium driven over the DevTools protocol (CDP), synchronously.

Why CDP and not Playwright: Playwright (165 MB with its bundled Node driver) supports only
the Chromium revision it pins, while Debian's /usr/bin/chromium moves with apt; the few CDP
commands used here (Target, Page, Runtime, Network, Log) have been stable for years. It also
needs nothing beyond `websockets`, already a dependency, and never downloads a browser.

`Chromium` starts the browser with a fresh profile and ``--remote-debugging-port=0``, reads
the port from the DevTools file Chromium writes into the profile, and speaks CDP over one
WebSocket in "flattened" session mode (one connection, a sessionId per page). Events are
buffered, so a test can read what happened (console lines, WebSocket handshakes) afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]

START_TIMEOUT = 30.0


class BrowserError(Exception):
    """A CDP command failed, or the page threw."""


def chromium_path() -> str | None:
    """The Debian Chromium binary, if installed."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


class Chromium:
    """One headless Chromium process and its CDP connection. Use as a context manager."""

    def __init__(self, executable: str = CHROMIUM) -> None:
        self.executable = executable
        self.profile = Path(tempfile.mkdtemp(prefix="mqttd-chromium-"))
        self.log_path = self.profile / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Launch the browser and connect to its DevTools endpoint."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its zygote and renderers go with it at close()
            )
        active_port = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if active_port.is_file():
                lines = active_port.read_text().split()
                if len(lines) >= 2:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"Chromium did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        port, path = lines[0], lines[1]
        self.ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10)
        )

    def log_text(self) -> str:
        """What Chromium wrote on stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Close the browser (politely, then by force) and delete the profile."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.send(json.dumps({"id": next(self._ids), "method": "Browser.close"}))
            with contextlib.suppress(Exception):
                self._stack.close()
            self.ws = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            # Renderers may outlive the browser process for a moment: end our group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- CDP --------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one command and return its result; events seen meanwhile are buffered."""
        assert self.ws is not None, "browser not started"
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} within {timeout}s")
            reply = json.loads(self.ws.recv(timeout=remaining))
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def pump(self, timeout: float) -> None:
        """Read events for up to `timeout` seconds."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                reply = json.loads(self.ws.recv(timeout=remaining))
            except TimeoutError:
                return
            if "method" in reply:
                self.events.append(reply)

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A new tab with Page, Runtime, Network and Log events on."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page


class Page:
    """One tab: navigate, evaluate JavaScript, wait for conditions, take screenshots."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A CDP command in this page's session."""
        return self.browser.send(method, params, self.session)

    def events(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every buffered event `method` of this page."""
        return [
            e["params"]
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        before = len(self.events("Page.loadEventFired"))
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired", before, timeout)

    def wait_for_event(self, method: str, seen: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for event number `seen` (0-based) of `method` in this page."""
        deadline = time.monotonic() + timeout
        while len(self.events(method)) <= seen:
            if time.monotonic() > deadline:
                raise BrowserError(f"no {method} within {timeout}s")
            self.browser.pump(0.05)
        return self.events(method)[seen]

    def evaluate(self, expression: str, *, await_promise: bool = True) -> Any:
        """Evaluate `expression` in the page and return its value (JSON-serialisable)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": await_promise, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"page threw: {text}")
        return result["result"].get("value")

    def wait_for(
        self, expression: str, timeout: float = 15.0, describe: Callable[[], str] | None = None
    ) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                extra = describe() if describe is not None else ""
                raise BrowserError(
                    f"timed out after {timeout}s waiting for: {expression}\n{extra}\n"
                    f"console: {self.console()}"
                )
            self.browser.pump(0.05)

    def console(self) -> list[str]:
        """Console API lines, log entries and uncaught exceptions of this page."""
        lines = []
        for params in self.events("Runtime.consoleAPICalled"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            lines.append(f"console.{params['type']}: {args}")
        for params in self.events("Log.entryAdded"):
            lines.append(f"log.{params['entry']['level']}: {params['entry']['text']}")
        for params in self.events("Runtime.exceptionThrown"):
            details = params["exceptionDetails"]
            lines.append(
                f"exception: {details.get('exception', {}).get('description') or details['text']}"
            )
        return lines

    def screenshot(self, path: Path, fit_content: bool = True) -> None:
        """Save a PNG of the page: as tall as its content (or the viewport), no blank tail."""
        params: dict[str, Any] = {"format": "png"}
        if fit_content:
            metrics = self.send("Page.getLayoutMetrics")
            viewport, content = metrics["cssLayoutViewport"], metrics["cssContentSize"]
            height = self.evaluate(
                "Math.ceil(Math.max(...[...document.body.children].map("
                "e => e.getBoundingClientRect().bottom + window.scrollY))) + 16"
            )
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": viewport["clientWidth"],
                "height": min(int(height), int(content["height"])),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
