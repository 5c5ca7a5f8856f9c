"""Dashboard 2.0 in headless Chromium against a real mqttd with authentication and ACLs.

The broker refuses anonymous clients, so the page shows its login form; a user whom the
ACL does not let read $SYS is told so, and that it has no admin role; an admin user gets
figures, charts that move while paho publishes, the dead-letter stream, the Clients page
(search, detail, kick: the paho client is disconnected) and the retained browser (delete).

Set MQTTD_DASHBOARD_DOCS=docs/ to save a screenshot of each page there.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mqttd.auth.password_file import PasswordFile

from .browser.chromium import Page, chromium_path
from .browser.fixtures import browser as browser  # a fixture of these tests
from .browser.fixtures import page as page  # a fixture of these tests
from .paho_client import PahoClient

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="Chromium is not installed (scripts/test.sh installs it)"
)

ACL = """\
user root
topic readwrite #
topic read $SYS/#
topic read $dead/#

user viewer
topic read plant/#

user device
topic readwrite plant/#
"""


@pytest.fixture
def broker(mqttd_factory: MqttdFactory, tmp_path: Path) -> MqttdProcess:
    passwords = PasswordFile()
    for user, password in (("root", "root-pw"), ("viewer", "viewer-pw"), ("device", "dev-pw")):
        passwords.set(user, password)
    passwords.save(tmp_path / "passwd")
    (tmp_path / "acl").write_text(ACL)
    config = f"""
[sys]
interval = 1

[auth]
password_file = "{tmp_path / "passwd"}"
acl_file = "{tmp_path / "acl"}"
allow_anonymous = false

[admin]
enabled = true
port = 0
users = ["root"]

[dead_letter]
enabled = true

[[listeners]]
type = "mqtt"

