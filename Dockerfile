# mqttd: an MQTT 3.1/3.1.1/5.0 broker.
#
#   docker build -t mqttd .
#   docker run -d --name mqttd -p 1883:1883 -p 8083:8083 -p 9883:9883 \
#       -v mqttd-data:/data mqttd
#
# Ports: 1883 MQTT, 8083 MQTT over WebSocket, 8883 MQTT over TLS and 8084 secure
# WebSocket (both once enabled in the config), 9883 /metrics and /health.
# Volumes: /data holds the SQLite database, /config the configuration (a default one,
# docker/mqttd.toml, is baked in; mount a directory with your own mqttd.toml over it).
# `docker stop` sends SIGTERM: mqttd disconnects clients and flushes the store (well
# within docker's 10 s grace period). `docker kill -s HUP` reloads the log level.
# The wheel is built where there is a C compiler, so setup.py compiles the codec (mypyc);
# the image itself stays slim and gets only the wheel.
FROM python:3.11 AS build
COPY pyproject.toml setup.py README.md LICENSE /src/
COPY mqttd /src/mqttd
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid/gid, so a host directory mounted on /data can be owned by it.
RUN groupadd --system --gid 1883 mqttd \
    && useradd --system --uid 1883 --gid mqttd --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin mqttd

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

COPY docker/mqttd.toml /config/mqttd.toml
RUN mkdir -p /data && chown mqttd:mqttd /data

VOLUME ["/data", "/config"]
WORKDIR /data
USER mqttd

EXPOSE 1883 8083 8883 8084 9883

# slim has no curl: ask /health with the Python that runs mqttd (exit 1 on anything
# but 200, including a refused connection).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9883/health', timeout=4).status != 200)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["mqttd"]
CMD ["-c", "/config/mqttd.toml"]
