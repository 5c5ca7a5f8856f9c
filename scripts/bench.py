#!/usr/bin/env python3
"""Side-by-side broker benchmark: mqttd against Mosquitto (and amqtt), driven by loadgen.

Anyone can rerun it from a fresh clone (README set-up, a C compiler, Mosquitto):

    python scripts/bench.py                                  # every scenario, 3 rounds
    python scripts/bench.py --quick --rounds 1               # a short smoke run
    python scripts/bench.py --scenario fan-in-q1,latency --brokers mqttd,mosquitto
    python scripts/bench.py --json results.json              # also save every raw result

How it measures (docs/benchmarks.md explains how to read the tables):

- loadgen (scripts/loadgen/loadgen.c: C, epoll, worker threads) is built with the system
  compiler into .bench/ (git-ignored) and rebuilt when its source changes.
- One fresh broker process per run, on a free loopback port, stopped afterwards.
- Brokers are interleaved within a round (A B C A B C ...), and each table shows medians over
  rounds, so slow drift of this shared machine hits every broker alike.
- Per broker and scenario, -m is sized from a short calibration run so that a run lasts about
  --seconds (Mosquitto's reference counts are the upper bound): a slow broker gets a smaller
  message count instead of a run of minutes.
- loadgen -R PID reads the broker's CPU time and RSS from /proc, and reports its own CPU time
  over the same window, to show that the generator never competed with the broker for a core.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
LOADGEN_SRC = ROOT / "scripts" / "loadgen" / "loadgen.c"
AMQTT_VERSION = "0.12.1"
MOSQUITTO = Path("/usr/sbin/mosquitto")
MQTTD_READY = "mqttd ready"

Kind = Literal["throughput", "latency", "conns"]
# Brokers whose -m is sized from a calibration run by default: the reference counts suit
# Mosquitto and mqttd, amqtt is some 20 times slower.
CALIBRATED_BROKERS = frozenset({"amqtt", "mqttd-cluster-1", "mqttd-cluster-2"})
Value = float | str


# ---------------------------------------------------------------- scenarios


@dataclass(slots=True, frozen=True)
class Scenario:
    """One loadgen invocation pattern, minus the port, broker pid and message count."""

    name: str
    kind: Kind
    args: tuple[str, ...]
    # Reference -m, sized for Mosquitto to last 3-10 s; 0 when the scenario takes no -m.
    messages: int = 0
    # Replacements used by --quick for scenarios that are not calibrated.
    quick_args: tuple[str, ...] | None = None
    quick_messages: int = 0
    # Size -m from a calibration run (throughput scenarios; the latency run has a fixed rate).
    calibrate: bool = False
    # Broker that the ratio column divides by.
    baseline: str = "mosquitto"
    # Fixed broker variants instead of --brokers (persist-q1 compares mqttd with itself).
    variants: tuple[str, ...] | None = None
    description: str = ""
    # Offered rate = this fraction of the broker's median rate in the scenario `rate_of`
    # (p99 latency at 50 % of each broker's own maximum).
    rate_of: str = ""
    rate_fraction: float = 0.5


COMMON = ("-b", "64")
# loadgen's -W: poll the sockets at most every W us, so that a broker writing one packet per
# send() (Mosquitto) does not cost the generator one read per delivery. Not for fan-in QoS 1/2:
# there every delayed subscriber PUBACK idles the broker behind its in-flight window
# (docs/benchmarks.md, "Fan-in QoS 1"); QoS 0 has no acks to delay.
SPREAD = ("-W", "1000")
COALESCE_Q0 = ("-W", "200")
PAIRS = ("-W", "3000")  # 100 subscribers, each at about 1 % of the rate
#: The brokers of the cluster scenarios: (name, nodes); nodes 0 = a plain single mqttd.
CLUSTER_NODES = {"mqttd": 0, "mqttd-cluster-1": 1, "mqttd-cluster-2": 2}
CLUSTER_VARIANTS = tuple(CLUSTER_NODES)
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "fan-in-q0",
        "throughput",
        ("-s", "fan-in", "-P", "4", "-q", "0", *COALESCE_Q0, *COMMON),
        messages=1_200_000,
        calibrate=True,
        description="4 publishers -> 1 subscriber, QoS 0",
    ),
    Scenario(
        "fan-in-q1",
        "throughput",
        ("-s", "fan-in", "-P", "4", "-q", "1", *COMMON),
        messages=500_000,
        calibrate=True,
        description="4 publishers -> 1 subscriber, QoS 1",
    ),
    Scenario(
        "fan-in-q2",
        "throughput",
        ("-s", "fan-in", "-P", "4", "-q", "2", *COMMON),
        messages=80_000,
        calibrate=True,
        description="4 publishers -> 1 subscriber, QoS 2",
    ),
    Scenario(
        "fan-out-q0",
        "throughput",
        ("-s", "fan-out", "-S", "50", "-q", "0", *SPREAD, *COMMON),
        messages=40_000,
        calibrate=True,
        description="1 publisher -> 50 subscribers, QoS 0 (rates are deliveries/s)",
    ),
    Scenario(
        "fan-out-q1",
        "throughput",
        ("-s", "fan-out", "-S", "50", "-q", "1", *SPREAD, *COMMON),
        messages=16_000,
        calibrate=True,
        description="1 publisher -> 50 subscribers, QoS 1 (rates are deliveries/s)",
    ),
    Scenario(
        "pairs-q1",
        "throughput",
        ("-s", "pairs", "-N", "100", "-q", "1", *PAIRS, *COMMON),
        messages=400_000,
        calibrate=True,
        description="100 publisher/subscriber pairs, QoS 1",
    ),
    Scenario(
        "latency",
        "latency",
        ("-s", "fan-in", "-P", "4", "-q", "1", "-r", "1000", *COMMON),
        messages=4_000,
        quick_messages=1_500,
        description="fan-in QoS 1 at an offered 1,000 msg/s: end-to-end latency",
    ),
    Scenario(
        "latency-half",
        "latency",
        ("-s", "fan-in", "-P", "4", "-q", "1", *COMMON),
        messages=0,
        rate_of="fan-in-q1",
        description="fan-in QoS 1 at 50 % of the broker's own median fan-in-q1 rate: latency",
    ),
    Scenario(
        "conns",
        "conns",
        ("-s", "conns", "-C", "5000", "-t", "3", "-c", "100"),
        quick_args=("-s", "conns", "-C", "1000", "-t", "1", "-c", "100"),
        description="5,000 idle connections (100 connecting at a time): RSS per connection, "
        "connects/s",
    ),
    Scenario(
        "conns-19k",
        "conns",
        ("-s", "conns", "-C", "19000", "-t", "3", "-c", "200"),
        quick_args=("-s", "conns", "-C", "2000", "-t", "1", "-c", "200"),
        description="19,000 idle connections (the file limit here is 20,000): RSS per connection",
    ),
    Scenario(
        "persist-q1",
        "throughput",
        ("-s", "fan-in", "-P", "4", "-q", "1", "-x", "3600", *COMMON),
        messages=500_000,
        calibrate=True,
        baseline="mqttd",
        variants=("mqttd-persist", "mqttd"),
        description="fan-in QoS 1 to a persistent-session subscriber: mqttd with SQLite "
        "(default durability) vs the same load in memory",
    ),
    # Cluster (docs/cluster.md): one node alone, one node with [cluster] on (the cost of
    # the backplane), and two nodes with the publishers on one and the subscribers on the
    # other, so every message crosses NATS. All on this one machine. No back-pressure
    # crosses nodes, so up to the whole end-to-end window waits on the subscribers' node
    # (seconds of latency): a longer drain (-D) lets it arrive before loss is counted.
    Scenario(
        "cluster-fan-in-q1",
        "throughput",
        ("-s", "fan-in", "-P", "4", "-q", "1", "-D", "6", *COMMON),
        messages=500_000,
        calibrate=True,
        baseline="mqttd",
        variants=CLUSTER_VARIANTS,
        description="fan-in QoS 1: 1 node vs 1 cluster node vs 2 nodes (publishers on one, "
        "subscriber on the other, through nats-server)",
    ),
    Scenario(
        "cluster-pairs-q1",
        "throughput",
        ("-s", "pairs", "-N", "100", "-q", "1", "-D", "6", *PAIRS, *COMMON),
        messages=400_000,
        calibrate=True,
        baseline="mqttd",
        variants=CLUSTER_VARIANTS,
        description="100 pairs QoS 1: 1 node vs 1 cluster node vs 2 nodes (each publisher on "
        "one node, its subscriber on the other)",
    ),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


def persisted(sc: Scenario) -> bool:
    """A scenario of mqttd with SQLite persistence (persist-q1: the durable variant)."""
    return "mqttd-persist" in (sc.variants or ())


def profile_scenarios() -> list[str]:
    """The scenarios one broker can run alone (profile_ab.py, profile_broker.py): those
    without variants, and persist-q1 as its durable variant."""
    return [s.name for s in SCENARIOS if not s.variants or persisted(s)]


# ---------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout holds only the tables."""
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def children_cpu_s() -> float:
    """User + system CPU seconds of every child reaped so far (RUSAGE_CHILDREN)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; brokers and loadgen inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_result(stdout: str) -> dict[str, Value]:
    """Parse loadgen's result: the last stdout line holding a JSON object."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                raw = json.loads(line)
            except ValueError:
                return {}
            return {k: float(v) if isinstance(v, int | float) else str(v) for k, v in raw.items()}
    return {}


