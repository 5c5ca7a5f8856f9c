"""Authentication and authorisation: who may connect, and what each client may do.

- `password_file`: Mosquitto-compatible password files ($7$ PBKDF2-SHA512, $6$ SHA-512)
  and the `mqttd passwd` command;
- `acl`: Mosquitto's `acl_file` format and check semantics;
- `plugin`: the Python plugin interface, loaded by import path; `examples` holds one;
- `policy`: `Security`, which combines the above with the listeners' anonymous rule and
  TLS identities into the hooks the broker core calls, and reloads them on SIGHUP;
- `limits`: token buckets for connection and message rate limits;
- `tls`: the user name a verified client certificate gives.

This package imports nothing here, so the core can use `limits` without a cycle.
"""
