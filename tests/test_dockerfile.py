"""The Dockerfile, checked without a Docker engine: what it runs must be a valid mqttd command.

The Dockerfile is parsed (continuation lines joined, exec-form JSON arrays read), then:
the base image, a non-root USER, the EXPOSEd ports and VOLUMEs; ENTRYPOINT + CMD form
an `mqttd` command line that the CLI accepts, and the config file it names (found
through the COPY that puts it there) passes `mqttd check-config`; every listener of
that config and its metrics port are EXPOSEd; and the HEALTHCHECK command, run for
real against a broker, succeeds while it runs and fails once it has stopped.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mqttd.app import App, ephemeral_config
from mqttd.cli import build_parser
from mqttd.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

Instruction = tuple[str, str]  # (KEYWORD, arguments)


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        logical = ""
    assert not logical, "the Dockerfile ends inside a continued line"
    return instructions


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def all_of(keyword: str) -> list[str]:
    return [args for kw, args in INSTRUCTIONS if kw == keyword]


def one_of(keyword: str) -> str:
    found = all_of(keyword)
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    """An exec-form (JSON array) argument list; shell form is refused (no signal relay)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return value


def command_line() -> list[str]:
    return exec_form(one_of("ENTRYPOINT")) + exec_form(one_of("CMD"))


def copied_source(destination: str) -> Path:
    """The file of the build context that COPY puts at `destination`."""
    for args in all_of("COPY"):
        *sources, dest = args.split()
        if dest == destination and len(sources) == 1:
            return ROOT / sources[0]
    raise AssertionError(f"no COPY puts a file at {destination}")


def image_config() -> tuple[str, Config]:
    argv = command_line()
    args = build_parser().parse_args(argv[1:])
    assert args.config, f"the image runs mqttd without -c: {argv}"
    return args.config, load_config(copied_source(args.config))


def exposed() -> set[int]:
    return {int(port.split("/")[0]) for args in all_of("EXPOSE") for port in args.split()}


def test_base_image_is_slim_python_311() -> None:
    """The image's own stage (the last FROM); the wheel is built in an earlier one."""
    stages = all_of("FROM")
    assert stages[-1].startswith("python:3.11-slim")
    assert all(stage.startswith("python:3.11") for stage in stages)


def test_runs_as_a_non_root_user() -> None:
    user = all_of("USER")[-1].split(":")[0]
    assert user not in ("root", "0")
    keywords = [kw for kw, _ in INSTRUCTIONS]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_volumes_for_data_and_config() -> None:
    volumes = {v for args in all_of("VOLUME") for v in exec_form(args)}
    assert {"/data", "/config"} <= volumes


def test_the_command_is_mqttd_with_the_image_config() -> None:
    argv = command_line()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts and scripts[argv[0]] == "mqttd.cli:main"
    path, _ = image_config()
    assert path.startswith("/config/")


def test_the_image_config_passes_check_config(tmp_path: Path) -> None:
    path, _ = image_config()
    source = copied_source(path)
    result = subprocess.run(
        [sys.executable, "-m", "mqttd", "check-config", str(source)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{source}: OK\n"


def test_every_listener_and_the_metrics_port_are_exposed_and_reachable() -> None:
    _, config = image_config()
    ports = exposed()
    for listener in config.listeners:
        assert listener.port in ports, listener
        assert listener.host == "0.0.0.0", f"{listener.name} is not reachable from outside"
    assert {1883, 8083, 8883, 8084} <= ports
    assert config.metrics.enabled and config.metrics.port in ports
    assert config.persistence.path.startswith("/data/")


def test_copied_files_exist_and_are_not_dockerignored() -> None:
    ignored = [p for p in DOCKERIGNORE.read_text().splitlines() if p and not p.startswith("#")]
    for args in all_of("COPY"):
        if args.startswith("--from="):  # from an earlier stage, not the build context
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            for pattern in ignored:
                assert not fnmatch.fnmatch(source, pattern.removeprefix("**/")), (source, pattern)
                assert not source.startswith(pattern.rstrip("/") + "/"), (source, pattern)


def healthcheck_command() -> list[str]:
    args = one_of("HEALTHCHECK")
    options, cmd, rest = args.partition("CMD ")
    assert cmd, f"HEALTHCHECK without CMD: {args}"
    assert "--interval=" in options and "--timeout=" in options
    return exec_form(rest)


async def test_the_healthcheck_passes_while_the_broker_runs_and_fails_after() -> None:
    _, image = image_config()
    command = healthcheck_command()
    assert command[0] == "python"  # slim has no curl
    url_port = f":{image.metrics.port}/health"
    assert any(url_port in part for part in command), command

    config = ephemeral_config()
    config.metrics.enabled = True
    config.metrics.port = 0
    app = App(config)
    await app.start()
    assert app.metrics_address is not None
    here = [sys.executable] + [
        part.replace(url_port, f":{app.metrics_address[1]}/health") for part in command[1:]
    ]

    async def run_check() -> int:
        proc = await asyncio.create_subprocess_exec(
            *here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await asyncio.wait_for(proc.wait(), 30)

    try:
        assert await run_check() == 0
    finally:
        await app.stop()
    assert await run_check() != 0


@pytest.mark.parametrize("keyword", ["ENTRYPOINT", "CMD", "HEALTHCHECK"])
def test_exec_form_so_signals_reach_mqttd(keyword: str) -> None:
    args = one_of(keyword)
    assert "[" in args, f"{keyword} in shell form: SIGTERM would stop at /bin/sh"