def num(result: dict[str, Value], key: str) -> float | None:
    """A numeric result field, or None when missing or negative (loadgen's 'unknown')."""
    v = result.get(key)
    if isinstance(v, float) and v >= 0:
        return v
    return None


# ---------------------------------------------------------------- loadgen


def build_loadgen(src: Path = LOADGEN_SRC) -> Path:
    """Compile loadgen.c with the system compiler into .bench/ (again when the source changed)."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    binary = BENCH_DIR / "loadgen"
    stamp = BENCH_DIR / "loadgen.sha256"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if binary.exists() and stamp.exists() and stamp.read_text() == digest:
        return binary
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("no C compiler: install gcc (apt-get install gcc) or set CC")
    log(f"building {binary} from {src.relative_to(ROOT)} with {cc}")
    tmp = binary.with_suffix(".tmp")
    subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-std=gnu11", "-pthread", "-o", str(tmp), str(src)],
        check=True,
    )
    tmp.replace(binary)
    stamp.write_text(digest)
    return binary


@dataclass(slots=True)
class LoadRun:
    """One loadgen execution against one broker process."""

    scenario: str
    broker: str
    round: int
    messages: int
    argv: list[str]
    result: dict[str, Value] = field(default_factory=dict)
    gen_cpu_s: float = 0.0
    wall_s: float = 0.0
    returncode: int = 0
    error: str = ""
    calibration: bool = False

    @property
    def ok(self) -> bool:
        """A run counts when loadgen finished and printed a result without an error."""
        return (
            not self.error
            and bool(self.result)
            and "error" not in self.result
            and self.result.get("timed_out", 0.0) == 0.0
            and self.result.get("failed", 0.0) == 0.0
        )

    @property
    def gen_cpu_pct(self) -> float:
        """loadgen's CPU use in percent of one core while it measured (its own figure), or
        over its whole process life when it gave none."""
        own = num(self.result, "gen_cpu_pct")
        if own is not None:
            return own
        return 100.0 * self.gen_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def run_load(
    binary: Path, argv_tail: Sequence[str], timeout_s: float
) -> tuple[dict[str, Value], float, float, int, str]:
    """Run loadgen once; return (result, generator CPU s, wall s, exit code, output tail)."""
    argv = [str(binary), "-T", str(int(timeout_s)), *argv_tail]
    cpu0, t0 = children_cpu_s(), time.monotonic()
    # Only loadgen is reaped inside this window (the broker is still running), so the
    # RUSAGE_CHILDREN delta is the generator's own CPU time.
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        out = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        rc = -1
    wall, cpu = time.monotonic() - t0, children_cpu_s() - cpu0
    tail_lines = [ln for ln in out.splitlines() if not ln.startswith("{")][-4:]
    return parse_result(out), cpu, wall, rc, "\n".join(tail_lines)


# ---------------------------------------------------------------- brokers


@dataclass(slots=True)
class BrokerSpec:
    """How to start one broker on a given port, inside a temp dir that it may write into."""

    name: str
    command: Callable[[int, Path], list[str]]
    ready_line: str | None = None
    version: str = ""
    #: A cluster of this many mqttd nodes on one nats-server (0: one broker process).
    cluster_nodes: int = 0


class BrokerFailed(RuntimeError):
    """The broker exited or never accepted connections."""


@contextlib.contextmanager
def running_broker(spec: BrokerSpec, start_timeout_s: float = 20.0) -> Iterator[tuple[int, int]]:
    """Start a fresh broker process, yield (pid, port), always stop it afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        tmpdir = Path(tmp)
        argv = spec.command(port, tmpdir)
        logfile = tmpdir / "broker.log"
        with logfile.open("wb") as logf:
            # Output goes to a file, never a pipe: a pipe nobody reads would stall a chatty
            # broker (amqtt logs every connection) in the middle of a run.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                cwd=tmpdir,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if proc.poll() is not None:
                    raise BrokerFailed(
                        f"{spec.name} exited with code {proc.returncode}:\n{tail(logfile)}"
                    )
                if spec.ready_line and spec.ready_line in logfile.read_text(errors="replace"):
                    break
                if port_open(port):
                    break
                if time.monotonic() > deadline:
                    raise BrokerFailed(
                        f"{spec.name} not ready after {start_timeout_s:.0f} s:\n{tail(logfile)}"
                    )
                time.sleep(0.05)
            # The ready line may come just before the listener accepts; wait for both.
            while not port_open(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BrokerFailed(
                        f"{spec.name} does not accept on port {port}:\n{tail(logfile)}"
                    )
                time.sleep(0.05)
            yield proc.pid, port
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 100
max_queued_messages 1000000
max_connections -1
log_dest none
user root
"""

AMQTT_CONF = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
    max_connections: 0
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_cluster(spec: BrokerSpec) -> Iterator[tuple[int, int, int, dict[str, int]]]:
    """Yield (pid, port, subscribers' port, every pid by name) of a broker or a cluster.

    A plain spec is one process on one port. A cluster spec starts nats-server -js and
    `cluster_nodes` mqttd nodes on it; publishers go to the first node, subscribers to
    the last, and everything is stopped afterwards.
    """
    if not spec.cluster_nodes:
        with running_broker(spec) as (pid, port):
            yield pid, port, port, {"mqttd": pid}
        return
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "jetstream"

        def nats_command(port: int, _: Path) -> list[str]:
            return [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]

        nats_pid, nats_port = stack.enter_context(
            running_broker(BrokerSpec("nats-server", nats_command))
        )
        pids = {"nats": nats_pid}
        nodes: list[tuple[int, int]] = []
        for i in range(spec.cluster_nodes):
            node = BrokerSpec(
                f"{spec.name}-{i}",
                cluster_node_command(spec, nats_port, f"n{i}"),
                ready_line=MQTTD_READY,
            )
            nodes.append(stack.enter_context(running_broker(node, start_timeout_s=30.0)))
            pids[f"node{i}"] = nodes[-1][0]
        yield nodes[0][0], nodes[0][1], nodes[-1][1], pids


def cluster_node_command(
    spec: BrokerSpec, nats_port: int, node: str
) -> Callable[[int, Path], list[str]]:
    """The command of one cluster node: the spec's mqttd command with a [cluster] section."""

    def command(port: int, tmp: Path) -> list[str]:
        argv = spec.command(port, tmp)
        conf = tmp / "mqttd.toml"
        text = conf.read_text() if conf.exists() else ""
        conf.write_text(
            text + f'\n[cluster]\nenabled = true\nname = "bench"\nnode = "{node}"\n'
            f'urls = ["nats://127.0.0.1:{nats_port}"]\n'
        )
        if "-c" not in argv:
            argv[3:3] = ["-c", str(conf)]
        return argv

    return command


def mosquitto_spec() -> BrokerSpec | str:
    """Debian's Mosquitto, installed with apt-get when missing and we are root."""
    if not MOSQUITTO.exists():
        if os.geteuid() != 0:
            return f"{MOSQUITTO} missing (apt-get install mosquitto needs root)"
        log("installing mosquitto with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "mosquitto"],
            env=env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if not MOSQUITTO.exists():
            return "apt-get install mosquitto failed"

    def command(port: int, tmp: Path) -> list[str]:
        conf = tmp / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=port))
        return [str(MOSQUITTO), "-c", str(conf)]

    proc = subprocess.run([str(MOSQUITTO), "-h"], capture_output=True, text=True, check=False)
    m = re.search(r"mosquitto version (\S+)", proc.stdout + proc.stderr)
    return BrokerSpec("mosquitto", command, version=m.group(1) if m else "")


def amqtt_spec() -> BrokerSpec | str:
    """amqtt in a venv of its own (.bench/amqtt-venv): it pins websockets, mqttd's .venv must
    not see it."""
    venv = BENCH_DIR / "amqtt-venv"
    exe = venv / "bin" / "amqtt"
    if not exe.exists():
        log(f"creating {venv} with amqtt=={AMQTT_VERSION} (first use only)")
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    f"amqtt=={AMQTT_VERSION}",
                ],
                check=True,
            )
        except (subprocess.CalledProcessError, OSError) as exc:
            return f"cannot install amqtt=={AMQTT_VERSION}: {exc}"
        if not exe.exists():
            return f"amqtt=={AMQTT_VERSION} installed no `amqtt` command"

    def command(port: int, tmp: Path) -> list[str]:
        conf = tmp / "amqtt.yaml"
        conf.write_text(AMQTT_CONF.format(port=port))
        return [str(exe), "-c", str(conf)]

    return BrokerSpec("amqtt", command, version=AMQTT_VERSION)


