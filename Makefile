# relaygate: `make run` compiles the example campus, `make test` runs every check.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
AS_OF ?= 2026-11-29
OUT ?= build/relay
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit validate bench fuzz clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,deploy]'
	touch $(STAMP)

# The example inventory is a snapshot: it is checked as of its export day (AS_OF).
run: $(STAMP)
	$(BIN)/relaygate validate --inventory inventory --as-of $(AS_OF)
	$(BIN)/relaygate compile --inventory inventory --as-of $(AS_OF) --out $(OUT)

validate: run

lint: $(STAMP)
	$(BIN)/ruff check compiler tests benchmarks playbooks
	$(BIN)/ruff format --check compiler tests benchmarks playbooks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

FUZZ_SECONDS ?= 60

fuzz: $(STAMP)
	$(BIN)/python tests/fuzz_target.py --seconds $(FUZZ_SECONDS)

bench: $(STAMP)
	$(BIN)/python benchmarks/validate.py
	$(BIN)/python benchmarks/compile.py
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
