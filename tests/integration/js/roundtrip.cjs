// MQTT.js interop probe for mqttd's integration tests.
//
// usage: node roundtrip.cjs URL PROTOCOL_VERSION TOPIC
//
// Connects (protocolVersion 4 or 5), subscribes to TOPIC/# at QoS 2, publishes one message
// at each QoS 0/1/2 to itself and one retained message, then opens a second client that
// must receive the retained one. Prints one JSON object per line on stdout ("connect",
// "suback", "message", "retained", "done"); any failure prints {"event": "error"} and
// exits 1. MQTT.js is found through NODE_PATH (the test points it at .test-deps).
"use strict";

const mqtt = require("mqtt");

const [url, versionArg, topic] = process.argv.slice(2);
const protocolVersion = Number(versionArg);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function fail(error) {
  print({ event: "error", message: String(error && error.message ? error.message : error) });
  process.exit(1);
}

setTimeout(() => fail("timed out"), 10000).unref();

const options = {
  protocolVersion,
  clientId: `mqttjs-${protocolVersion}-${process.pid}`,
  clean: true,
  reconnectPeriod: 0, // a failure must show, not be retried
  connectTimeout: 5000,
};

const client = mqtt.connect(url, options);
client.on("error", fail);

const expected = new Set(["0", "1", "2"]);
let retainedStarted = false;
client.on("message", (messageTopic, payload, packet) => {
  if (!/\/q[012]$/.test(messageTopic)) return; // our own retained message, seen live
  print({
    event: "message",
    topic: messageTopic,
    payload: payload.toString(),
    qos: packet.qos,
    retain: packet.retain,
  });
  expected.delete(payload.toString());
  if (expected.size === 0 && !retainedStarted) {
    retainedStarted = true;
    checkRetained();
  }
});

client.on("connect", (connack) => {
  print({ event: "connect", sessionPresent: connack.sessionPresent, reasonCode: connack.reasonCode ?? connack.returnCode ?? 0 });
  client.subscribe(`${topic}/#`, { qos: 2 }, (err, granted) => {
    if (err) return fail(err);
    print({ event: "suback", granted: granted.map((g) => g.qos) });
    for (const qos of [0, 1, 2]) {
      client.publish(`${topic}/q${qos}`, String(qos), { qos }, (perr) => {
        if (perr) fail(perr);
      });
    }
  });
});

function checkRetained() {
  client.publish(`${topic}/retained`, "kept", { qos: 1, retain: true }, (err) => {
    if (err) return fail(err);
    const late = mqtt.connect(url, { ...options, clientId: `${options.clientId}-late` });
    let lateEnding = false;
    late.on("error", (e) => {
      // After our DISCONNECT a broker may reset the socket; that is not a failure.
      if (!lateEnding) fail(e);
    });
    late.on("connect", () => {
      late.subscribe(`${topic}/retained`, { qos: 1 }, (serr) => {
        if (serr) fail(serr);
      });
    });
    late.on("message", (messageTopic, payload, packet) => {
      print({ event: "retained", topic: messageTopic, payload: payload.toString(), retain: packet.retain });
      // Leave, then clear the retained message (after the late client is gone, so it
      // cannot be half-way through acknowledging the clearing publish), then leave too.
      lateEnding = true;
      late.end(false, () => {
        client.publish(`${topic}/retained`, "", { qos: 1, retain: true }, (cerr) => {
          if (cerr) return fail(cerr);
          client.end(false, () => {
            print({ event: "done" });
            process.exit(0);
          });
        });
      });
    });
  });
}