def mqttd_python(override: str | None) -> Path:
    """The interpreter that runs mqttd: --mqttd-python or the project's .venv."""
    return Path(override) if override else ROOT / ".venv" / "bin" / "python"


# The same limits as the Mosquitto configuration above, persistence off like Mosquitto's
# `persistence false`, and no per-connection log lines like its `log_dest none`.
MQTTD_CONF = """\
[limits]
max_inflight_messages = 100
max_queued_messages = 1000000

[persistence]
enabled = false

[log]
level = "warning"
"""


@dataclass(slots=True, frozen=True)
class MqttdOptions:
    """What this work tree's `python -m mqttd --help` offers (the broker is young)."""

    python: Path
    config: bool  # -c FILE: a TOML file that can match the Mosquitto configuration
    db: bool  # --db PATH: SQLite persistence on

    @classmethod
    def detect(cls, python: Path) -> MqttdOptions:
        """Read `--help`; a broker that cannot print it offers nothing."""
        try:
            proc = subprocess.run(
                [str(python), "-m", "mqttd", "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
            )
            text = proc.stdout + proc.stderr
        except (OSError, subprocess.TimeoutExpired):
            text = ""
        return cls(
            python, config=bool(re.search(r"(^|[\s\[,])-c\b|--config\b", text)), db="--db" in text
        )


def mqttd_command(
    opts: MqttdOptions, persist: bool, use_config: bool
) -> Callable[[int, Path], list[str]]:
    """The mqttd command line for one run.

    With `use_config`, a generated TOML file sets Mosquitto's limits and turns persistence and
    INFO logging off; `persist` adds `--db <tmp>/mqttd.db` (SQLite persistence on). Without a
    config file mqttd runs on its defaults, in the temp dir as working directory (so a default
    ./data/mqttd.db lands there). `--db :memory:` is avoided on purpose: it still runs the
    SQLite store, which Mosquitto's `persistence false` does not.
    """

    def command(port: int, tmp: Path) -> list[str]:
        argv = [str(opts.python), "-m", "mqttd"]
        if use_config:
            conf = tmp / "mqttd.toml"
            conf.write_text(MQTTD_CONF)
            argv += ["-c", str(conf)]
        argv += ["-p", str(port), "--host", "127.0.0.1"]
        if persist:
            argv += ["--db", str(tmp / "mqttd.db")]
        return argv

    return command


def mqttd_spec(opts: MqttdOptions, persist: bool = False) -> BrokerSpec | str:
    """mqttd from this work tree, probed once: with the generated config file when `-c` is
    offered and accepted, else on its defaults."""
    name = "mqttd-persist" if persist else "mqttd"
    if not opts.python.exists():
        return f"{opts.python} missing (run scripts/venv.sh first)"
    why = ""
    for use_config in (True, False) if opts.config else (False,):
        spec = BrokerSpec(
            name,
            mqttd_command(opts, persist, use_config),
            ready_line=MQTTD_READY,
            version="(generated config)" if use_config else "(defaults)",
        )
        failed = probe(spec)
        if failed is None:
            if why:
                log(
                    f"{name}: the generated config file was refused, running on defaults: "
                    f"{why.splitlines()[-1] if why else ''}"
                )
            return spec
        why = failed
    return why


def probe(spec: BrokerSpec) -> str | None:
    """Start and stop the broker once; None when it came up, else why not.

    A port taken by someone else between `free_port` and the broker's bind is not the
    broker's refusal (it would make `mqttd_spec` fall back to the defaults): try again.
    """
    why = ""
    for _attempt in range(3):
        try:
            with running_broker(spec, start_timeout_s=15.0):
                return None
        except BrokerFailed as exc:
            why = str(exc)
            if "already in use" not in why:
                break
    return why


# ---------------------------------------------------------------- the run


@dataclass(slots=True)
class Settings:
    """What the command line asked for."""

    scenarios: list[Scenario]
    brokers: list[str]
    rounds: int
    quick: bool
    seconds: float
    calibrate: bool
    scale: dict[str, float]
    calibrated: frozenset[str] = CALIBRATED_BROKERS


class Bench:
    """Drives the scenarios: calibration, interleaved rounds, tables."""

    def __init__(self, binary: Path, specs: dict[str, BrokerSpec], settings: Settings) -> None:
        self.binary = binary
        self.specs = specs
        self.settings = settings
        self.runs: list[LoadRun] = []
        self.skipped: dict[str, str] = {}

    def timeout_for(self) -> float:
        """loadgen's -T: generous next to the target duration, short enough to not hang."""
        return 30.0 + 8.0 * self.settings.seconds

    def scenario_args(self, sc: Scenario) -> tuple[str, ...]:
        """The scenario's loadgen arguments for this mode (--quick or not)."""
        return sc.quick_args if self.settings.quick and sc.quick_args else sc.args

    def median_rate(self, scenario: str, broker: str) -> float | None:
        """A broker's median msgs/s in a scenario already run in this sitting."""
        runs = [
            r
            for r in self.runs
            if r.scenario == scenario and r.broker == broker and r.ok and not r.calibration
        ]
        return median(collect(runs, "msgs_per_s"))

    def one_run(
        self,
        sc: Scenario,
        broker: str,
        rnd: int,
        messages: int,
        extra: Sequence[str] = (),
        calibration: bool = False,
    ) -> LoadRun:
        """Fresh broker, one loadgen run, broker stopped."""
        spec = self.specs[broker]
        tail_args = [*self.scenario_args(sc), *extra]
        if messages:
            tail_args += ["-m", str(messages)]
        run = LoadRun(sc.name, broker, rnd, messages, [], calibration=calibration)
        for attempt in range(3):
            try:
                self._run_once(spec, run, tail_args)
            except BrokerFailed as exc:
                run.error = str(exc)
                # free_port() picked a port that someone else took before the broker bound
                # it (other work shares this machine): try another one.
                if "already in use" in run.error and attempt < 2:
                    continue
            break
        self.runs.append(run)
        return run

    def _run_once(self, spec: BrokerSpec, run: LoadRun, tail_args: list[str]) -> None:
        """Start the broker, run loadgen against it, stop the broker; fill `run` in."""
        run.error = ""
        with running_cluster(spec) as (pid, port, sub_port, pids):
            argv = ["-p", str(port), "-R", str(pid), "-L", spec.name]
            if sub_port != port:
                argv += ["-Q", str(sub_port)]  # subscribers on the other node
            argv += tail_args
            run.argv = ["loadgen", *argv]
            cpu0 = {name: proc_cpu_s(p) for name, p in pids.items()}
            (run.result, run.gen_cpu_s, run.wall_s, run.returncode, out_tail) = run_load(
                self.binary, argv, self.timeout_for()
            )
            if spec.cluster_nodes or spec.name in CLUSTER_NODES:
                # Every process of the broker side (nodes and nats-server) over the whole
                # loadgen run: loadgen's own -R figure sees one node only.
                used = {name: proc_cpu_s(p) - cpu0[name] for name, p in pids.items()}
                wall = max(run.wall_s, 1e-9)
                run.result["all_cpu_pct"] = 100.0 * sum(used.values()) / wall
                run.result["nats_cpu_pct"] = 100.0 * used.get("nats", 0.0) / wall
                last = f"node{spec.cluster_nodes - 1}" if spec.cluster_nodes > 1 else ""
                run.result["sub_node_cpu_pct"] = 100.0 * used.get(last, 0.0) / wall
            if not run.ok:
                run.error = f"loadgen exit {run.returncode}: {out_tail}"

    def size_messages(self, sc: Scenario, broker: str, extra: Sequence[str]) -> int | None:
        """Pick -m so that a run lasts about --seconds; None when the broker failed."""
        cap = sc.messages if not self.settings.quick or not sc.quick_messages else sc.quick_messages
        if not cap:
            return 0  # conns takes no -m
        if broker in self.settings.scale:
            return max(1, int(cap * self.settings.scale[broker]))
        if not sc.calibrate or not sc.messages:
            return cap
        if not self.settings.calibrate or broker not in self.settings.calibrated:
            if self.settings.quick:
                return max(200, int(cap * self.settings.seconds / 15))
            return cap
        # Two steps at most: 1 % of the reference count, then 10 % if that was too quick to
        # time (Mosquitto does 1 % of fan-in QoS 0 in ~40 ms).
        run: LoadRun | None = None
        for frac in (100, 10):
            m = max(200, sc.messages // frac)
            run = self.one_run(sc, broker, 0, m, extra, calibration=True)
            if not run.ok:
                log(f"  {sc.name}/{broker}: calibration failed: {run.error}")
                return None
            elapsed = num(run.result, "elapsed_s") or 0.0
            if elapsed >= 0.5:
                break
        assert run is not None
        rate = num(run.result, "pub_msgs_per_s") or 0.0
        sized = int(rate * self.settings.seconds)
        return max(200, min(sc.messages, sized))

    def run_scenario(self, sc: Scenario, brokers: list[str], extra: Sequence[str]) -> None:
        """Calibrate each broker, then rounds with the brokers interleaved."""
        sizes: dict[str, int] = {}
        extras: dict[str, tuple[str, ...]] = {b: tuple(extra) for b in brokers}
        if sc.rate_of:
            for b in list(brokers):
                top = self.median_rate(sc.rate_of, b)
                if not top:
                    self.skipped[f"{sc.name}/{b}"] = f"needs {sc.rate_of} measured first"
                    continue
                rate = top * sc.rate_fraction
                seconds = min(self.settings.seconds, 4.0)
                extras[b] += ("-r", f"{rate:.0f}")
                sizes[b] = max(200, int(rate * seconds))
            log(f"  {sc.name}: " + ", ".join(f"{b} at {extras[b][-1]} msg/s" for b in sizes))
        for b in brokers:
            if sc.rate_of:
                continue
            m = self.size_messages(sc, b, extras[b])
            if m is None:
                self.skipped[f"{sc.name}/{b}"] = "calibration run failed"
                continue
            sizes[b] = m
        if sizes and sc.messages:
            log(f"  {sc.name}: -m " + ", ".join(f"{b}={m}" for b, m in sizes.items()))
        for rnd in range(1, self.settings.rounds + 1):
            for b in brokers:
                if b not in sizes:
                    continue
                run = self.one_run(sc, b, rnd, sizes[b], extras[b])
                log(
                    f"  {sc.name} round {rnd} {b}: "
                    + (summary_line(sc, run) if run.ok else f"FAILED {run.error}")
                )


def summary_line(sc: Scenario, run: LoadRun) -> str:
    """One progress line for a finished run."""
    r = run.result
    if sc.kind == "conns":
        return (
            f"{fmt(num(r, 'bytes_per_conn'))} B/conn, {fmt(num(r, 'conns_per_s'))} conn/s, "
            f"gen CPU {run.gen_cpu_pct:.0f}%"
        )
    return (
        f"{fmt(num(r, 'msgs_per_s'))} msg/s in {fmt(num(r, 'elapsed_s'), 2)} s, "
        f"p99 {fmt(num(r, 'p99_us'))} us, lost {fmt(num(r, 'lost'))}, "
        f"broker CPU {fmt(num(r, 'broker_cpu_s'), 2)} s, gen CPU {run.gen_cpu_pct:.0f}%"
    )


# ---------------------------------------------------------------- tables


def median(values: Sequence[float]) -> float | None:
    """Median, or None for no values."""
    return statistics.median(values) if values else None


def spread_pct(values: Sequence[float]) -> float | None:
    """(max - min) / median in percent: how far apart the rounds were."""
    med = median(values)
    if not values or not med:
        return None
    return 100.0 * (max(values) - min(values)) / med


def fmt(v: float | None, digits: int = 0) -> str:
    """Thousands separators; '-' for unknown."""
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def ratio(v: float | None, base: float | None) -> str:
    """v / base as 'x0.42'."""
    if v is None or not base:
        return "-"
    return f"x{v / base:.2f}"


def collect(runs: list[LoadRun], key: str) -> list[float]:
    """The numeric RESULT field `key` over runs (unknown values dropped)."""
    out: list[float] = []
    for r in runs:
        if key == "gen_cpu_pct":
            out.append(r.gen_cpu_pct)
            continue
        if key == "broker_cpu_pct":
            cpu, el = num(r.result, "broker_cpu_s"), num(r.result, "elapsed_s")
            if cpu is None:
                cpu, el = num(r.result, "broker_cpu_connect_s"), num(r.result, "connect_s")
            if cpu is not None and el:
                out.append(100.0 * cpu / el)
            continue
        v = num(r.result, key)
        if v is not None:
            out.append(v)
    return out


def scenario_table(sc: Scenario, brokers: list[str], runs: list[LoadRun]) -> list[str]:
    """Markdown table of medians for one scenario; also readable as plain text."""
    main_key, main_header, lower_is_better = {
        "throughput": (
            "msgs_per_s",
            "msgs/s" if "fan-out" not in sc.name else "deliveries/s",
            False,
        ),
        "latency": ("p99_us", "p99 us", True),
        "conns": ("bytes_per_conn", "bytes/conn", True),
    }[sc.kind]
    if sc.kind == "conns":
        extra = [
            ("connects/s", "conns_per_s"),
            ("failed", "failed"),
            ("broker CPU% (connect)", "broker_cpu_pct"),
        ]
    elif sc.kind == "latency":
        extra = [
            ("p50 us", "p50_us"),
            ("msgs/s", "msgs_per_s"),
            ("msgs/broker CPU-s", "msgs_per_broker_cpu_s"),
            ("broker CPU%", "broker_cpu_pct"),
        ]
    elif sc.variants == CLUSTER_VARIANTS:
        extra = [
            ("pubs' node CPU%", "broker_cpu_pct"),
            ("subs' node CPU%", "sub_node_cpu_pct"),
            ("all CPU%", "all_cpu_pct"),
            ("NATS CPU%", "nats_cpu_pct"),
        ]
    else:
        extra = [("msgs/broker CPU-s", "msgs_per_broker_cpu_s"), ("broker CPU%", "broker_cpu_pct")]
    per_message = sc.kind != "conns"
    headers = [
        "broker",
        main_header,
        f"vs {sc.baseline}",
        "spread%",
        *[h for h, _ in extra],
        *(["lost", "dup"] if per_message else []),
        "gen CPU%",
        *(["-m"] if per_message else []),
        "runs",
    ]
    ok_by_broker = {
        b: [r for r in runs if r.broker == b and r.ok and not r.calibration] for b in brokers
    }
    base_runs = ok_by_broker.get(sc.baseline, [])
    base = median(collect(base_runs, main_key))
    rows: list[list[str]] = []
    for b in brokers:
        ok = ok_by_broker[b]
        all_runs = [r for r in runs if r.broker == b and not r.calibration]
        if not all_runs:
            continue
        main = median(collect(ok, main_key))
        row = [b, fmt(main), ratio(main, base), fmt(spread_pct(collect(ok, main_key)))]
        for _, key in extra:
            row.append(fmt(median(collect(ok, key))))
        if per_message:
            row += [fmt(sum(collect(ok, "lost"))), fmt(sum(collect(ok, "dup")))]
        row.append(fmt(median(collect(ok, "gen_cpu_pct"))))
        if per_message:
            row.append(",".join(str(m) for m in sorted({r.messages for r in all_runs})))
        row.append(f"{len(ok)}/{len(all_runs)}")
        rows.append(row)
    direction = "lower is better" if lower_is_better else "higher is better"
    lines = [
        f"### {sc.name}: {sc.description}",
        "",
        f"Median of rounds; ratio = broker / {sc.baseline} ({direction}).",
        "",
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    lines.append(line(headers))
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [line(r) for r in rows]
    return lines


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {s.name:<11} {s.description}" for s in SCENARIOS),
    )
    p.add_argument(
        "--scenario", default="all", help="comma-separated scenario names, or 'all' (default)"
    )
    p.add_argument(
        "--brokers",
        default="mqttd,mosquitto",
        help="comma-separated: mqttd, mosquitto, amqtt (default mqttd,mosquitto)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="short runs (~1.5 s each, fewer idle connections): a smoke test",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="target duration of a calibrated run (default 4, or 1.5 with --quick)",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="use the reference -m (a tenth with --quick) instead of calibrating",
    )
    p.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="BROKER=FACTOR",
        help="fixed -m scale for a broker instead of calibration, e.g. amqtt=0.01",
    )
    p.add_argument("--json", type=Path, default=None, help="save every run's raw result here")
    p.add_argument(
        "--loadgen", type=Path, default=None, help="a prebuilt loadgen binary (skips the build)"
    )
    p.add_argument(
        "--mqttd-python",
        default=None,
        help="interpreter that runs `-m mqttd` (default <repo>/.venv/bin/python)",
    )
    return p.parse_args(argv)


def select_scenarios(spec: str) -> list[Scenario]:
    """--scenario value to Scenario objects, in table order."""
    if spec == "all":
        return list(SCENARIOS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIO_BY_NAME]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIO_BY_NAME)}"
        )
    return [s for s in SCENARIOS if s.name in names]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the process exit code."""
    args = parse_args(argv)
    scenarios = select_scenarios(args.scenario)
    wanted = [b.strip() for b in args.brokers.split(",") if b.strip()]
    for b in wanted:
        if b not in ("mqttd", "mosquitto", "amqtt"):
            raise SystemExit(f"unknown broker {b!r}: use mqttd, mosquitto, amqtt")
    scale: dict[str, float] = {}
    for item in args.scale:
        name, _, factor = item.partition("=")
        scale[name] = float(factor)
    settings = Settings(
        scenarios,
        wanted,
        max(1, args.rounds),
        args.quick,
        args.seconds or (1.5 if args.quick else 4.0),
        not args.no_calibrate,
        scale,
    )

    # SIGTERM becomes SystemExit so that the `finally` blocks stop the broker of the run.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    nofile = raise_nofile_limit()
    binary = args.loadgen or build_loadgen()

    specs: dict[str, BrokerSpec] = {}
    notes: dict[str, str] = {}
    mqttd_opts = MqttdOptions.detect(mqttd_python(args.mqttd_python))
    candidates: list[tuple[str, Callable[[], BrokerSpec | str]]] = []
    if "mqttd" in wanted:
        candidates.append(("mqttd", lambda: mqttd_spec(mqttd_opts)))
    if "mosquitto" in wanted:
        candidates.append(("mosquitto", mosquitto_spec))
    if "amqtt" in wanted:
        candidates.append(("amqtt", amqtt_spec))
    for name, make in candidates:
        got = make()
        # mqttd_spec() has probed already (it picks between config file and defaults).
        why = got if isinstance(got, str) else None if name == "mqttd" else probe(got)
        if isinstance(got, BrokerSpec) and why is None:
            specs[name] = got
        else:
            notes[name] = f"skipped: {why}"
            log(f"{name} skipped: {why}")

    header = machine_info(specs)
    print(
        f"# mqttd benchmark: {header}; rounds={settings.rounds}, target "
        f"{settings.seconds:g} s per run{', quick' if settings.quick else ''}\n",
        flush=True,
    )
    bench = Bench(binary, specs, settings)
    for sc in scenarios:
        extra: tuple[str, ...] = ()
        if sc.variants == CLUSTER_VARIANTS:
            why = cluster_skip_reason(specs)
            if why:
                notes[sc.name] = f"skipped: {why}"
                log(f"{sc.name} skipped: {why}")
                continue
            for name, nodes in CLUSTER_NODES.items():
                if nodes:
                    specs[name] = replace(specs["mqttd"], name=name, cluster_nodes=nodes)
            brokers = list(sc.variants)
        elif sc.variants:
            why = persist_skip_reason(specs, mqttd_opts)
            persist = why or mqttd_spec(mqttd_opts, persist=True)
            if isinstance(persist, str):
                notes[sc.name] = f"skipped: {persist}"
                log(f"{sc.name} skipped: {persist}")
                continue
            specs["mqttd-persist"] = persist
            brokers = list(sc.variants)
        else:
            brokers = [b for b in wanted if b in specs]
        if not brokers:
            continue
        wanted_conns = int(sc.args[sc.args.index("-C") + 1]) if "-C" in sc.args else 0
        if sc.kind == "conns" and nofile < wanted_conns + 200:
            log(f"note: RLIMIT_NOFILE is {nofile}; {sc.name} may fail to open every connection")
        log(f"== {sc.name} ({', '.join(brokers)}; {settings.rounds} round(s))")
        bench.run_scenario(sc, brokers, extra)
        table = scenario_table(sc, brokers, [r for r in bench.runs if r.scenario == sc.name])
        print("\n".join(table) + "\n", flush=True)

    notes |= {k: f"skipped: {v}" for k, v in bench.skipped.items()}
    print("\n".join(summary_table(bench.runs)) + "\n")
    print(f"Load average at the end: {loadavg()}")
    for k, v in notes.items():
        print(f"- {k}: {' / '.join(v.splitlines())[:300]}")
    if args.json:
        payload = {
            "machine": header,
            "loadavg_end": loadavg(),
            "settings": {
                "scenarios": [s.name for s in scenarios],
                "brokers": wanted,
                "rounds": settings.rounds,
                "quick": settings.quick,
                "seconds": settings.seconds,
                "calibrate": settings.calibrate,
                "scale": scale,
            },
            "notes": notes,
            "runs": [asdict(r) for r in bench.runs],
        }
        args.json.write_text(json.dumps(payload, indent=1))
        log(f"raw results saved to {args.json}")
    return 0 if any(r.ok and not r.calibration for r in bench.runs) else 2


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C does."""
    raise SystemExit(128 + signum)


