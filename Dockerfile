# syntax=docker/dockerfile:1
# The dify-events image: the `events` command line (consumer runtime, producer SDK, schemas)
# on Python 3.11, run as a non-root user with a read-only root file system in mind.
#
#   docker build -t dify-events:0.1.0 .
#   docker run --rm dify-events:0.1.0 run --group provider-usage

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- wheel: the project as a wheel, the artefact `python -m build` publishes --------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY producers ./producers
COPY consumers ./consumers
RUN pip wheel --no-deps --wheel-dir /dist .

# --- build: a virtual environment with that wheel, at the exact versions of constraints.txt ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml or the
# constraints change: the ranges of pyproject.toml (with both PostgreSQL drivers, so the database
# URL may name either), pinned by constraints.txt. (Every dependency ships wheels, librdkafka and
# libpq included: no compiler is needed.)
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
        print(*p['dependencies'], *p['optional-dependencies']['psycopg'], *p['optional-dependencies']['psycopg2'], sep='\n')" \
        > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

# Then the wheel itself; pip compiles its bytecode here, as the running image cannot write it.
COPY --from=wheel /dist /dist
RUN pip install -c constraints.txt "$(ls /dist/dify_events-*.whl)[psycopg,psycopg2]" \
    && events --help > /dev/null

# --- runtime: the virtual environment alone, a non-root user --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dify-events" \
      org.opencontainers.image.description="Dify's event system on Apache Kafka: the events command and its consumer runtime" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 events \
    && useradd --system --uid 10001 --gid events --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin events

COPY --from=build /opt/venv /opt/venv

# /tmp is the only path written to (an emptyDir in Kubernetes): HOME and EVENTS_HOME point there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    EVENTS_HOME=/tmp/events

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
# Health (/healthz, /readyz) and Prometheus metrics (/metrics).
EXPOSE 8080 9464

ENTRYPOINT ["events"]
CMD ["--help"]
