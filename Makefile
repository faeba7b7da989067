# Classifly: `make run` starts the platform, `make test` runs the tests; both set everything up first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
ONLY ?=
DATASETS ?=
QUICK ?=
PYTEST_ARGS ?=
# TensorFlow imports 4x slower without bytecode (see docs/ARCHITECTURE.md, "Operations").
export UV_COMPILE_BYTECODE := 1

.PHONY: setup browser-deps run up down status test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

# Debian's chromium for the browser smoke test (Playwright drives it; its own browser download cannot work
# here). Installed only when missing; sudo only when not root.
browser-deps:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	}

run: setup
	$(BIN)/classifly up

up: run

down: setup
	$(BIN)/classifly down

status: setup
	$(BIN)/classifly status

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmarks' baselines (AutoKeras, KerasTuner) come with the `bench` extra, installed only here.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# make bench [ONLY=import,training] [DATASETS=mnist,flowers] [QUICK=1]
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY),) $(if $(DATASETS),--datasets $(DATASETS),) $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
