"""Authentication and authorisation: who may connect, and what each client may do.

- `password_file`: Mosquitto-compatible password files ($7$ PBKDF2-SHA512, $6$ SHA-512)
  and the `mqttd passwd` command;
- `acl`: Mosquitto's `acl_file` format and check semantics;
- `hooks`: the hook types the broker core calls (`ConnectInfo`, `AuthResult`,
  `Authenticate`, `Authorise`);
- `plugin`: the Python plugin interface, loaded by import path; `examples` holds one;
- `limits`: token buckets for connection and message rate limits;
- `tls`: the user name a verified client certificate gives.

This package imports only protocol/ (tests/test_layers.py checks it): the core imports
it, and a plugin loads the hook types without the core. `mqttd.security`, above the core,
combines these parts with the `[auth]` config into the hooks, and reloads them on SIGHUP.
"""
