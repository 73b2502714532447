# The production image: the sidecar and its pinned runtime dependencies, nothing else.
#
#   configuration  /etc/llm-sidecar/config.yaml (mount yours over it, read-only)
#   state          /var/lib/llm-sidecar (SQLite ledger and spend log; a volume)
#   secrets        only from the environment: os.environ/NAME in the config
#                  (OPENAI_API_KEY, ANTHROPIC_API_KEY, LLM_SIDECAR_MASTER_KEY, DATABASE_URL,
#                  REDIS_URL, ...), never baked in
#   ports          50051 gRPC, 4000 HTTP (OpenAI-compatible bridge)
#   health         `llm-sidecar health`: the standard gRPC health check, SERVING or not
#   reload         `docker kill -s HUP` or `docker exec ... llm-sidecar reload
#                  --pid-file /tmp/llm-sidecar.pid`; an edited config file is picked up too
#   stop           SIGTERM drains for --drain-seconds (keep it under the stop timeout)
#
# `make image-check` builds the same install into a fresh virtual environment on a
# machine with no Docker engine; `make lint` runs hadolint over this file.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtual environment holding exactly requirements.lock and the sidecar --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/llm-sidecar
COPY requirements.lock ./
RUN /opt/llm-sidecar/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY bridge ./bridge
RUN /opt/llm-sidecar/bin/pip install --no-deps . \
    && /opt/llm-sidecar/bin/pip uninstall --yes pip setuptools

# -- run: the slim base, the environment, a non-root user; no compiler, no pip ------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/llm-sidecar/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LLM_SIDECAR_DATA_DIR=/var/lib/llm-sidecar
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent sidecar \
    && mkdir -p /etc/llm-sidecar /var/lib/llm-sidecar \
    && chown sidecar:sidecar /var/lib/llm-sidecar
COPY --from=build /opt/llm-sidecar /opt/llm-sidecar
COPY examples/litellm_config.yaml /etc/llm-sidecar/config.yaml
USER 10001:10001
VOLUME ["/var/lib/llm-sidecar"]
EXPOSE 50051 4000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["llm-sidecar", "health", "--sidecar", "127.0.0.1:50051", "--timeout", "3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["llm-sidecar"]
CMD ["serve", "--config", "/etc/llm-sidecar/config.yaml", "--host", "0.0.0.0", \
     "--pid-file", "/tmp/llm-sidecar.pid", "--drain-seconds", "20"]
