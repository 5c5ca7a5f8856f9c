"""Real sockets and real clients (paho-mqtt, mosquitto_pub/sub, MQTT.js) against mqttd."""
