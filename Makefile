# Two set-up commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(wildcard _speedups/*.pyx _speedups/*_c.py _speedups/*.pxd)

.PHONY: install run test test-pure bench bench-micro bench-e2e bench-soak lint format clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# Editable install: builds the Cython twins in place next to their .pyx files.
$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	SERVER_HOST=127.0.0.1 $(BIN)/llm-gateway serve --host 127.0.0.1 --port $${SERVER_PORT:-8080} --workers 1

# Debian packages the suite and the benchmarks need; installed only when missing.
# redis-server for state tests; for tests/deployment: prometheus (the server and promtool),
# prometheus-alertmanager (amtool), docker-compose (config check only, no engine) and shellcheck;
# chromium and its chromedriver for the admin page's browser test (tests/tenants).
SYSTEM_TOOLS := redis-server:redis-server promtool:prometheus amtool:prometheus-alertmanager \
                docker-compose:docker-compose shellcheck:shellcheck \
                chromium:chromium chromedriver:chromium-driver
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing) >/dev/null; fi

# DEPLOY_TOOLS_REQUIRED: tests/deployment fail (not skip) when a tool is missing.
test: install system-deps
	DEPLOY_TOOLS_REQUIRED=1 $(BIN)/python -m pytest $(PYTEST_ARGS)
	GATEWAY_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -m 'not benchmark' -p no:cacheprovider tests/speedups $(PYTEST_ARGS)

bench: bench-micro bench-e2e

bench-micro: install
	$(BIN)/python -m pytest bench -m benchmark -p no:cacheprovider --benchmark-columns=min,median,mean,ops --benchmark-group-by=group --benchmark-sort=name

# bench-e2e: bare pass-throughs, the gateway (default and production profiles, one pinned
# worker and two free ones) and LiteLLM behind a canned nginx, driven by wrk (~11 min).
# bench-soak: one pinned gateway worker's RSS over 200,000 mixed requests (streams, errors,
# client aborts). Both are described in bench/README.md.
bench-e2e: install
	$(BIN)/python bench/e2e.py

bench-soak: install
	$(BIN)/python bench/e2e.py --soak

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info _speedups/*.so _speedups/*.c
