// The mqttd live dashboard: broker figures from $SYS, and a topic watcher.
// Talks to the broker it was served from, over MQTT on WebSocket, with our own client.

import { MqttClient, asText, toHex } from "./mqtt-client.js";

const MAX_ROWS = 500;
const SYS_FILTER = "$SYS/#";

const $ = (id) => document.getElementById(id);

// ---- where the broker is --------------------------------------------------------------

function brokerUrl() {
  const path = document.querySelector('meta[name="mqtt-path"]')?.content || "mqtt";
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url.toString();
}

// ---- broker figures from $SYS (Mosquitto's topic names) -------------------------------

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

// A counter's rate per second from two successive samples.
class Rate {
  constructor(element) {
    this.element = element;
    this.last = null;
  }
  sample(value) {
    const now = performance.now();
    if (this.last && value >= this.last.value && now > this.last.time) {
      const perSecond = ((value - this.last.value) * 1000) / (now - this.last.time);
      this.element.textContent = perSecond < 10 ? perSecond.toFixed(1) : number.format(Math.round(perSecond));
    }
    this.last = { value, time: now };
  }
  reset() {
    this.last = null;
    this.element.textContent = "—";
  }
}

const rates = {
  received: new Rate($("stat-received-rate")),
  sent: new Rate($("stat-sent-rate")),
};

function firstNumber(text) {
  const match = /-?\d+(\.\d+)?/.exec(text);
  return match ? Number(match[0]) : null;
}

function showCount(id) {
  return (text) => {
    const value = firstNumber(text);
    if (value !== null) $(id).textContent = number.format(value);
  };
}

const SYS_TOPICS = {
  "$SYS/broker/clients/connected": showCount("stat-clients"),
  "$SYS/broker/retained messages/count": showCount("stat-retained"),
  "$SYS/broker/subscriptions/count": showCount("stat-subscriptions"),
  "$SYS/broker/messages/received": (text) => {
    const value = firstNumber(text);
    if (value !== null) rates.received.sample(value);
  },
  "$SYS/broker/messages/sent": (text) => {
    const value = firstNumber(text);
    if (value !== null) rates.sent.sample(value);
  },
  "$SYS/broker/uptime": (text) => {
    const value = firstNumber(text); // Mosquitto sends "123 seconds"
    if (value !== null) $("stat-uptime").textContent = formatUptime(value);
  },
  "$SYS/broker/version": (text) => {
    $("broker-version").textContent = text;
  },
};

function resetFigures() {
  for (const id of ["stat-clients", "stat-retained", "stat-subscriptions", "stat-uptime"]) {
    $(id).textContent = "—";
  }
  rates.received.reset();
  rates.sent.reset();
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

// ---- connection -------------------------------------------------------------------------

function connect() {
  const url = brokerUrl();
  $("broker-url").textContent = url;
  setStatus("connecting", "connecting…");
  client = new MqttClient(url, { keepalive: 30 });

  client.onconnect = () => {
    retryDelay = 1000;
    setStatus("connected", "connected");
    notice("");
    client.subscribe([[SYS_FILTER, 0]]);
    subscribeUser([...subscriptions.keys()]);
  };

  client.onsuback = (id, granted) => {
    const filters = pendingSubacks.get(id);
    pendingSubacks.delete(id);
    if (!filters) return;
    const refused = [];
    filters.forEach((filter, i) => {
      const info = subscriptions.get(filter);
      if (!info) return;
      if (granted[i] === 0x80) {
        refused.push(filter);
        subscriptions.delete(filter);
      } else {
        info.granted = granted[i];
      }
    });
    if (refused.length) notice(`The broker refused the subscription to ${refused.join(", ")}.`);
    renderSubscriptions();
  };

  client.onmessage = (message) => {
    if (message.topic.startsWith("$SYS/")) {
      SYS_TOPICS[message.topic]?.(new TextDecoder().decode(message.payload));
      // Show $SYS messages only when the user asked for them explicitly.
      if (![...subscriptions.keys()].some((f) => matches(f, message.topic))) return;
    }
    addMessage(message);
  };

  client.onerror = (text) => notice(text);

  client.onclose = (reason) => {
    setStatus("disconnected", `disconnected: ${reason}`);
    resetFigures();
    pendingSubacks.clear();
    for (const info of subscriptions.values()) info.granted = undefined;
    renderSubscriptions();
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
  connect();
}

init();
