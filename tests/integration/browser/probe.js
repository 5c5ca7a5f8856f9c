// Helpers the browser tests call through Runtime.evaluate. Everything the tests look at
// is kept on `window.probe`, and each received message is also shown as a list item.

window.probe = { state: "idle", received: [], errors: [], granted: null };

function show(text) {
  const li = document.createElement("li");
  li.textContent = text;
  document.getElementById("received").append(li);
}

function setState(state) {
  window.probe.state = state;
  document.getElementById("state").textContent = state;
}

// Connect MQTT.js (protocol version 4 or 5) and subscribe to `filter` at `qos`.
// Resolves with the granted QoS list once SUBACK arrived.
window.startMqttJs = function (url, protocolVersion, filter, qos) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      protocolVersion,
      clientId: `mqttjs-v${protocolVersion}-${Math.random().toString(16).slice(2, 10)}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10000,
    });
    window.probe.client = client;
    client.on("connect", () => {
      setState("connected");
      client.subscribe(filter, { qos }, (err, granted) => {
        if (err) {
          reject(String(err));
          return;
        }
        window.probe.granted = granted.map((g) => g.qos);
        setState("subscribed");
        resolve(window.probe.granted);
      });
    });
    client.on("message", (topic, payload, packet) => {
      const message = {
        topic,
        payload: new TextDecoder().decode(payload),
        qos: packet.qos,
        retain: packet.retain,
      };
      window.probe.received.push(message);
      show(`${topic} qos=${message.qos} retain=${message.retain} ${message.payload}`);
    });
    client.on("error", (err) => {
      window.probe.errors.push(String(err));
      reject(String(err));
    });
    client.on("close", () => setState("closed"));
  });
};

// Open a raw WebSocket; send `sendBytes` zero bytes once open (if given) and report how
// it ended: whether it opened, the negotiated subprotocol, and the close code/reason.
window.tryWebSocket = function (url, protocols, sendBytes) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    ws.binaryType = "arraybuffer";
    const outcome = { opened: false, protocol: null, code: null, reason: null, error: false };
    ws.onopen = () => {
      outcome.opened = true;
      outcome.protocol = ws.protocol;
      if (sendBytes) ws.send(new Uint8Array(sendBytes));
      else ws.close(1000);
    };
    ws.onerror = () => {
      outcome.error = true;
    };
    ws.onclose = (event) => {
      outcome.code = event.code;
      outcome.reason = event.reason;
      resolve(outcome);
    };
  });
};
