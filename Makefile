# Two commands: `make run` (the whole stack on :5000) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps run test test-s3 lint format unit integration bench bench-smoke chaos clean

# One throw-away Ceph RGW (scripts/ceph.sh; installs ceph-mon/ceph-osd/radosgw if missing) for the
# whole pytest run: the S3 node tests use it through CEPH_DIR, and it is stopped afterwards.
define with_ceph
	@ceph_dir=$$(mktemp -d /tmp/occ-ceph.XXXXXX); \
	trap 'bash scripts/ceph.sh stop '"$$ceph_dir"' >/dev/null; rm -rf '"$$ceph_dir" EXIT; \
	bash scripts/ceph.sh start "$$ceph_dir" >/dev/null && CEPH_DIR="$$ceph_dir" $(1)
endef

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
	$(call with_ceph,$(PY) -m pytest tests $(PYTEST_ARGS))

test-s3: deps
	$(call with_ceph,$(PY) -m pytest tests/integration/test_s3_nodes.py tests/integration/test_s3_gateway.py tests/integration/test_s3_two_hosts.py tests/unit/occ_storage/test_s3node.py tests/unit/workers/test_nodes_config.py $(PYTEST_ARGS))

# The long versions of the reliability catalogue (more repetitions, bigger files); writes
# docs/RELIABILITY.md, one row per scenario.
chaos: deps
	$(call with_ceph,OCC_CHAOS=1 OCC_CHAOS_REPORT=docs/RELIABILITY.md $(PY) -m pytest \
		-p tests.chaos_report tests/integration tests/unit/occ_storage/test_store.py $(PYTEST_ARGS))

# The whole gateway on a real stack against the limits measured in the same run (bench/suite.py:
# table on stdout, progress on stderr, bench/results/latest.json, table into bench/README.md),
# then the chunk store alone and the sketch accuracy. Under 15 minutes on the 2-core machine.
bench: deps
	@command -v wrk >/dev/null || apt-get install -y wrk >/dev/null 2>&1 || \
		(apt-get update >/dev/null 2>&1 && apt-get install -y wrk >/dev/null 2>&1) || \
		echo "wrk not installable: bench/suite.py falls back to a Python load generator"
	$(PY) bench/suite.py --profile --readme bench/README.md
	-$(PY) bench/store.py  # exits 1 on a FAIL verdict: shown, not fatal
	OPENBLAS_NUM_THREADS=1 $(PY) bench/sketch_accuracy.py

# Seconds: tiny sizes, one-second load runs (what tests/integration/test_bench_smoke.py runs).
bench-smoke: deps
	BENCH_SMOKE=1 $(PY) bench/suite.py --out bench/results/smoke.json

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache bench/out
