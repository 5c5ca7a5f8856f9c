"""Shared fixtures: the real mqttd process, executables of other MQTT clients, unique names.

``mqttd_process`` starts ``python -m mqttd -p 0 --host 127.0.0.1`` in a temporary directory,
waits for the ``mqttd ready`` line on stderr and parses the port from the
``mqttd <version> listening on mqtt://HOST:PORT`` line. Teardown sends SIGTERM and kills
the whole process group if it has not exited after a few seconds; a session-end hook
kills anything still alive, so no test run leaves a broker behind.

Setting ``MQTTD_TEST_BROKER=mosquitto`` runs the same fixtures against Debian's
mosquitto instead (a reference broker, to check the *tests* themselves); tests that need
mqttd-only options skip in that mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_DEPS = ROOT / ".test-deps" / "node_modules"

READY_TIMEOUT = 15.0  # generous: two shared cores, a cold interpreter
STOP_TIMEOUT = 5.0

LISTENING_RE = re.compile(r"mqttd (\S+) listening on (mqtts?|wss?)://(\[[^\]]+\]|[^\s:/]+):(\d+)")
READY_LINE = "mqttd ready"

REFERENCE_BROKER = os.environ.get("MQTTD_TEST_BROKER", "").strip()

T = TypeVar("T")

# Every broker process any fixture started, so the session hook can reap leftovers.
_LIVE_PROCESSES: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(slots=True)
class Listener:
    """One listener announced on stderr, e.g. ``mqtt://127.0.0.1:41883``."""

    scheme: str
    host: str
    port: int


