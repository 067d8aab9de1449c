# relaygate: `make run` compiles the example campus, `make test` runs every check.
# Any Python from 3.11 to 3.13: the first of these that exists and fits.
SUPPORTED := python3 python3.13 python3.12 python3.11
fits = $(shell command -v $(1) >/dev/null 2>&1 && $(1) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null && echo $(1))
PYTHON ?= $(firstword $(foreach p,$(SUPPORTED),$(call fits,$(p))))
VENV ?= .venv
BIN := $(VENV)/bin
AS_OF ?= 2026-11-29
OUT ?= build/relay
STAMP := $(VENV)/.installed

.PHONY: run test fast lint typecheck unit validate bench fuzz clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python 3.11, 3.12 or 3.13 (python3 or python3.1x on PATH)"; exit 2; }
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

# The suite runs on every core (pytest-xdist; PYTEST_WORKERS=0 for one process), a whole
# file per worker: a file's lab or running Postfix is built once and its tests run in order.
# The slowest files go first (tests/conftest.py, SLOW_FIRST), so the workers end together.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_PARALLEL)

test: lint typecheck unit

# The inner loop: lint, types and every test that needs no root, Postfix, nft or Ansible.
fast: lint typecheck
	$(BIN)/pytest -m "not integration" -q $(PYTEST_PARALLEL)

FUZZ_SECONDS ?= 60

fuzz: $(STAMP)
	$(BIN)/python tests/fuzz_target.py --seconds $(FUZZ_SECONDS)

bench: $(STAMP)
	$(BIN)/python benchmarks/validate.py
	$(BIN)/python benchmarks/compile.py
	$(BIN)/python benchmarks/plan.py --clock cpu
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/revoke.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
