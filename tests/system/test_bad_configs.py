"""A bad configuration never starts a broker: exit status 2 and one line naming the key.

Each case runs the real command, `mqttd -c FILE`, as an operator would; problems found
while loading the file and problems found while starting (an unreadable password file,
a listener exposed without authentication) are reported the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    pytest.param(
        '[auth]\nallow_anonymous = "yes"\n',
        'auth.allow_anonymous: "yes" is a string, expected true or false',
        id="allow_anonymous not a boolean",
    ),
    pytest.param(
        "[auth]\nplugin_options = 3\n",
        "auth.plugin_options: 3 is an integer, expected a table",
        id="plugin_options not a table",
    ),
    pytest.param(
        '[auth]\npasword_file = "passwd"\n',
        "auth.pasword_file: unknown key (did you mean auth.password_file?)",
        id="misspelt key",
    ),
    pytest.param(
        '[auth]\npassword_file = "no-such-file"\n',
        "auth.password_file: password file 'no-such-file': cannot read: No such file",
        id="missing password file",
    ),
    pytest.param(
        '[auth]\nacl_file = "{acl}"\n',
        "auth.acl_file: acl file '{acl}' line 2: unknown access 'sometimes'",
        id="bad acl line",
    ),
    pytest.param(
        '[auth]\nplugin = "nomodule"\n',
        'auth.plugin: "nomodule" is not "package.module:factory"',
        id="plugin without factory",
    ),
    pytest.param(
        '[auth]\nplugin = "mqttd.auth.examples:nothing_here"\n',
        'auth.plugin: "mqttd.auth.examples" has no attribute "nothing_here"',
        id="plugin factory missing",
    ),
    pytest.param(
        '[[listeners]]\nhost = "0.0.0.0"\nport = 0\n',
        'listeners[0].host: "0.0.0.0" is not a loopback address and no authentication',
        id="exposed without auth",
    ),
    pytest.param(
        '[[listeners]]\nport = 0\n[listeners.tls]\ncertfile = "x.pem"\n'
        "use_identity_as_username = true\n",
        "listeners[0].tls.use_identity_as_username: true needs "
        "listeners[0].tls.require_certificate = true",
        id="identity without client certificates",
    ),
    pytest.param(
        "[limits]\nconnection_rate = -1\n",
        "limits.connection_rate: -1 is out of range (allowed: >= 0)",
        id="negative rate",
    ),
    pytest.param(
        '[limits]\nmax_publish_rate = "fast"\n',
        'limits.max_publish_rate: "fast" is a string, expected a number',
        id="rate not a number",
    ),
    pytest.param(
        "[limits]\npublish_burst = 0\n",
        "limits.publish_burst: 0 is out of range (allowed: >= 1)",
        id="burst zero",
    ),
    pytest.param(
        "[limits]\nmax_connections = 1.5\n",
        "limits.max_connections: 1.5 is a float, expected an integer",
        id="fractional connections",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_a_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic sometimes a/b\n")
    config = tmp_path / "mqttd.toml"
    config.write_text(text.format(acl=acl))
    result = subprocess.run(
        [sys.executable, "-m", "mqttd", "-c", str(config), "-p", "0", "--db", ":memory:"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "config error: " in line]
    assert len(errors) == 1, result.stderr
    assert expected.format(acl=acl) in errors[0], errors[0]
    assert "mqttd ready" not in result.stderr
