# The two commands a new user needs: `make serve` and `make test`.
# Both create .venv (if missing) and install the project from its own files.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: serve test lint install install-dev clean bench bench-profile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed-core

install: $(VENV)/.installed-core

install-dev: $(VENV)/.installed-dev

## Run the server on the embedded default (bundled models) at http://127.0.0.1:8000
serve: install
	$(BIN)/mlgate serve $(ARGS)

## Lint (ruff, mypy), then run the whole test suite
# The suite runs on the embedded default (SQLite); the HTTP tests run again on
# PostgreSQL (the auth, database and device tests cover both in the first pass already).
test: install-dev lint
	$(BIN)/pytest $(PYTEST_ARGS)
	MLGATE_TEST_DATABASE=postgresql $(BIN)/pytest tests/api tests/ratelimit/test_http_limits.py $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	MYPYPATH=bench $(BIN)/mypy --explicit-package-bases bench/run.py bench/benchkit

## Benchmark against MLServer and a bare-ASGI ceiling (needs Debian's wrk; see bench/README.md).
# Not part of `make test` or CI: it takes ~10 minutes and wants the machine to itself.
bench: install
	$(BIN)/python bench/run.py $(ARGS)

## py-spy on mlgate under load (W1, W2): profiles and top functions under bench/results/
bench-profile: install
	bench/profile.sh $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
