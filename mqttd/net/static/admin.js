// The dashboard's admin pages (Clients, Retained) over the broker's admin HTTP API.
//
// The API listens on its own port of the same host (meta "admin-api" = "scheme:port");
// the page calls it with fetch and the credentials typed into the login form, as HTTP
// Basic (admin users are users of the broker's password file listed in [admin] users).
// Nothing is stored: the credentials live in this page's memory only.

const $ = (id) => document.getElementById(id);

export class AdminApi {
  constructor(base) {
    this.base = base; // e.g. "http://127.0.0.1:9884", or null when the API is off
    this.authorization = null;
  }

  static fromPage() {
    const spec = document.querySelector('meta[name="admin-api"]')?.content || "";
    const [scheme, port] = spec.split(":");
    if (!scheme || !port || spec.includes("{{")) return new AdminApi(null);
    const host = window.location.hostname.includes(":")
      ? `[${window.location.hostname}]`
      : window.location.hostname;
    return new AdminApi(`${scheme}://${host}:${port}`);
  }

  login(username, password) {
    this.authorization =
      username === undefined ? null : "Basic " + btoa(unescape(encodeURIComponent(`${username}:${password ?? ""}`)));
  }

  /** JSON of method path (under /api/v1) with query params; throws {status, message}. */
  async call(method, path, params = {}) {
    if (!this.base) throw { status: 0, message: "the admin API is not enabled ([admin] enabled = true)" };
    const url = new URL(this.base + "/api/v1" + path);
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const headers = {};
    if (this.authorization) headers.Authorization = this.authorization;
    let response;
    try {
      response = await fetch(url, { method, headers, mode: "cors", credentials: "omit" });
    } catch {
      throw { status: 0, message: `the admin API at ${this.base} cannot be reached` };
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw { status: response.status, message: body.message || response.statusText };
    return body;
  }
}

const number = new Intl.NumberFormat();

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "—";
  if (className) td.className = className;
  row.append(td);
  return td;
}

