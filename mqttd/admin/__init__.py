"""The admin HTTP API (`server.AdminServer`) and `mqttd ctl`, its command-line client.

Sits beside ops/ above broker/: it reads and drives the sans-IO core on the event loop.
"""
