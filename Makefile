# gristmill developer tasks. `make help` lists them; CI (.ci/run) calls the same targets.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rebuild the extension only when the Rust side or the packaging changed; Python sources
# are installed editable, so edits to python/gristmill need no rebuild.
RUST_INPUTS := $(shell find src -name '*.rs' 2>/dev/null) Cargo.toml $(wildcard Cargo.lock) pyproject.toml
STAMP := $(VENV)/.gristmill-built
# pyo3 links libpython for `cargo test`; point it at the venv's interpreter.
PYO3_ENV := PYO3_PYTHON=$(abspath $(BIN)/python) \
	LD_LIBRARY_PATH=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}

.DEFAULT_GOAL := help
.PHONY: run-asgi help install build run test test-python test-rust test-matrix lint fmt docs bench clean

help: ## Show this list
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "%-12s %s\n", $$1":", $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip 'maturin>=1.5,<2'

$(STAMP): $(BIN)/python $(RUST_INPUTS)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --extras test,dev,yaml,frameworks
	@touch $@

install: $(STAMP) ## Create .venv and build gristmill into it (debug, editable); quick when nothing changed

build: $(BIN)/python ## Rebuild the Rust extension (debug) into .venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --extras test,dev,yaml,frameworks
	@touch $(STAMP)

run: install ## Serve examples/hello.py on http://127.0.0.1:8000
	$(BIN)/gristmill examples/hello.py --host 127.0.0.1 --port 8000

run-asgi: install ## Serve the ASGI chat example (WebSocket at /ws) on http://127.0.0.1:8000
	$(BIN)/gristmill examples/chat.py:app --host 127.0.0.1 --port 8000

# Rust first, pytest last: CI reads the closing line of the last test runner.
test: test-rust test-python ## Run the Rust unit tests and the Python end-to-end tests

test-python: install
	$(BIN)/pytest

test-rust: install
	$(PYO3_ENV) cargo test --lib

test-matrix: install ## Build the abi3 wheel once, run core + framework tests on Python 3.10-3.13
	bash scripts/test_matrix.sh

# stubtest finds the stub through MYPYPATH: without it mypy does not see the editable
# install (no py.typed) and stubtest passes having checked nothing.
lint: install ## cargo fmt --check, clippy -D warnings, ruff, _core.pyi vs the built core (stubtest), docs current
	cargo fmt --check
	$(PYO3_ENV) cargo clippy --all-targets -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPYPATH=python $(BIN)/python -m mypy.stubtest gristmill._core
	$(BIN)/python scripts/gen_settings_doc.py --check

fmt: install ## Format Rust and Python sources, fix what ruff can
	cargo fmt
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: ## Regenerate docs/settings.md and the README settings table from the schema
	$(PY) scripts/gen_settings_doc.py

bench: install ## Run the benchmarks (FULL=1 for the long run; MODE=access-log or MODE=rss)
	$(if $(FULL),FULL=$(FULL) )$(if $(MODE),MODE=$(MODE) )$(if $(RSS_REQUESTS),RSS_REQUESTS=$(RSS_REQUESTS) )bash bench/bench.sh

clean: ## Remove .venv, .venv-matrix, build output and caches
	rm -rf $(VENV) .venv-matrix target dist build .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
	rm -f python/gristmill/_core*.so