@dataclass(eq=False)
class MqttdProcess:
    """A running broker process and what it has written so far."""

    proc: subprocess.Popen[bytes]
    cwd: Path
    host: str = "127.0.0.1"
    port: int = 0
    version: str = ""
    listeners: list[Listener] = field(default_factory=list)
    reference: bool = False  # True when this is the reference broker, not mqttd
    _stderr_lines: list[str] = field(default_factory=list)
    _stdout_lines: list[str] = field(default_factory=list)
    _lines_changed: threading.Condition = field(default_factory=threading.Condition)
    _readers: list[threading.Thread] = field(default_factory=list)

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        with self._lines_changed:
            return "".join(self._stderr_lines)

    @property
    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        with self._lines_changed:
            return "".join(self._stdout_lines)

    @property
    def pid(self) -> int:
        """The broker's process id."""
        return self.proc.pid

    def _start_readers(self) -> None:
        for stream, lines in (
            (self.proc.stderr, self._stderr_lines),
            (self.proc.stdout, self._stdout_lines),
        ):
            if stream is None:
                continue
            thread = threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            thread.start()
            self._readers.append(thread)

    def _read(self, stream: object, lines: list[str]) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            with self._lines_changed:
                lines.append(raw.decode(errors="replace"))
                self._lines_changed.notify_all()
        with self._lines_changed:
            self._lines_changed.notify_all()

    def wait_for_stderr(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Block until ``predicate(stderr so far)`` holds; return the stderr text."""
        deadline = time.monotonic() + timeout
        with self._lines_changed:
            while True:
                text = "".join(self._stderr_lines)
                if predicate(text):
                    return text
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._readers_alive()):
                    raise TimeoutError(text)
                self._lines_changed.wait(min(remaining, 0.1))

    def _readers_alive(self) -> bool:
        return any(t.is_alive() for t in self._readers)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for ``mqttd ready`` and take host and port from the listening lines."""
        try:
            text = self.wait_for_stderr(lambda s: READY_LINE in s, timeout)
        except TimeoutError:
            self.kill()
            raise RuntimeError(
                f"mqttd did not print {READY_LINE!r} within {timeout}s "
                f"(exit code {self.proc.poll()}).\nstderr:\n{self.stderr}\nstdout:\n{self.stdout}"
            ) from None
        for match in LISTENING_RE.finditer(text):
            self.version = match.group(1)
            host = match.group(3).strip("[]")
            self.listeners.append(Listener(match.group(2), host, int(match.group(4))))
        tcp = [lst for lst in self.listeners if lst.scheme == "mqtt"]
        if not tcp:
            self.kill()
            raise RuntimeError(f"no 'listening on mqtt://HOST:PORT' line before ready:\n{text}")
        self.host, self.port = tcp[0].host, tcp[0].port

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the broker process itself."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal the broker and wait; return its exit code, None if it had to be killed."""
        if self.proc.poll() is None:
            self.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._finish()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the broker's whole process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._finish()

    def _finish(self) -> None:
        for thread in self._readers:
            thread.join(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with _LIVE_LOCK:
            _LIVE_PROCESSES.discard(self.proc)


# Runs in the child before the broker: on Linux ask for SIGTERM when pytest dies (even by
# SIGKILL, when no hook of ours can run), then exec the broker in the same process, so
# proc.pid is the broker's pid. The death signal survives execve.
_LAUNCHER = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(sys.argv[1]):
        os._exit(70)  # pytest is already gone
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _spawn(cmd: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *cmd]
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Its own process group: Ctrl-C on pytest does not hit the broker behind our back,
        # and teardown can kill anything the broker itself started.
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE_PROCESSES.add(proc)
    return proc


def _start_reference_broker(cwd: Path) -> MqttdProcess:
    """Debian's mosquitto on a free port, used to validate the tests themselves."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = cwd / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
    )
    server = MqttdProcess(_spawn([binary, "-c", str(conf)], cwd), cwd, port=port, reference=True)
    server._start_readers()
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                server.kill()
                raise RuntimeError(f"mosquitto did not start:\n{server.stderr}") from None
            time.sleep(0.05)
    server.listeners.append(Listener("mqtt", "127.0.0.1", port))
    return server


def start_mqttd(
    cwd: Path,
    args: list[str] | None = None,
    config: str | None = None,
    *,
    ready_timeout: float = READY_TIMEOUT,
) -> MqttdProcess:
    """Start ``python -m mqttd -p 0 --host 127.0.0.1 [args]`` in ``cwd`` and wait until ready.

    ``config`` is TOML text written to ``cwd/mqttd.toml`` and passed with ``-c``.
    """
    if REFERENCE_BROKER:
        if args or config:
            pytest.skip(f"reference broker {REFERENCE_BROKER}: test needs mqttd-only options")
        return _start_reference_broker(cwd)
    cmd = [sys.executable, "-m", "mqttd", "-p", "0", "--host", "127.0.0.1"]
    if config is not None:
        path = cwd / "mqttd.toml"
        path.write_text(config)
        cmd += ["-c", str(path)]
    cmd += args or []
    server = MqttdProcess(_spawn(cmd, cwd), cwd)
    server._start_readers()
    server.wait_ready(ready_timeout)
    return server


def _teardown(server: MqttdProcess) -> None:
    if server.proc.poll() is None and server.stop() is None:
        warnings.warn(
            f"broker pid {server.pid} ignored SIGTERM for {STOP_TIMEOUT}s and was killed",
            stacklevel=1,
        )
    server.kill()  # no-op once exited; closes the pipes and forgets the process


MqttdFactory = Callable[..., MqttdProcess]


@pytest.fixture
def mqttd_factory(tmp_path: Path) -> Iterator[MqttdFactory]:
    """Start brokers with custom ``args``/``config``; all are stopped at teardown."""
    started: list[MqttdProcess] = []
    counter = iter(range(1_000_000))

    def factory(
        args: list[str] | None = None,
        config: str | None = None,
        *,
        cwd: Path | None = None,
        **kw: float,
    ) -> MqttdProcess:
        # Pass the cwd of an earlier broker to restart "the same installation" (its
        # ./data/mqttd.db and config) after a stop or a kill.
        if cwd is None:
            cwd = tmp_path / f"mqttd-{next(counter)}"
            cwd.mkdir()
        server = start_mqttd(cwd, args, config, **kw)
        started.append(server)
        return server

    yield factory
    for server in started:
        _teardown(server)


@pytest.fixture
def mqttd_process(mqttd_factory: MqttdFactory) -> MqttdProcess:
    """A fresh real broker process for this test only."""
    return mqttd_factory()


@pytest.fixture(scope="module")
def mqttd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttdProcess]:
    """One real broker process shared by the tests of a module (they use unique topics).

    With ``MQTTD_TEST_SERVER=inprocess`` it is an in-process App instead (same host/port
    interface), handy under a debugger or for coverage of the core.
    """
    if os.environ.get("MQTTD_TEST_SERVER") == "inprocess" and not REFERENCE_BROKER:
        instance = InProcessBroker().start()
        yield instance  # type: ignore[misc]
        instance.stop()
        return
    server = start_mqttd(tmp_path_factory.mktemp("mqttd-shared"))
    yield server
    _teardown(server)


# --------------------------------------------------------------------------- in-process


class InProcessBroker:
    """mqttd's App running on its own event loop in a background thread.

    Clients in the test thread (paho, raw sockets) talk to ``host``/``port``; ``app`` and
    ``broker`` are the live objects. Touch them only through ``call``, which runs a
    function on the broker's loop and returns its result, so no state is read mid-update.
    """

    def __init__(self, configure: Callable[[Any], None] | None = None) -> None:
        self._configure = configure
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self.app: Any = None
        self.host = "127.0.0.1"
        self.port = 0
        self.reference = False
        self._thread = threading.Thread(target=self._run, name="mqttd-inprocess", daemon=True)

    @property
    def broker(self) -> Any:
        """The core `mqttd.broker.broker.Broker` object."""
        return self.app.broker

    def start(self, timeout: float = READY_TIMEOUT) -> InProcessBroker:
        """Start the loop thread and wait until every listener is up."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("in-process mqttd did not start")
        if self._error is not None:
            raise RuntimeError("in-process mqttd failed to start") from self._error
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        from mqttd.app import ephemeral_config, running  # only tests that use it need it

        try:
            config = ephemeral_config()
            config.listeners[0].host = "127.0.0.1"
            if self._configure is not None:
                self._configure(config)
            self._stop = asyncio.get_running_loop().create_future()
            async with running(config) as app:
                self.app = app
                self.host, self.port = app.host, app.port
                self._ready.set()
                await self._stop
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if not isinstance(exc, Exception):
                raise

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn()`` on the broker's event loop and return its result."""
        assert self.loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the App gracefully (5.0 clients get DISCONNECT 0x8B) and join the thread."""
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(_resolve_future, self._stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("in-process mqttd did not stop")


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


InProcessFactory = Callable[..., InProcessBroker]


@pytest.fixture
def broker_factory() -> Iterator[InProcessFactory]:
    """Start in-process brokers, optionally editing the Config first; stopped at teardown."""
    started: list[InProcessBroker] = []

    def factory(configure: Callable[[Any], None] | None = None) -> InProcessBroker:
        instance = InProcessBroker(configure).start()
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.stop()


@pytest.fixture
def broker(broker_factory: InProcessFactory) -> InProcessBroker:
    """An in-process mqttd on 127.0.0.1, a free port and no persistence, for this test."""
    return broker_factory()


# --------------------------------------------------------------------------- names


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A short unique token for client ids and topic prefixes of this test."""
    return f"{request.node.name[:20].strip('_[]')}-{uuid.uuid4().hex[:8]}".replace("/", "-")


@pytest.fixture
def topic(uid: str) -> str:
    """A unique topic prefix, so tests sharing a broker never see each other's messages."""
    return f"mqttd-test/{uid}"


def find_executable(name: str) -> str:
    """Path of an installed executable, or skip the test saying what is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/test.sh installs it when run as root)")
    return path


@pytest.fixture
def mosquitto_sub() -> str:
    """mosquitto_sub from Debian's mosquitto-clients."""
    return find_executable("mosquitto_sub")


@pytest.fixture
def mosquitto_pub() -> str:
    """mosquitto_pub from Debian's mosquitto-clients."""
    return find_executable("mosquitto_pub")


@pytest.fixture(scope="session")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/loadgen/loadgen.c compiled with the system compiler, as scripts/bench.py does."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    binary = tmp_path_factory.mktemp("loadgen") / "loadgen"
    flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-pthread"]
    source = ROOT / "scripts" / "loadgen" / "loadgen.c"
    subprocess.run([cc, *flags, "-o", str(binary), str(source)], check=True)
    return binary


@pytest.fixture
def node_with_mqtt_js() -> tuple[str, Path]:
    """The node executable and the node_modules folder that holds MQTT.js."""
    node = find_executable("node")
    if not (TEST_DEPS / "mqtt" / "package.json").is_file():
        pytest.skip(f"MQTT.js is not installed in {TEST_DEPS} (scripts/test.sh installs it)")
    return node, TEST_DEPS


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test a compiled codec older than its source (setup.py compiles it in place).

    Python imports the compiled module in preference to the .py beside it, so after an
    edit of mqttd/protocol the tests would silently run the code from before the edit.
    """
    stale = [
        str(source.relative_to(ROOT))
        for compiled in (ROOT / "mqttd").rglob("*.so")
        if (source := compiled.with_name(compiled.name.partition(".")[0] + ".py")).exists()
        and source.stat().st_mtime > compiled.stat().st_mtime
    ]
    if stale:
        raise pytest.UsageError(
            f"{', '.join(sorted(stale))} changed after the codec was compiled, so the tests"
            " would run the old code: rebuild it with `bash scripts/test.sh` (which reinstalls"
            " when the codec changed) or `.venv/bin/pip install -e .`"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill any broker a crashed or interrupted fixture left behind."""
    with _LIVE_LOCK:
        leftovers = list(_LIVE_PROCESSES)
        _LIVE_PROCESSES.clear()
    for proc in leftovers:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the tail of each broker process's stderr to the report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    seen: set[int] = set()
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, MqttdProcess) and id(value) not in seen:
            seen.add(id(value))
            tail = "".join(value.stderr.splitlines(keepends=True)[-40:])
            report.sections.append((f"broker pid {value.pid} stderr (last 40 lines)", tail))
