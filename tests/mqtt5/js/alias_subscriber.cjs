// MQTT.js subscriber that allows the server Topic Aliases (5.0 3.3.2.3.4).
//
// usage: node alias_subscriber.cjs URL CLIENT_ID FILTER COUNT TOPIC_ALIAS_MAXIMUM
//
// Prints {"event": "ready"} once subscribed, then one {"event": "message"} line per
// PUBLISH with the topic MQTT.js resolved and the alias the packet carried, and exits
// after COUNT messages. Any failure prints {"event": "error"} and exits 1.
"use strict";

const mqtt = require("mqtt");

const [url, clientId, filter, countArg, aliasArg] = process.argv.slice(2);
const count = Number(countArg);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function fail(error) {
  print({ event: "error", message: String(error && error.message ? error.message : error) });
  process.exit(1);
}

setTimeout(() => fail("timed out"), 10000).unref();

const client = mqtt.connect(url, {
  protocolVersion: 5,
  clientId,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  properties: { topicAliasMaximum: Number(aliasArg) },
});
client.on("error", fail);

let received = 0;
client.on("message", (topic, payload, packet) => {
  const alias = packet.properties ? packet.properties.topicAlias : undefined;
  print({ event: "message", topic, payload: payload.toString(), alias: alias ?? null });
  received += 1;
  if (received === count) {
    client.end(false, () => process.exit(0));
  }
});

client.on("connect", () => {
  client.subscribe(filter, { qos: 0 }, (error) => {
    if (error) fail(error);
    print({ event: "ready" });
  });
});
