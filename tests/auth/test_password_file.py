"""Password files in Mosquitto's format: hashes, interchange with mosquitto_passwd, the CLI."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from support.servers import free_port

from mqttd.auth.password_file import (
    PBKDF2_ITERATIONS,
    PasswordFile,
    PasswordFileError,
    PasswordHash,
    add_passwd_parser,
    hash_password,
    run_passwd,
)

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or (
    "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
)
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
needs_mosquitto_passwd = pytest.mark.skipif(
    MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed"
)


# -- the hash formats ------------------------------------------------------------------------


def test_new_hashes_are_mosquitto_2_pbkdf2_lines() -> None:
    line = hash_password("secret").format()
    kind, iterations, salt, digest = line.split("$")[1:]
    assert (kind, int(iterations)) == ("7", PBKDF2_ITERATIONS)
    raw_salt, raw_digest = base64.b64decode(salt), base64.b64decode(digest)
    assert (len(raw_salt), len(raw_digest)) == (12, 64)
    assert raw_digest == hashlib.pbkdf2_hmac("sha512", b"secret", raw_salt, 101)


def test_salts_differ_so_equal_passwords_hash_differently() -> None:
    assert hash_password("same").format() != hash_password("same").format()


def test_sha512_lines_of_mosquitto_1_are_read() -> None:
    salt = b"0123456789ab"
    digest = hashlib.sha512(b"hunter2" + salt).digest()
    line = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    parsed = PasswordHash.parse(line)
    assert parsed.kind == 6
    assert parsed.verify(b"hunter2") and not parsed.verify(b"hunter3")
    assert parsed.format() == line


@pytest.mark.parametrize(
    "bad",
    ["plaintext", "$5$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!!$AAAA", "$6$AAAA", "$7$0$AAAA$AAAA"],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        PasswordHash.parse(bad)


def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("# users\n" + f"a:{hash_password('x').format()}\nb:plain\n")
    with pytest.raises(PasswordFileError, match=r"line 3: user 'b'"):
        PasswordFile.load(path)


def test_comments_and_lines_without_colon_are_kept_on_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(f"# managed by ops\nalice:{hash_password('a').format()}\n\n")
    passwords = PasswordFile.load(path)
    passwords.set("bob", "b")
    passwords.save()
    lines = path.read_text().splitlines()
    assert lines[0] == "# managed by ops" and lines[1].startswith("alice:$7$")
    assert lines[2] == "" and lines[3].startswith("bob:$7$")


def test_verify_needs_the_user_and_the_right_password() -> None:
    passwords = PasswordFile()
    passwords.set("alice", "wonderland")
    assert passwords.verify("alice", b"wonderland")
    assert not passwords.verify("alice", b"Wonderland")
    assert not passwords.verify("alice", None)
    assert not passwords.verify("mallory", b"wonderland")


def test_an_unknown_user_costs_a_hash_too() -> None:
    # The dummy verification keeps "no such user" from answering measurably faster.
    passwords = PasswordFile()
    passwords.set("alice", "x")
    runs = 200
    start = time.perf_counter()
    for _ in range(runs):
        passwords.verify("alice", b"wrong")
    known = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(runs):
        passwords.verify("nobody", b"wrong")
    unknown = time.perf_counter() - start
    assert unknown > known * 0.5


@pytest.mark.parametrize("name", ["", "a:b", "line\nbreak"])
def test_user_names_a_file_cannot_hold_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        PasswordFile().set(name, "x")


def test_a_new_file_is_private_and_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    passwords = PasswordFile(path)
    passwords.set("a", "x")
    passwords.save()
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    passwords.set("b", "y")
    passwords.save()
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(PasswordFile.load(path).users) == ["a", "b"]


# -- interchange with Mosquitto ------------------------------------------------------------------


@needs_mosquitto_passwd
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_files_written_by_mosquitto_passwd_verify(tmp_path: Path, algorithm: str) -> None:
    assert MOSQUITTO_PASSWD is not None
    path = tmp_path / "pw"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-H", algorithm, "-c", "-b", str(path), "alice", "s3cret pass"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [MOSQUITTO_PASSWD, "-H", algorithm, "-b", str(path), "bob", "üñí©ødé"],
        check=True,
        capture_output=True,
    )
    passwords = PasswordFile.load(path)
    assert passwords.users["alice"].kind == (7 if algorithm == "sha512-pbkdf2" else 6)
    assert passwords.verify("alice", b"s3cret pass")
    assert passwords.verify("bob", "üñí©ødé".encode())
    assert not passwords.verify("alice", b"s3cret")


@needs_mosquitto_passwd
def test_mosquitto_passwd_edits_a_file_we_wrote(tmp_path: Path) -> None:
    assert MOSQUITTO_PASSWD is not None
    path = tmp_path / "pw"
    passwords = PasswordFile(path)
    passwords.set("alice", "ours")
    passwords.save()
    subprocess.run(
        [MOSQUITTO_PASSWD, "-b", str(path), "bob", "theirs"], check=True, capture_output=True
    )
    again = PasswordFile.load(path)
    assert again.verify("alice", b"ours") and again.verify("bob", b"theirs")


def _connect_rc(port: int, username: str, password: str) -> int:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    result: list[int] = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not result and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert result, "no CONNACK"
    return result[0]


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_mosquitto_itself_accepts_a_file_we_wrote(tmp_path: Path) -> None:
    assert MOSQUITTO is not None
    pw = PasswordFile(tmp_path / "pw")
    pw.set("alice", "wonderland")
    pw.save()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # As root, mosquitto drops to user "mosquitto", which cannot read a private tmp_path.
    user = "user root\n" if os.getuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {tmp_path / 'pw'}\npersistence false\nlog_dest stderr\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mosquitto down"
                time.sleep(0.05)
        assert _connect_rc(port, "alice", "wonderland") == 0
        assert _connect_rc(port, "alice", "wrong") != 0
    finally:
        proc.terminate()
        proc.wait(10)


# -- `mqttd passwd` -------------------------------------------------------------------------------


def passwd(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mqttd")
    add_passwd_parser(parser.add_subparsers(dest="command"))
    return run_passwd(parser.parse_args(["passwd", *argv]))


def test_passwd_batch_creates_adds_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    assert passwd("-c", "-b", str(path), "alice", "one") == 0
    assert passwd("-b", str(path), "bob", "two") == 0
    assert PasswordFile.load(path).verify("bob", b"two")
    assert passwd("-b", str(path), "bob", "three") == 0  # a change, not a second line
    assert [line.split(":")[0] for line in path.read_text().splitlines()] == ["alice", "bob"]
    assert PasswordFile.load(path).verify("bob", b"three")
    assert passwd("-D", str(path), "alice") == 0
    assert list(PasswordFile.load(path).users) == ["bob"]


def test_passwd_prompts_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed", "typed"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    path = tmp_path / "pw"
    assert passwd("-c", str(path), "alice") == 0
    assert PasswordFile.load(path).verify("alice", b"typed")


def test_passwd_refuses_two_different_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    path = tmp_path / "pw"
    assert passwd("-c", str(path), "alice") == 1
    assert "do not match" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-D", "{path}", "nobody"], "user nobody not found"),
        (["-b", "{missing}", "a", "x"], "does not exist (use -c to create it)"),
        (["{path}", "a", "x"], "a PASSWORD argument needs -b"),
        (["-b", "{path}", "a:b", "x"], "invalid user name"),
    ],
)
def test_passwd_errors_say_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    path = tmp_path / "pw"
    assert passwd("-c", "-b", str(path), "alice", "x") == 0
    args = [a.format(path=path, missing=tmp_path / "missing") for a in argv]
    assert passwd(*args) == 1
    assert message in capsys.readouterr().err


def test_the_mqttd_command_has_passwd(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    result = subprocess.run(
        [sys.executable, "-m", "mqttd", "passwd", "-c", "-b", str(path), "alice", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert PasswordFile.load(path).verify("alice", b"x")