[[listeners]]
type = "ws"
port = 0
"""
    return mqttd_factory(config=config)


def admin_url(broker: MqttdProcess) -> str:
    for line in broker.stderr.splitlines():
        if "admin API listening on " in line:
            return line.split("admin API listening on ", 1)[1].removesuffix("/api/v1").strip()
    raise AssertionError(f"no admin API line in:\n{broker.stderr}")


def dashboard_url(broker: MqttdProcess) -> str:
    [ws] = [listener for listener in broker.listeners if listener.scheme == "ws"]
    return f"http://{ws.host}:{ws.port}/"


def device(broker: MqttdProcess, client_id: str) -> PahoClient:
    client = PahoClient(broker.host, broker.port, client_id)
    client.client.username_pw_set("device", "dev-pw")
    client.connect()
    return client


def log_in(page: Page, user: str, password: str) -> None:
    page.wait_for("document.body.dataset.login === 'required'")
    page.evaluate(f"document.getElementById('login-user').value = {json.dumps(user)}")
    page.evaluate(f"document.getElementById('login-password').value = {json.dumps(password)}")
    page.evaluate("document.getElementById('login-btn').click()")
    page.wait_for("document.body.dataset.state === 'connected'")


def shot(page: Page, name: str) -> None:
    folder = os.environ.get("MQTTD_DASHBOARD_DOCS")
    if folder:
        page.screenshot(Path(folder) / name)


def test_login_acl_message_admin_pages_charts_kick_and_retained(
    broker: MqttdProcess, page: Page
) -> None:
    sensor = device(broker, "sensor-kitchen")
    try:
        sensor.publish("plant/kitchen/temp", b"21.5", qos=1, retain=True)
        sensor.publish("plant/hall/temp", b"19.0", qos=1, retain=True)
        sensor.publish("plant/hall/raw", bytes([0, 1, 0xFE]), qos=1, retain=True)

        # Anonymous is refused: the login form, not an endless "not authorised".
        page.goto(dashboard_url(broker))
        page.wait_for("document.body.dataset.login === 'required'")
        assert page.evaluate("document.getElementById('status').textContent") == "login required"
        shot(page, "dashboard-login.png")

        # A wrong password says so.
        page.evaluate("document.getElementById('login-user').value = 'viewer'")
        page.evaluate("document.getElementById('login-password').value = 'wrong'")
        page.evaluate("document.getElementById('login-btn').click()")
        page.wait_for("!document.getElementById('login-error').hidden")
        assert "bad user name or password" in page.evaluate(
            "document.getElementById('login-error').textContent"
        )

        # A user the ACL keeps from $SYS: told why the figures are empty; no admin pages.
        log_in(page, "viewer", "viewer-pw")
        page.wait_for("!document.getElementById('sys-notice').hidden")
        assert "ACL refuses $SYS/#" in page.evaluate(
            "document.getElementById('sys-notice').textContent"
        )
        page.wait_for("document.body.dataset.admin === 'no'")
        assert "no admin role" in page.evaluate(
            "document.querySelector('.admin-notice').textContent"
        )

        # Log out, log in as the admin user.
        page.evaluate("document.getElementById('logout-btn').click()")
        log_in(page, "root", "root-pw")
        page.wait_for("document.body.dataset.admin === 'yes'")
        assert page.evaluate("document.getElementById('sys-notice').hidden")

        # Charts move under load: messages in per second rise above zero.
        for i in range(200):
            sensor.publish(f"plant/line/{i % 5}", b"x", qos=0)
        page.wait_for("window.mqttdCharts.in.samples.some(([, v]) => v > 0)", timeout=10)
        for i in range(200):
            sensor.publish(f"plant/line/{i % 5}", b"y", qos=0)
        page.wait_for("window.mqttdCharts.in.samples.length >= 3", timeout=10)
        assert page.evaluate("window.mqttdCharts.in.points.split(' ').length") >= 3
        assert page.evaluate("window.mqttdCharts.connections.samples.at(-1)[1]") >= 2

        if os.environ.get("MQTTD_DASHBOARD_DOCS"):
            # For the screenshot: a few seconds of uneven load give the charts a shape.
            for burst in (50, 120, 80, 200, 150, 60, 180, 100):
                for i in range(burst):
                    sensor.publish(f"plant/line/{i % 5}", b"z", qos=0)
                page.wait_for("new Promise(r => setTimeout(() => r(true), 1000))")
        # A dead letter: the device publishes where the ACL does not let it.
        sensor.publish("forbidden/topic", b"nope", qos=1)
        page.wait_for("document.querySelectorAll('#dead-letters tbody tr').length >= 1")
        assert (
            page.evaluate("document.querySelector('#dead-letters tbody tr .reason').textContent")
            == "not_authorised"
        )
        # No script error, no CSP refusal; the refused CONNECTs and the viewer's 403 are
        # the browser's own network lines, expected here.
        problems = [
            line
            for line in page.console()
            if "Failed to load resource" not in line and "WebSocket connection" not in line
        ]
        assert problems == []
        shot(page, "dashboard-overview.png")

        # Clients page: search, detail, kick.
        page.evaluate("document.querySelector('.tab[data-page=clients]').click()")
        page.evaluate("document.getElementById('clients-search').value = 'sensor'")
        page.evaluate(
            "document.getElementById('clients-form').dispatchEvent("
            "new Event('submit', {cancelable: true}))"
        )
        page.wait_for(
            "[...document.querySelectorAll('#clients tbody tr')].map(r => r.dataset.clientid)"
            ".join() === 'sensor-kitchen'"
        )
        page.evaluate("document.querySelector('#clients tbody tr').click()")
        page.wait_for("!document.getElementById('client-detail').hidden")
        assert page.evaluate("document.getElementById('detail-id').textContent") == (
            "sensor-kitchen"
        )
        shot(page, "dashboard-clients.png")
        page.evaluate("document.getElementById('kick-btn').click()")
        page.wait_for("document.body.dataset.kicked === 'sensor-kitchen'")
        sensor.wait_disconnected(timeout=5)

        # Retained browser: every plant/ message in topic order; delete one.
        page.evaluate("document.querySelector('.tab[data-page=retained]').click()")
        page.wait_for("document.querySelectorAll('#retained tbody tr').length === 3")
        topics = page.evaluate(
            "[...document.querySelectorAll('#retained tbody tr')].map(r => r.dataset.topic)"
        )
        assert topics == ["plant/hall/raw", "plant/hall/temp", "plant/kitchen/temp"]
        assert (
            page.evaluate("document.querySelector('#retained tbody tr .payload').textContent")
            == "00 01 fe"
        )
        shot(page, "dashboard-retained.png")
        page.evaluate(
            "document.querySelector('#retained tbody tr[data-topic=\"plant/hall/temp\"] button')"
            ".click()"
        )
        page.wait_for("document.querySelectorAll('#retained tbody tr').length === 2")
        request = urllib.request.Request(
            admin_url(broker) + "/api/v1/retained/plant/hall/temp",
            headers={"Authorization": "Basic " + base64.b64encode(b"root:root-pw").decode()},
        )
        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(request, timeout=5)
        assert gone.value.code == 404
        assert "admin: delete retained by user:root" in broker.stderr
        assert "admin: kick by user:root" in broker.stderr
    finally:
        sensor.close()
