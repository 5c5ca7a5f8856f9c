"""design.md's import arrows, checked: which parts of mqttd each part may load.

    app/cli -> net, bridge, ops, admin, cluster -> broker -> auth, store -> protocol

config.py is data: it loads protocol/ and one leaf of broker/ (settings.py, plain
dataclasses), nothing else; security.py turns the config into auth/'s hooks and sits
beside app.py. Two checks:

- at run time: each package is imported in a fresh interpreter, and the mqttd modules
  (and I/O modules) it loaded are compared with what it may load;
- in the source: every import statement, including those under TYPE_CHECKING and inside
  functions, points along an allowed arrow; no cycle among the imports that run; and
  inside broker/ only Connection and its CONNECT handshake know the Broker (accepting
  a CONNECT is the registry's business: authenticate, session ownership, open_session;
  handshake.py is the part of Connection that runs once, kept in its own file).
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mqttd"

#: What each part of mqttd may import, besides itself and the top package (`__version__`).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "store": {"protocol"},
    "auth": {"protocol"},
    "broker": {"auth", "store", "protocol"},
    "config": {"broker.settings", "protocol"},
    "security": {"config", "auth", "protocol"},
    # The mosquitto.conf reader turns a Mosquitto file into a Config: data, like config.py.
    "mosquitto_conf": {"config", "protocol"},
    "net": {"broker", "auth", "store", "protocol"},
    "bridge": {"config", "broker", "auth", "store", "protocol"},
    "ops": {"broker", "config", "auth", "store", "protocol"},
    # The admin HTTP API and `mqttd ctl`: an operator's view of the core.
    "admin": {"broker", "config", "auth", "store", "protocol"},
    # The Backplane on NATS: the core's seam (broker/backplane.py) on the network side;
    # durable sessions wrap the node's Store (cluster/durable.py).
    "cluster": {"broker", "config", "store", "protocol"},
    "runtime": set(),
    "app": {"net", "bridge", "ops", "admin", "cluster", "security", "config", "broker"}
    | {"auth", "store", "protocol", "runtime"},
    "cli": {"app", "net", "bridge", "ops", "admin", "cluster", "security", "config", "broker"}
    | {"auth", "store", "protocol", "runtime", "mosquitto_conf"},
    "__main__": {"cli"},
}

#: Parts that never load an I/O module (the sans-IO core, and the data they are built from).
SANS_IO = {"protocol", "broker", "config", "auth"}
IO_MODULES = {"asyncio", "socket", "selectors", "ssl", "sqlite3", "aiosqlite", "websockets"}


def part_of(module: str) -> str:
    """The part of mqttd a module belongs to: "broker", "config", "broker.settings"...

    broker/__init__.py imports nothing, so it goes with the leaf settings.py.
    """
    parts = module.split(".")
    if len(parts) == 1:
        return "mqttd"
    if parts[1:3] == ["broker", "settings"] or module == "mqttd.broker":
        return "broker.settings"
    return parts[1]


def _reach(part: str) -> set[str]:
    """Every part that `part` may load, directly or through another part."""
    seen: set[str] = set()
    todo = [part]
    while todo:
        for target in ALLOWED.get(todo.pop(), set()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def allowed(source: str, target: str, through_others: bool = False) -> bool:
    """May part `source` import part `target` (or load it through another part)?"""
    if target in (source, "mqttd") or (source == "broker" and target == "broker.settings"):
        return True
    rules = _reach(source) if through_others else ALLOWED[source]
    # Whoever may import broker/ may import its settings too.
    return target in rules or (target == "broker.settings" and "broker" in rules)


PROBE = """
import importlib, json, pkgutil, sys
name = sys.argv[1]
baseline = set(sys.modules)
module = importlib.import_module("mqttd." + name)
if hasattr(module, "__path__"):
    for info in pkgutil.walk_packages(module.__path__, module.__name__ + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(set(sys.modules) - baseline)))
"""


@pytest.mark.parametrize("part", sorted(set(ALLOWED) - {"__main__"}))  # __main__ runs main()
def test_importing_a_part_of_mqttd_loads_only_what_its_arrows_allow(part: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, part], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    ours = {m for m in loaded if m.startswith("mqttd.")}
    assert ours, result.stderr
    wrong = sorted(m for m in ours if not allowed(part, part_of(m), through_others=True))
    assert wrong == [], f"mqttd.{part} loads {wrong}"
    if part == "config":
        # The leaf, not the core: broker/__init__ imports nothing.
        assert {m for m in ours if m.startswith("mqttd.broker")} == {
            "mqttd.broker",
            "mqttd.broker.settings",
        }
    if part in SANS_IO:
        io = sorted(m for m in loaded if m.split(".")[0] in IO_MODULES)
        assert io == [], f"mqttd.{part} loads I/O modules {io}"


# -- the source ---------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported mqttd module, runs at import time) for every import statement.

    Imports under ``if TYPE_CHECKING:`` and inside functions do not run at import time.
    """
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, runs: bool) -> None:
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # "from . import x" names a submodule or something of the package.
            targets = [module]
            if not node.module:
                targets = [
                    f"{module}.{a.name}" if _is_module(f"{module}.{a.name}") else module
                    for a in node.names
                ]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found.extend((t, runs) for t in targets if t == "mqttd" or t.startswith("mqttd."))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            runs = False
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runs)
            return
        for inner in ast.iter_child_nodes(node):
            visit(inner, runs)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_import_statement_points_along_an_allowed_arrow() -> None:
    wrong = []
    for path in SOURCES:
        source = part_of(_module_name(path))
        if source == "mqttd":
            continue
        for target, _ in _imports(path):
            if not allowed(source, part_of(target)):
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert wrong == []


def test_the_allowed_arrows_form_no_cycle() -> None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(part: str, path: list[str]) -> None:
        state[part] = 1
        for target in ALLOWED.get(part.split(".")[0] if part != "broker.settings" else "", ()):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*path, target]))
            if target not in state:
                visit(target, [*path, target])
        state[part] = 2

    for part in ALLOWED:
        if part not in state:
            visit(part, [part])


def test_no_import_cycle_among_the_imports_that_run() -> None:
    modules = {_module_name(p): p for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = set()
        for target, runs in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]  # "from .x import name" -> module x
            if runs and target and target != name:
                graph[name].add(target)
    # Tarjan would do; the graph is small, so check each module's reach.
    cycles = []
    for start in graph:
        seen: set[str] = set()
        todo = [t for t in graph[start] if t != start and not start.startswith(t + ".")]
        while todo:
            node = todo.pop()
            if node == start:
                cycles.append(start)
                break
            if node in seen:
                continue
            seen.add(node)
            todo.extend(graph.get(node, ()))
    assert cycles == []


def test_inside_the_core_only_the_connection_and_its_handshake_know_the_broker() -> None:
    knows = sorted(
        _module_name(path)
        for path in (PACKAGE / "broker").glob("*.py")
        if path.name != "broker.py"
        and any(target.startswith("mqttd.broker.broker") for target, _ in _imports(path))
    )
    assert knows == ["mqttd.broker.connection", "mqttd.broker.handshake"]


#: The core's files stay small enough to read whole: a file that grows past this is
#: split by concern (as broker.py was into subscriptions, wills, recovery, cluster_host).
MAX_CORE_LINES = 650


def test_no_file_in_the_core_grows_past_its_limit() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (PACKAGE / "broker").glob("*.py")
    }
    assert "broker.py" in sizes and "connection.py" in sizes
    assert {name: n for name, n in sizes.items() if n > MAX_CORE_LINES} == {}
