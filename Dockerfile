# syntax=docker/dockerfile:1
# The dify-events image: the `events` command line (consumer runtime, producer SDK, schemas)
# on Python 3.11, run as a non-root user with a read-only root file system in mind.
#
#   docker build -t dify-events:0.1.0 .
#   docker run --rm dify-events:0.1.0 run --group provider-usage

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment with the project and its dependencies --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in a layer of their own that is rebuilt only when pyproject.toml changes.
# (Every dependency ships wheels, librdkafka and libpq included: no compiler is needed.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# Then the project itself; pip compiles its bytecode here, as the running image cannot write it.
COPY README.md ./
COPY schemas ./schemas
COPY producers ./producers
COPY consumers ./consumers
RUN pip install --no-deps . \
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
