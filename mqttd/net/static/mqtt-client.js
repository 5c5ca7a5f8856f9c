// A small MQTT 3.1.1 client over WebSocket, for the mqttd dashboard (no dependencies).
//
// It speaks just what a dashboard needs: CONNECT, SUBSCRIBE/UNSUBSCRIBE, PINGREQ, and
// receiving PUBLISH at QoS 0, 1 and 2 (answering PUBACK, or PUBREC then PUBCOMP). Frames
// are binary [MQTT-6.0.0-1] and packets are not assumed to line up with frames
// [MQTT-6.0.0-2]: bytes are buffered and split into packets by their Remaining Length.

const CONNECT = 1, CONNACK = 2, PUBLISH = 3, PUBACK = 4, PUBREC = 5, PUBREL = 6, PUBCOMP = 7;
const SUBSCRIBE = 8, SUBACK = 9, UNSUBSCRIBE = 10, UNSUBACK = 11, PINGREQ = 12, PINGRESP = 13;
const DISCONNECT = 14;

const CONNACK_REASONS = {
  1: "unacceptable protocol version",
  2: "client identifier rejected",
  3: "server unavailable",
  4: "bad user name or password",
  5: "not authorised",
};

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

function encodeString(text) {
  const bytes = encoder.encode(text);
  if (bytes.length > 0xffff) throw new RangeError("string longer than 65535 bytes");
  const out = new Uint8Array(2 + bytes.length);
  out[0] = bytes.length >> 8;
  out[1] = bytes.length & 0xff;
  out.set(bytes, 2);
  return out;
}

function encodeRemainingLength(length) {
  const out = [];
  do {
    let digit = length % 128;
    length = Math.floor(length / 128);
    if (length > 0) digit |= 0x80;
    out.push(digit);
  } while (length > 0);
  return out;
}

// One packet: fixed header byte, Remaining Length, then the parts (Uint8Arrays or byte lists).
function packet(firstByte, parts) {
  const body = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const size = body.reduce((n, p) => n + p.length, 0);
  const header = [firstByte, ...encodeRemainingLength(size)];
  const out = new Uint8Array(header.length + size);
  out.set(header, 0);
  let at = header.length;
  for (const p of body) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const u16 = (n) => [n >> 8, n & 0xff];

/** Hex dump of bytes, "de ad be ef". */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** The payload as text when it is valid, printable UTF-8; null otherwise. */
export function asText(bytes) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
  // Control characters other than tab/newline mean binary data.
  return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? null : text;
}

/**
 * MQTT 3.1.1 client on a browser WebSocket.
 *
 * Events (assign functions): onconnect(sessionPresent), onmessage({topic, payload, qos,
 * retain, dup, time}), onsuback(packetId, grantedQos[]), onrefused(code, text) when
 * CONNACK refuses (4 bad user name or password, 5 not authorised), onclose(reason),
 * onerror(text).
 */
export class MqttClient {
  constructor(url, { clientId, keepalive = 30, cleanSession = true, username, password } = {}) {
    this.url = url;
    this.clientId = clientId ?? "mqttd-dash-" + Math.random().toString(16).slice(2, 10);
    this.keepalive = keepalive;
    this.cleanSession = cleanSession;
    this.username = username;
    this.password = password;
    this.connected = false;
    this.onconnect = this.onmessage = this.onsuback = this.onunsuback = null;
    this.onclose = this.onerror = this.onrefused = null;
    this._nextId = 1;
    this._buffer = new Uint8Array(0);
    this._awaitingRel = new Set(); // inbound QoS 2 packet ids between PUBREC and PUBREL
    this._pingTimer = null;
    this._lastPingResp = 0;
    this._ws = null;
  }

  /** Open the WebSocket (subprotocol "mqtt") and send CONNECT. */
  connect() {
    const ws = new WebSocket(this.url, ["mqtt"]);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => this._send(this._connectPacket());
    ws.onmessage = (event) => {
      if (typeof event.data === "string") {
        this._fail("server sent a text frame");
        return;
      }
      this._feed(new Uint8Array(event.data));
    };
    ws.onerror = () => this.onerror?.("WebSocket error");
    ws.onclose = (event) => {
      this._stopPing();
      const was = this.connected;
      this.connected = false;
      const why = event.reason || (event.code === 1006 ? "connection lost" : `code ${event.code}`);
      this.onclose?.(was ? why : `could not connect (${why})`);
    };
  }

  /** Subscribe to filters: [[filter, qos], ...]; returns the packet id. */
  subscribe(filters) {
    const id = this._packetId();
    const parts = [u16(id)];
    for (const [filter, qos] of filters) parts.push(encodeString(filter), [qos & 3]);
    this._send(packet((SUBSCRIBE << 4) | 0x02, parts)); // [MQTT-3.8.1-1] flags 0010
    return id;
  }

  /** Unsubscribe from filters; returns the packet id. */
  unsubscribe(filters) {
    const id = this._packetId();
    this._send(packet((UNSUBSCRIBE << 4) | 0x02, [u16(id), ...filters.map(encodeString)]));
    return id;
  }