def cluster_skip_reason(specs: dict[str, BrokerSpec]) -> str:
    """Why the cluster scenarios cannot run, or '' when they can."""
    if "mqttd" not in specs:
        return "needs mqttd in --brokers, running"
    if not os.path.exists(NATS_SERVER):
        return "nats-server is not installed (Debian package nats-server)"
    return ""


def persist_skip_reason(specs: dict[str, BrokerSpec], opts: MqttdOptions) -> str:
    """Why persist-q1 cannot run, or '' when it can."""
    if "mqttd" not in specs:
        return "needs mqttd in --brokers, running"
    if not opts.db:
        return "mqttd has no --db option (python -m mqttd --help)"
    return ""


# The comparison table of docs/benchmarks.md: (scenario, result field, label, goal, higher is
# better, goal ratio against the baseline).
GOALS: tuple[tuple[str, str, str, float, bool], ...] = (
    ("fan-in-q0", "msgs_per_s", "fan-in QoS 0, 4 -> 1 (msgs/s)", 1.0, True),
    ("fan-in-q1", "msgs_per_s", "fan-in QoS 1, 4 -> 1 (msgs/s)", 1.0, True),
    ("fan-in-q2", "msgs_per_s", "fan-in QoS 2, 4 -> 1 (msgs/s)", 1.0, True),
    ("fan-out-q0", "msgs_per_s", "fan-out QoS 0, 1 -> 50 (deliveries/s)", 1.0, True),
    ("fan-out-q1", "msgs_per_s", "fan-out QoS 1, 1 -> 50 (deliveries/s)", 1.0, True),
    ("pairs-q1", "msgs_per_s", "100 pairs QoS 1 (msgs/s)", 1.0, True),
    ("latency", "p99_us", "p99 latency at 1,000 msg/s (us)", 1.2, False),
    ("latency-half", "p99_us", "p99 latency at 50 % of own max fan-in QoS 1 (us)", 0.0, False),
    ("conns", "conns_per_s", "connects/s (5,000, 100 at a time)", 0.5, True),
    ("conns", "bytes_per_conn", "RSS per idle connection, 5,000 (B)", 0.0, False),
    ("conns-19k", "bytes_per_conn", "RSS per idle connection, 19,000 (B)", 0.0, False),
    ("persist-q1", "msgs_per_s", "QoS 1 to a persistent session, SQLite vs memory", 0.8, True),
)
# Absolute goals (not ratios), by (scenario, field).
ABSOLUTE_GOALS = {("conns", "bytes_per_conn"): 1500.0, ("conns-19k", "bytes_per_conn"): 1500.0}


