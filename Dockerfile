# syntax=docker/dockerfile:1
# satpulse application image: one image, two roles.
#   docker run IMAGE                          -> `satpulse worker`          (Faust worker; web/metrics on :6066)
#   docker run IMAGE satpulse ingest-service  -> HTTP ingestion on :8080 (/health, /metrics)
# Configuration is environment only (SATPULSE_*, see satpulse/settings.py); docker-compose.yml wires the stack.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:22-slim

# ---------------------------------------------------------------------------------------------------------
# build: resolve everything into a self-contained virtualenv (all dependencies ship manylinux wheels, so no
# compiler is needed); the runtime stage copies only /opt/venv.
# assets: the dashboard page's browser library (uPlot) from npm, pinned by the lockfile
FROM ${NODE_IMAGE} AS assets
WORKDIR /dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, straight from pyproject.toml, so code changes do not re-download them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself (.dockerignore lets through only what the package needs); the Avro schemas are
# package data of the `schemas` package; fail the build if the installed package cannot see them.
COPY . .
COPY --from=assets /dashboard/node_modules/uplot/dist dashboard/node_modules/uplot/dist
RUN pip install --no-deps . \
 && cd / \
 && python -c "import satpulse.codec as c; assert (c.SCHEMA_DIR / 'feedback_event.avsc').is_file(), c.SCHEMA_DIR"

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="satpulse" \
      org.opencontainers.image.description="Real-time customer-satisfaction pipeline: Kafka -> Faust windows -> ClickHouse + Prometheus"

ARG APP_UID=10001
ARG APP_GID=10001

RUN groupadd --system --gid "${APP_GID}" satpulse \
 && useradd --system --uid "${APP_UID}" --gid satpulse --home-dir /var/lib/satpulse --shell /usr/sbin/nologin satpulse \
 && install -d -o satpulse -g satpulse -m 0750 /var/lib/satpulse

COPY --from=build /opt/venv /opt/venv

# settings.py defaults work_dir and the embedded chDB path to the repo checkout (site-packages here, not
# writable); point both at the data dir. docker-compose overrides SATPULSE_CLICKHOUSE_URL with the server.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SATPULSE_WORK_DIR=/var/lib/satpulse \
    SATPULSE_CLICKHOUSE_URL=chdb:///var/lib/satpulse/chdb \
    SATPULSE_WORKER_WEB_PORT=6066

# The Faust app's data directory is {SATPULSE_WORK_DIR}/faust (it keeps no tables: the window state is in ClickHouse).
WORKDIR /var/lib/satpulse
USER satpulse:satpulse

# 6066: worker web server (/metrics); 8080: ingestion service (/health, /metrics)
EXPOSE 6066 8080

CMD ["satpulse", "worker"]