  /** Publish (QoS 0 only: the dashboard never needs more). */
  publish(topic, payload, { retain = false } = {}) {
    const body = typeof payload === "string" ? encoder.encode(payload) : payload;
    this._send(packet((PUBLISH << 4) | (retain ? 1 : 0), [encodeString(topic), body]));
  }

  /** Send DISCONNECT and close the WebSocket. */
  disconnect() {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._send(packet(DISCONNECT << 4, []));
      this._ws.close(1000);
    }
    this._stopPing();
  }

  _packetId() {
    const id = this._nextId;
    this._nextId = id >= 0xffff ? 1 : id + 1;
    return id;
  }

  _connectPacket() {
    let flags = this.cleanSession ? 0x02 : 0;
    const payload = [encodeString(this.clientId)];
    if (this.username !== undefined) {
      flags |= 0x80;
      payload.push(encodeString(this.username));
      if (this.password !== undefined) {
        flags |= 0x40;
        payload.push(encodeString(this.password));
      }
    }
    const variable = [encodeString("MQTT"), [4, flags, ...u16(this.keepalive)]];
    return packet(CONNECT << 4, [...variable, ...payload]);
  }

  _send(bytes) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(bytes);
  }

  _fail(text) {
    this.onerror?.(text);
    // Browsers only let a page close with 1000 or 3000-4999 (4000: ours, "protocol problem").
    this._ws?.close(4000, text.slice(0, 120));
  }

  // Append bytes and handle every complete packet in the buffer.
  _feed(bytes) {
    let buf = this._buffer;
    if (buf.length === 0) {
      buf = bytes;
    } else {
      const joined = new Uint8Array(buf.length + bytes.length);
      joined.set(buf, 0);
      joined.set(bytes, buf.length);
      buf = joined;
    }
    let at = 0;
    while (buf.length - at >= 2) {
      let length = 0, multiplier = 1, i = at + 1, complete = false;
      for (; i < buf.length && i < at + 5; i++) {
        length += (buf[i] & 0x7f) * multiplier;
        multiplier *= 128;
        if ((buf[i] & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete) {
        if (i >= at + 5) return this._fail("malformed Remaining Length");
        break; // need more bytes for the length
      }
      if (buf.length - i < length) break; // need more bytes for the body
      this._handle(buf[at], buf.subarray(i, i + length));
      at = i + length;
    }
    this._buffer = at === buf.length ? new Uint8Array(0) : buf.slice(at);
  }

  _handle(first, body) {
    const type = first >> 4;
    switch (type) {
      case CONNACK: {
        const code = body[1];
        if (code !== 0) {
          this.onrefused?.(code, CONNACK_REASONS[code] ?? "code " + code);
          this._fail(`CONNACK refused: ${CONNACK_REASONS[code] ?? "code " + code}`);
          return;
        }
        this.connected = true;
        this._startPing();
        this.onconnect?.((body[0] & 1) === 1);
        break;
      }
      case PUBLISH: {
        const qos = (first >> 1) & 3;
        const topicLength = (body[0] << 8) | body[1];
        const topic = decoder.decode(body.subarray(2, 2 + topicLength));
        let at = 2 + topicLength;
        let id = 0;
        if (qos > 0) {
          id = (body[at] << 8) | body[at + 1];
          at += 2;
        }
        const message = {
          topic,
          payload: body.slice(at),
          qos,
          retain: (first & 1) === 1,
          dup: (first & 8) === 8,
          time: new Date(),
        };
        if (qos === 1) {
          this._send(packet(PUBACK << 4, [u16(id)]));
        } else if (qos === 2) {
          this._send(packet(PUBREC << 4, [u16(id)]));
          // A resent QoS 2 PUBLISH (before PUBREL) must not be delivered twice [MQTT-4.3.3-2].
          if (this._awaitingRel.has(id)) return;
          this._awaitingRel.add(id);
        }
        this.onmessage?.(message);
        break;
      }
      case PUBREL: {
        const id = (body[0] << 8) | body[1];
        this._awaitingRel.delete(id);
        this._send(packet(PUBCOMP << 4, [u16(id)]));
        break;
      }
      case SUBACK:
        this.onsuback?.((body[0] << 8) | body[1], Array.from(body.subarray(2)));
        break;
      case UNSUBACK:
        this.onunsuback?.((body[0] << 8) | body[1]);
        break;
      case PINGRESP:
        this._lastPingResp = Date.now();
        break;
      case PUBACK:
      case PUBREC:
      case PUBCOMP:
        break; // we only publish at QoS 0
      default:
        this._fail(`unexpected packet type ${type}`);
    }
  }

  // PINGREQ every keepalive seconds; no PINGRESP within keepalive means the link is dead.
  _startPing() {
    this._stopPing();
    if (!this.keepalive) return;
    this._lastPingResp = Date.now();
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._lastPingResp > 2 * this.keepalive * 1000) {
        this._fail("no PINGRESP from the broker");
        return;
      }
      this._send(packet(PINGREQ << 4, []));
    }, this.keepalive * 1000);
  }

  _stopPing() {
    if (this._pingTimer !== null) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }
}
