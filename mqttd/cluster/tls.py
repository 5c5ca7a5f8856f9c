"""The TLS context for the connection to NATS, from `[cluster]` (checked by check-config)."""

from __future__ import annotations

import ssl

from ..config import ClusterConfig, ConfigError

__all__ = ["cluster_ssl_context"]


def cluster_ssl_context(config: ClusterConfig) -> ssl.SSLContext | None:
    """A client TLS context for NATS, or None when no TLS setting or tls:// URL asks for one.

    Raises `ConfigError` naming the key of a file that cannot be read or used.
    """
    wants_tls = any(url.startswith("tls://") for url in config.urls)
    if not (wants_tls or config.tls_ca_file or config.tls_cert_file):
        return None
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"config error: cluster.tls_ca_file: cannot use it: {exc}"]) from exc
    if config.tls_cert_file:
        try:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [f"config error: cluster.tls_cert_file: cannot use it with its key: {exc}"]
            ) from exc
    return context
