// The mqttd dashboard: broker figures and live charts, the topic watcher, dead letters,
// and for admin users the Clients and Retained pages (admin.js, over the admin API).
//
// It talks MQTT over WebSocket to the broker it was served from, with our own client. When
// the broker requires authentication (CONNACK 4 or 5 to an anonymous CONNECT) it shows a
// login form; the same user name and password then go to the admin API as HTTP Basic.

import { MqttClient, asText, toHex } from "./mqtt-client.js";
import { LineChart } from "./charts.js";
import { AdminApi, ClientsPage, RetainedPage, adminNotice } from "./admin.js";

const MAX_ROWS = 500;
const MAX_DEAD_ROWS = 200;
const SYS_FILTER = "$SYS/#";
const DEAD_FILTER = "$dead/#";
const SYS_WAIT_MS = 4000; // retained $SYS figures arrive at once when the ACL allows them
const ADMIN_POLL_MS = 2000;

const $ = (id) => document.getElementById(id);

// ---- where the broker is --------------------------------------------------------------

function brokerUrl() {
  const path = document.querySelector('meta[name="mqtt-path"]')?.content || "mqtt";
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url.toString();
}

// ---- figures and charts -----------------------------------------------------------------

const number = new Intl.NumberFormat();

function formatUptime(seconds) {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function firstNumber(text) {
  const match = /-?\d+(\.\d+)?/.exec(text);
  return match ? Number(match[0]) : null;
}

// A counter's rate per second from two successive samples; it feeds a tile and a chart.
class Rate {
  constructor(element, chart) {
    this.element = element;
    this.chart = chart;
    this.last = null;
  }
  sample(value, now = performance.now()) {
    if (this.last && value >= this.last.value && now > this.last.time) {
      const perSecond = ((value - this.last.value) * 1000) / (now - this.last.time);
      this.element.textContent = perSecond < 10 ? perSecond.toFixed(1) : number.format(Math.round(perSecond));
      this.chart.push(perSecond, now / 1000);
    }
    this.last = { value, time: now };
  }
  reset() {
    this.last = null;
    this.element.textContent = "—";
  }
}

const charts = {
  in: new LineChart($("chart-in")),
  out: new LineChart($("chart-out")),
  connections: new LineChart($("chart-connections")),
  dropped: new LineChart($("chart-dropped")),
};
window.mqttdCharts = charts; // for tests and the curious: charts.in.points

const rates = {
  received: new Rate($("stat-received-rate"), charts.in),
  sent: new Rate($("stat-sent-rate"), charts.out),
  dropped: new Rate($("stat-dropped-rate"), charts.dropped),
};

// One set of figures, from $SYS or from the admin API (the same counters either way).
function showFigures({ connected, received, sent, dropped, retained, subscriptions, uptime }) {
  const now = performance.now();
  if (connected !== undefined) {
    $("stat-clients").textContent = number.format(connected);
    charts.connections.push(connected, now / 1000);
  }
  if (received !== undefined) rates.received.sample(received, now);
  if (sent !== undefined) rates.sent.sample(sent, now);
  if (dropped !== undefined) rates.dropped.sample(dropped, now);
  if (retained !== undefined) $("stat-retained").textContent = number.format(retained);
  if (subscriptions !== undefined) $("stat-subscriptions").textContent = number.format(subscriptions);
  if (uptime !== undefined) $("stat-uptime").textContent = formatUptime(uptime);
}

let adminPolling = null; // interval id while the admin API feeds the figures
let sysSeen = false;

// Client traffic only: publish/messages/* count PUBLISH packets of clients, not $SYS.
const SYS_TOPICS = {
  "$SYS/broker/clients/connected": (v) => showFigures({ connected: v }),
  "$SYS/broker/retained messages/count": (v) => showFigures({ retained: v }),
  "$SYS/broker/subscriptions/count": (v) => showFigures({ subscriptions: v }),
  "$SYS/broker/publish/messages/received": (v) => showFigures({ received: v }),
  "$SYS/broker/publish/messages/sent": (v) => showFigures({ sent: v }),
  "$SYS/broker/publish/messages/dropped": (v) => showFigures({ dropped: v }),
  "$SYS/broker/uptime": (v) => showFigures({ uptime: v }),
};

function onSys(topic, text) {
  if (!sysSeen) {
    sysSeen = true;
    $("sys-notice").hidden = true;
  }
  if (topic === "$SYS/broker/version") {
    $("broker-version").textContent = text;
    return;
  }
  if (adminPolling !== null && topic !== "$SYS/broker/uptime") return; // the API feeds them
  const value = firstNumber(text);
  if (value !== null) SYS_TOPICS[topic]?.(value);
}

function resetFigures() {
  for (const id of ["stat-clients", "stat-retained", "stat-subscriptions", "stat-uptime"]) {
    $(id).textContent = "—";
  }
  for (const rate of Object.values(rates)) rate.reset();
}

function sysNotice(text) {
  const p = $("sys-notice");
  p.textContent = text;
  p.hidden = !text;
}

// ---- topic filters ----------------------------------------------------------------------

// Does topic match filter? [MQTT-4.7.2-1]: wildcards at the first level never match $ topics.
function matches(filter, topic) {
  const f = filter.split("/");
  const t = topic.split("/");
  if (topic.startsWith("$") && (f[0] === "#" || f[0] === "+")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function validFilter(filter) {
  if (!filter || new TextEncoder().encode(filter).length > 65535) return false;
  const levels = filter.split("/");
  return levels.every(
    (level, i) =>
      (level === "#" ? i === levels.length - 1 : !level.includes("#")) &&
      (level === "+" || !level.includes("+")),
  );
}

// ---- state ------------------------------------------------------------------------------

const subscriptions = new Map(); // filter -> { qos, granted }
const pendingSubacks = new Map(); // packet id -> [filter, ...]
let client = null;
let retryDelay = 1000;
let shownCount = 0;
const rowPayloads = new WeakMap(); // <tr> -> payload bytes

function setStatus(state, text) {
  const status = $("status");
  status.className = `status status-${state}`;
  status.textContent = text;
  document.body.dataset.state = state;
}

function notice(text) {
  const p = $("notice");
  p.textContent = text;
  p.hidden = !text;
}

function renderSubscriptions() {
  const list = $("subscriptions");
  list.replaceChildren();
  for (const [filter, info] of subscriptions) {
    const li = document.createElement("li");
    li.className = "chip";
    li.dataset.filter = filter;
    const label = document.createElement("code");
    label.textContent = filter;
    const qos = document.createElement("span");
    qos.className = "chip-qos";
    qos.textContent = info.granted === undefined ? `QoS ${info.qos} …` : `QoS ${info.granted}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.title = `Unsubscribe from ${filter}`;
    remove.setAttribute("aria-label", remove.title);
    remove.textContent = "×";
    remove.addEventListener("click", () => {
      subscriptions.delete(filter);
      // The figures need $SYS/# too: re-subscribing at QoS 0 keeps it instead of removing it.
      if (client?.connected) {
        if (filter === SYS_FILTER) client.subscribe([[SYS_FILTER, 0]]);
        else client.unsubscribe([filter]);
      }
      renderSubscriptions();
    });
    li.append(label, qos, remove);
    list.append(li);
  }
}

function subscribeUser(filters) {
  if (!client?.connected || filters.length === 0) return;
  const id = client.subscribe(filters.map((f) => [f, subscriptions.get(f).qos]));
  pendingSubacks.set(id, filters);
}

// ---- the messages table -----------------------------------------------------------------

function payloadCell(td, payload) {
  const hex = $("show-hex").checked;
  const text = hex ? null : asText(payload);
  td.className = text === null ? "payload hex" : "payload";
  td.textContent = text === null ? toHex(payload) || "(empty)" : text || "(empty)";
  td.title = `${payload.length} bytes`;
}

function addMessage(message) {
  if ($("pause").checked) return;
  const tbody = $("messages").tBodies[0];
  const row = document.createElement("tr");
  row.dataset.topic = message.topic;
  row.dataset.qos = String(message.qos);
  row.dataset.retain = String(message.retain);
  const cells = [
    message.time.toLocaleTimeString(undefined, { hour12: false }) +
      "." + String(message.time.getMilliseconds()).padStart(3, "0"),
    message.topic,
    String(message.qos),
    message.retain ? "retained" : "",
  ];
  const classes = ["time", "topic", "qos", "retain"];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.className = classes[i];
    td.textContent = text;
    row.append(td);
  });
  const payload = document.createElement("td");
  payloadCell(payload, message.payload);
  rowPayloads.set(row, message.payload);
  row.append(payload);
  tbody.prepend(row);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
  shownCount += 1;
  $("message-count").textContent = number.format(shownCount);
  $("empty").hidden = true;
}

function rerenderPayloads() {
  for (const row of $("messages").tBodies[0].rows) {
    payloadCell(row.cells[4], rowPayloads.get(row));
  }
}

// ---- dead letters ------------------------------------------------------------------------

let deadCount = 0;

function addDeadLetter(message) {
  // "$dead/<reason>/<original topic>"
  const [, reason, ...rest] = message.topic.split("/");
  const tbody = $("dead-letters").tBodies[0];
  const row = document.createElement("tr");
  const time = message.time.toLocaleTimeString(undefined, { hour12: false });
  for (const [text, cls] of [[time, "time"], [reason, "reason"], [rest.join("/"), "topic"]]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    row.append(td);
  }
  const payload = document.createElement("td");
  payloadCell(payload, message.payload);
  row.append(payload);
  tbody.prepend(row);
  while (tbody.rows.length > MAX_DEAD_ROWS) tbody.deleteRow(-1);
  deadCount += 1;
  $("dead-count").textContent = number.format(deadCount);
}

// ---- login and the admin pages --------------------------------------------------------------

let credentials = null; // {username, password} while logged in; never stored
const api = AdminApi.fromPage();

function showLogin(text) {
  $("login").hidden = false;
  document.body.dataset.login = "required";
  const error = $("login-error");
  error.textContent = text || "";
  error.hidden = !text;
  $("login-user").focus();
}

function hideLogin() {
  $("login").hidden = true;
  document.body.dataset.login = credentials ? "done" : "none";
}

const ADMIN_CONNECTING = "Admin pages: connecting…";

function adminError(error) {
  if (error.status === 401) {
    return credentials
      ? "The admin pages need an admin user: log in as one of the broker's [admin] users."
      : "The admin pages need an admin user: log out and log in as one of [admin] users.";
  }
  if (error.status === 403) return `${error.message}.`;
  return `Admin pages unavailable: ${error.message}.`;
}

function noticeFromAdmin(error) {
  adminNotice(adminError(error));
  stopAdminPolling();
}

async function pollAdmin() {
  let answer;
  try {
    answer = await api.call("GET", "/stats");
  } catch (error) {
    noticeFromAdmin(error);
    return false;
  }
  const b = answer.broker;
  showFigures({
    connected: b.clients_connected,
    received: b.publish_received,
    sent: b.publish_sent,
    dropped: b.dropped,
    retained: b.retained_messages,
    subscriptions: b.subscriptions,
  });
  return true;
}

function stopAdminPolling() {
  if (adminPolling !== null) clearInterval(adminPolling);
  adminPolling = null;
}

async function startAdmin() {
  stopAdminPolling();
  adminNotice(ADMIN_CONNECTING, "pending");
  api.login(credentials?.username, credentials?.password);
  if (await pollAdmin()) {
    adminNotice("");
    adminPolling = setInterval(pollAdmin, ADMIN_POLL_MS);
  }
}

const clientsPage = new ClientsPage(api, noticeFromAdmin);
const retainedPage = new RetainedPage(api, noticeFromAdmin, (message) =>
  message.payload === null
    ? toHex(Uint8Array.from(atob(message.payload_base64), (c) => c.charCodeAt(0))) || "(empty)"
    : message.payload || "(empty)",
);

function showPage(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.page === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  document.body.dataset.page = name;
  if (document.body.dataset.admin === "yes") {
    if (name === "clients") clientsPage.load();
    if (name === "retained") retainedPage.load(false);
  }
}

// ---- connection -------------------------------------------------------------------------

function connect() {
  const url = brokerUrl();
  $("broker-url").textContent = url;
  setStatus("connecting", "connecting…");
  const options = { keepalive: 30 };
  if (credentials) {
    options.username = credentials.username;
    options.password = credentials.password;
  }
  client = new MqttClient(url, options);
  let refused = false;
  let sysTimer = null;

  client.onrefused = (code, text) => {
    refused = true;
    if (code === 4 || code === 5) {
      setStatus("disconnected", "login required");
      showLogin(credentials ? `The broker refused the login: ${text}.` : "");
      credentials = null;
    }
  };

  client.onconnect = () => {
    retryDelay = 1000;
    setStatus("connected", "connected");
    hideLogin();
    notice("");
    $("user").textContent = credentials ? `user ${credentials.username}` : "anonymous";
    $("logout-btn").hidden = false;
    $("logout-btn").textContent = credentials ? "Log out" : "Log in";
    sysSeen = false;
    sysNotice("");
    $("dead-notice").hidden = true;
    const id = client.subscribe([[SYS_FILTER, 0], [DEAD_FILTER, 0]]);
    pendingSubacks.set(id, [SYS_FILTER, DEAD_FILTER]);
    subscribeUser([...subscriptions.keys()]);
    sysTimer = setTimeout(() => {
      if (!sysSeen) {
        const who = credentials ? `user "${credentials.username}"` : "anonymous clients";
        sysNotice(
          `No $SYS figures arrived: the broker's ACL does not let ${who} read $SYS/#, ` +
            "or $SYS is turned off ([sys] interval = 0). Figures and charts need one of them" +
            (api.base ? " or an admin user." : "."),
        );
      }
    }, SYS_WAIT_MS);
    startAdmin().then(() => showPage(document.body.dataset.page || "overview"));
  };

  client.onsuback = (id, granted) => {
    const filters = pendingSubacks.get(id);
    pendingSubacks.delete(id);
    if (!filters) return;
    const refusedFilters = [];
    filters.forEach((filter, i) => {
      if (filter === SYS_FILTER || filter === DEAD_FILTER) {
        if (granted[i] !== 0x80) return;
        if (filter === SYS_FILTER) {
          sysNotice("The broker's ACL refuses $SYS/# to this user: its figures are hidden.");
        } else {
          const p = $("dead-notice");
          p.textContent = "The broker's ACL refuses $dead/# to this user: dead letters are hidden.";
          p.hidden = false;
        }
        return;
      }
      const info = subscriptions.get(filter);
      if (!info) return;
      if (granted[i] === 0x80) {
        refusedFilters.push(filter);
        subscriptions.delete(filter);
      } else {
        info.granted = granted[i];
      }
    });
    if (refusedFilters.length) notice(`The broker refused the subscription to ${refusedFilters.join(", ")}.`);
    renderSubscriptions();
  };

  client.onmessage = (message) => {
    if (message.topic.startsWith("$SYS/")) {
      onSys(message.topic, new TextDecoder().decode(message.payload));
      // Show $SYS messages only when the user asked for them explicitly.
      if (![...subscriptions.keys()].some((f) => matches(f, message.topic))) return;
    } else if (matches(DEAD_FILTER, message.topic)) {
      addDeadLetter(message);
      if (![...subscriptions.keys()].some((f) => matches(f, message.topic))) return;
    }
    addMessage(message);
  };

  client.onerror = (text) => notice(text);

  client.onclose = (reason) => {
    clearTimeout(sysTimer);
    stopAdminPolling();
    resetFigures();
    pendingSubacks.clear();
    for (const info of subscriptions.values()) info.granted = undefined;
    renderSubscriptions();
    if (refused && $("login").hidden === false) return; // wait for the login form
    setStatus("disconnected", `disconnected: ${reason}`);
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  };

  client.connect();
}

