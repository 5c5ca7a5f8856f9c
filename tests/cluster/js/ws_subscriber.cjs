// MQTT.js subscriber over WebSockets for mqttd's cluster tests.
//
// usage: node ws_subscriber.cjs WS_URL PROTOCOL_VERSION FILTER COUNT
//
// Connects, subscribes to FILTER at QoS 1, prints {"event": "ready"} after SUBACK, then
// one {"event": "message", ...} per message; after COUNT messages prints
// {"event": "done"} and exits 0 (messages with payload "probe" are printed, not counted). Any failure prints {"event": "error"} and exits 1.
// MQTT.js is found through NODE_PATH (the test points it at .test-deps).
"use strict";

const mqtt = require("mqtt");

const [url, versionArg, filter, countArg] = process.argv.slice(2);
const count = Number(countArg);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function fail(error) {
  print({ event: "error", message: String(error && error.message ? error.message : error) });
  process.exit(1);
}

setTimeout(() => fail("timed out"), 25000).unref();

const client = mqtt.connect(url, {
  protocolVersion: Number(versionArg),
  clientId: `mqttjs-ws-${process.pid}`,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
});
client.on("error", fail);

let seen = 0;
client.on("message", (topic, payload, packet) => {
  print({ event: "message", topic, payload: payload.toString(), qos: packet.qos });
  if (payload.toString() !== "probe") seen += 1;
  if (seen === count) {
    print({ event: "done" });
    client.end(false, {}, () => process.exit(0));
  }
});

client.on("connect", () => {
  client.subscribe(filter, { qos: 1 }, (err) => {
    if (err) return fail(err);
    print({ event: "ready" });
  });
});
