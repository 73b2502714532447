# The production image: the sidecar and its runtime dependencies, nothing else.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY proto ./proto
COPY sidecar ./sidecar
COPY bridge ./bridge
RUN pip install --no-cache-dir . && useradd --system --uid 10001 sidecar

COPY examples ./examples
USER sidecar
EXPOSE 50051
ENTRYPOINT ["llm-sidecar"]
CMD ["serve", "--config", "/app/examples/litellm_config.yaml", "--host", "0.0.0.0"]