function since(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

/**
 * Say why the admin pages are not available (or hide the message). `state` goes to
 * body[data-admin]: "yes", "no", or "pending" while the API has not answered yet.
 */
export function adminNotice(text, state = text ? "no" : "yes") {
  for (const p of document.querySelectorAll(".admin-notice")) {
    p.textContent = text;
    p.hidden = !text;
  }
  for (const section of document.querySelectorAll(".admin-only")) section.hidden = Boolean(text);
  if (text) $("client-detail").hidden = true; // shown again when a client is picked
  document.body.dataset.admin = state;
}

export class ClientsPage {
  constructor(api, notice) {
    this.api = api;
    this.notice = notice;
    this.page = 1;
    this.limit = 50;
    this.selected = null;
    $("clients-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.page = 1;
      this.load();
    });
    $("clients-prev").addEventListener("click", () => {
      if (this.page > 1) {
        this.page -= 1;
        this.load();
      }
    });
    $("clients-next").addEventListener("click", () => {
      this.page += 1;
      this.load();
    });
    $("kick-btn").addEventListener("click", () => this.kick(false));
    $("kick-discard-btn").addEventListener("click", () => this.kick(true));
  }

  async load() {
    let answer;
    try {
      answer = await this.api.call("GET", "/clients", {
        like_clientid: $("clients-search").value.trim(),
        conn_state: $("clients-state").value,
        page: this.page,
        limit: this.limit,
      });
    } catch (error) {
      this.notice(error);
      return;
    }
    const tbody = $("clients").tBodies[0];
    tbody.replaceChildren();
    for (const client of answer.data) {
      const row = document.createElement("tr");
      row.dataset.clientid = client.clientid;
      row.tabIndex = 0;
      cell(row, client.clientid, "clientid");
      cell(row, client.username);
      cell(row, client.peer);
      cell(row, String(client.proto_ver));
      cell(row, client.connected ? "connected" : "offline", client.connected ? "state ok" : "state");
      cell(row, since(client.connected_at));
      cell(row, number.format(client.inflight));
      cell(row, number.format(client.queued));
      cell(row, number.format(client.subscriptions_cnt));
      row.addEventListener("click", () => this.show(client.clientid));
      row.addEventListener("keydown", (event) => event.key === "Enter" && this.show(client.clientid));
      if (client.clientid === this.selected) row.classList.add("selected");
      tbody.append(row);
    }
    const meta = answer.meta;
    const pages = Math.max(1, Math.ceil(meta.count / meta.limit));
    $("clients-page").textContent = `page ${meta.page} of ${pages} · ${number.format(meta.count)} clients`;
    $("clients-prev").disabled = meta.page <= 1;
    $("clients-next").disabled = !meta.hasnext;
  }

  async show(clientid) {
    this.selected = clientid;
    let detail;
    try {
      detail = await this.api.call("GET", `/clients/${encodeURIComponent(clientid)}`);
    } catch (error) {
      $("client-detail").hidden = true;
      if (error.status !== 404) this.notice(error);
      return;
    }
    $("detail-id").textContent = detail.clientid;
    const fields = $("detail-fields");
    fields.replaceChildren();
    const shown = [
      ["State", detail.connected ? "connected" : "offline"],
      ["User", detail.username ?? "—"],
      ["Address", detail.peer ?? "—"],
      ["Listener", detail.listener ?? "—"],
      ["Protocol level", detail.proto_ver],
      ["Connected since", detail.connected_at ?? "—"],
      ["Keep alive", detail.keepalive ?? "—"],
      ["Session", detail.persistent ? `persistent, expiry ${detail.expiry_interval} s` : "clean"],
      ["Inflight", detail.inflight],
      ["Queued", `${detail.queued} (${number.format(detail.queued_bytes)} bytes)`],
    ];
    for (const [name, value] of shown) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      fields.append(dt, dd);
    }
    const tbody = $("detail-subscriptions").tBodies[0];
    tbody.replaceChildren();
    for (const sub of detail.subscriptions) {
      const row = document.createElement("tr");
      cell(row, sub.topic, "topic");
      cell(row, String(sub.qos));
      cell(row, sub.nl ? "yes" : "no");
      cell(row, sub.rap ? "yes" : "no");
      tbody.append(row);
    }
    $("client-detail").hidden = false;
    for (const row of $("clients").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.clientid === clientid);
    }
  }

  async kick(discard) {
    const clientid = this.selected;
    if (!clientid) return;
    try {
      await this.api.call("DELETE", `/clients/${encodeURIComponent(clientid)}`, {
        discard_session: discard ? "true" : undefined,
      });
    } catch (error) {
      this.notice(error);
      return;
    }
    document.body.dataset.kicked = clientid;
    await this.load();
    await this.show(clientid);
  }
}

export class RetainedPage {
  constructor(api, notice, payloadText) {
    this.api = api;
    this.notice = notice;
    this.payloadText = payloadText;
    this.cursor = null;
    $("retained-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.load(false);
    });
    $("retained-more").addEventListener("click", () => this.load(true));
  }

  async load(more) {
    const filter = $("retained-filter").value.trim() || "#";
    let answer;
    try {
      answer = await this.api.call("GET", "/retained", {
        filter,
        limit: 100,
        cursor: more ? this.cursor : undefined,
        count: more ? undefined : "true",
      });
    } catch (error) {
      this.notice(error);
      return;
    }
    const tbody = $("retained").tBodies[0];
    if (!more) tbody.replaceChildren();
    for (const message of answer.data) {
      const row = document.createElement("tr");
      row.dataset.topic = message.topic;
      cell(row, message.topic, "topic");
      cell(row, String(message.qos), "qos");
      cell(row, number.format(message.size));
      const payload = cell(row, this.payloadText(message), "payload");
      if (message.payload === null) payload.classList.add("hex");
      const actions = cell(row, "");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger secondary small";
      remove.textContent = "Delete";
      remove.title = `Delete the retained message of ${message.topic}`;
      remove.addEventListener("click", () => this.remove(message.topic, row));
      actions.append(remove);
      tbody.append(row);
    }
    this.cursor = answer.meta.cursor;
    $("retained-more").hidden = !answer.meta.hasnext;
    if (answer.meta.count !== null) {
      $("retained-count").textContent = `${number.format(answer.meta.count)} retained messages match`;
    }
  }

  async remove(topic, row) {
    try {
      await this.api.call("DELETE", `/retained/${topic.split("/").map(encodeURIComponent).join("/")}`);
    } catch (error) {
      this.notice(error);
      return;
    }
    row.remove();
  }
}
