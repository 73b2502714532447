# The README's two commands: `make test` and `make run`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test run lint proto bench bench-quick bench-peers clean image-check lock

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/pytest -q

run: $(STAMP)
	$(BIN)/llm-sidecar serve --config examples/litellm_config.yaml --simulate auto

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

# The LiteLLM proxy beside the sidecar, in its own environment (large: about 1 GB).
PEERS := .venv-peers
$(PEERS)/.installed:
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet 'litellm[proxy]'
	touch $(PEERS)/.installed

bench-peers: $(STAMP) $(PEERS)/.installed
	$(BIN)/python -m benchmarks --only peers


# The image's install without a Docker engine: requirements.lock (hashes required) and the
# sidecar into a fresh virtual environment, which then starts and reads the example configs.
IMAGE_VENV := .image-check
image-check: $(STAMP)
	rm -rf $(IMAGE_VENV) build
	$(PYTHON) -m venv $(IMAGE_VENV)
	$(IMAGE_VENV)/bin/python -m pip install --quiet --require-hashes --only-binary=:all: -r requirements.lock
	$(IMAGE_VENV)/bin/python -m pip install --quiet --no-deps .
	$(IMAGE_VENV)/bin/llm-sidecar --version
	for config in examples/*.yaml deploy/compose/config.yaml; do \
		$(IMAGE_VENV)/bin/llm-sidecar check-config $$config > /dev/null || exit 1; \
		echo "check-config $$config: ok"; \
	done
	$(BIN)/hadolint Dockerfile
	rm -rf $(IMAGE_VENV) build

# requirements.lock: the runtime dependencies of pyproject.toml, pinned with hashes.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-header \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) $(IMAGE_VENV) $(PEERS) .pytest_cache .mypy_cache .ruff_cache
