"""`mqttd ctl` as an operator runs it: a subprocess against a broker's admin API.

Checks the human tables, ``--json``, and the documented exit codes (0 done, 1 API
error, 2 usage, 3 cannot connect or credentials refused).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

from admin.test_api import MqttClient, admin_config
from mqttd.admin.auth import keygen
from mqttd.app import App, running
from mqttd.broker.message import Message


async def ctl(
    app: App | None, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    url = app.admin.url if app is not None and app.admin is not None else "http://127.0.0.1:9"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mqttd",
        "ctl",
        "--url",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_clients_table_json_and_kick() -> None:
    async with running(admin_config()) as app:
        device = await MqttClient.connect(app, "sensor-17", proto_ver=5, username="bob")
        code, out, _ = await ctl(app, "clients")
        assert code == 0
        header, row = out.splitlines()
        assert header.split()[:3] == ["CLIENT", "ID", "USER"]
        host, port = device.writer.get_extra_info("sockname")[:2]
        assert row.split()[:5] == ["sensor-17", "bob", f"{host}:{port}", "5", "connected"]

        code, out, _ = await ctl(app, "--json", "client", "sensor-17")
        assert code == 0 and json.loads(out)["username"] == "bob"

        code, out, _ = await ctl(app, "kick", "sensor-17")
        assert (code, out) == (0, "sensor-17: disconnected\n")
        assert (await device.packet())[1][:1] == b"\x98"  # DISCONNECT, Administrative action
        assert await device.closed()

        code, _, err = await ctl(app, "kick", "nobody")
        assert code == 1 and "CLIENTID_NOT_FOUND" in err


async def test_retained_list_delete_and_publish() -> None:
    async with running(admin_config()) as app:
        for i in range(3):
            app.broker.publish(Message(f"t/{i}", f"v{i}".encode(), 0, True))
        code, out, _ = await ctl(app, "retained", "list", "t/+")
        assert code == 0
        assert [line.split()[0] for line in out.splitlines()] == ["TOPIC", "t/0", "t/1", "t/2"]
        code, out, _ = await ctl(app, "retained", "list", "#", "--limit", "1", "--all")
        assert code == 0 and len(out.splitlines()) == 4
        code, out, _ = await ctl(app, "retained", "delete", "t/1")
        assert (code, out) == (0, "deleted 1 retained message(s)\n")
        code, out, _ = await ctl(app, "publish", "t/9", "hello", "--retain")
        assert code == 0
        assert app.broker.retained.get("t/9") is not None
        code, _, err = await ctl(app, "retained", "list", "a/#/b")
        assert code == 1 and "BAD_TOPIC_FILTER" in err


async def test_exit_codes_for_usage_unreachable_and_refused(tmp_path: Path) -> None:
    code, _, err = await ctl(None, "frobnicate")
    assert code == 2 and "invalid choice" in err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process_env = {"MQTTD_ADMIN_URL": f"http://127.0.0.1:{port}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mqttd",
        "ctl",
        "stats",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **process_env},
    )
    _, err_bytes = await proc.communicate()
    assert proc.returncode == 3 and b"cannot reach the admin API" in err_bytes

    key, line = keygen("ops")
    (tmp_path / "keys").write_text(line + "\n")
    async with running(admin_config(api_key_file=str(tmp_path / "keys"))) as app:
        code, _, err = await ctl(app, "stats")
        assert code == 3 and "401" in err
        code, out, _ = await ctl(app, "--json", "stats", env={"MQTTD_API_KEY": key})
        assert code == 0 and "open_fds" in json.loads(out)["process"]


async def test_keygen_line_loads(tmp_path: Path) -> None:
    code, out, err = await ctl(None, "keygen", "deploy")
    assert code == 0
    from mqttd.admin.auth import load_api_keys

    (tmp_path / "keys").write_text(out)
    assert list(load_api_keys(tmp_path / "keys").values()) == ["deploy"]
    assert "shown once" in err
