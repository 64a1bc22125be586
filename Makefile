# Two commands: `make run` (the whole stack on :5000) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps run test lint format unit integration bench chaos clean

deps:
	@bash scripts/bootstrap.sh

run: deps
	@bash scripts/run.sh

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy api workers occ_storage occ_protocol client celeryconfig.py

format: deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: deps
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test: lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The long versions of the reliability catalogue (more repetitions, bigger files); writes
# docs/RELIABILITY.md, one row per scenario.
chaos: deps
	OCC_CHAOS=1 OCC_CHAOS_REPORT=docs/RELIABILITY.md $(PY) -m pytest -p tests.chaos_report \
		tests/integration tests/unit/occ_storage/test_store.py $(PYTEST_ARGS)

bench: deps
	$(PY) bench/store.py
	$(PY) bench/sketch_speed.py
	$(PY) bench/sketch_accuracy.py
	$(PY) bench/api.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache bench/out