function init() {
  $("subscribe-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const filter = $("topic-filter").value.trim();
    const qos = Number($("qos").value);
    if (!validFilter(filter)) {
      notice(`"${filter}" is not a valid topic filter ('#' only last, '+' and '#' fill a whole level).`);
      return;
    }
    notice("");
    subscriptions.set(filter, { qos, granted: undefined });
    renderSubscriptions();
    subscribeUser([filter]);
    $("topic-filter").value = "";
  });
  $("clear-btn").addEventListener("click", () => {
    $("messages").tBodies[0].replaceChildren();
    shownCount = 0;
    $("message-count").textContent = "0";
    $("empty").hidden = false;
  });
  $("show-hex").addEventListener("change", rerenderPayloads);
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    credentials = { username: $("login-user").value, password: $("login-password").value };
    $("login-password").value = "";
    $("login-error").hidden = true;
    if (client) {
      client.onclose = null; // this connection ends on purpose: no reconnection from it
      client.disconnect();
    }
    connect();
  });
  $("logout-btn").addEventListener("click", () => {
    credentials = null;
    client.onclose = null;
    client.disconnect();
    stopAdminPolling();
    resetFigures();
    $("user").textContent = "";
    $("logout-btn").hidden = true;
    setStatus("disconnected", "not connected");
    showLogin("");
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showPage(tab.dataset.page));
  }
  if (api.base) adminNotice(ADMIN_CONNECTING, "pending");
  else adminNotice("The admin API is not enabled on this broker ([admin] enabled = true).");
  showPage("overview");
  connect();
}

init();