def summary_table(runs: list[LoadRun]) -> list[str]:
    """mqttd next to its baseline for every goal of docs/benchmarks.md, with the generator's
    CPU and the lost/dup/out-of-order counts of each broker's runs (goal 6 is mqttd's)."""
    lines = [
        "### Summary: mqttd against the baseline (medians; gen CPU% is the load generator's)",
        "",
        "| figure | mqttd | baseline | ratio | goal | met | gen CPU% max "
        "| lost/dup/ooo mqttd | lost/dup/ooo baseline |",
        "|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    for scenario, key, label, goal, higher in GOALS:
        sc = SCENARIO_BY_NAME[scenario]
        mine = "mqttd-persist" if sc.variants else "mqttd"
        ok = [r for r in runs if r.scenario == scenario and r.ok and not r.calibration]
        a = median(collect([r for r in ok if r.broker == mine], key))
        b = median(collect([r for r in ok if r.broker == sc.baseline], key))
        if a is None:
            continue
        absolute = ABSOLUTE_GOALS.get((scenario, key))
        if absolute is not None:
            goal_text, met = f"<= {absolute:,.0f}", a <= absolute
        elif goal and b:
            goal_text = f"{'>=' if higher else '<='} x{goal:g}"
            met = a / b >= goal if higher else a / b <= goal
        else:
            goal_text, met = "report", True
        gen = max(collect(ok, "gen_cpu_pct"), default=0.0)
        lines.append(
            f"| {label} | {fmt(a)} | {fmt(b)} {sc.baseline} | {ratio(a, b)} | {goal_text} | "
            f"{'yes' if met else 'NO'} | {gen:.0f} | {_counts(ok, mine)} | "
            f"{_counts(ok, sc.baseline)} |"
        )
    return lines


def _counts(runs: list[LoadRun], broker: str) -> str:
    """Lost/duplicated/out-of-order messages summed over one broker's runs."""
    mine = [r for r in runs if r.broker == broker]
    return "/".join(str(int(sum(collect(mine, field)))) for field in ("lost", "dup", "ooo"))


def machine_info(specs: dict[str, BrokerSpec]) -> str:
    """One line naming the machine and broker versions, for the summary and the JSON."""
    versions = ", ".join(
        f"{n} {s.version}".strip() for n, s in specs.items() if n != "mqttd-persist"
    )
    return (
        f"{os.cpu_count()} cores, load average {loadavg()}, Python "
        f"{platform.python_version()}, mqttd {git_revision()}; brokers: {versions}"
    )


def loadavg() -> str:
    """The 1-minute load average: other work on this shared machine skews every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def git_revision() -> str:
    """`git describe --always --dirty` of the work tree, so results name the code measured."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
