# The README's two commands: `make demo` and `make test`. Both run the idempotent set-up first
# (scripts/setup.sh: .venv with torch, torchvision, detectron2 and luminet_det).
PY := .venv/bin/python
PYTEST_ARGS ?= -q
# one test worker per core, at most 4 (pytest-xdist; each worker computes on one thread);
# PYTEST_WORKERS=0 runs the tests in this process
PYTEST_WORKERS ?= auto

.PHONY: setup demo test bench lint format clean-env

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) --maxprocesses 4 $(PYTEST_ARGS) tests

bench: setup
	$(PY) benchmarks/run.py

lint: setup
	$(PY) -m black --check luminet_det tools tests benchmarks datasets setup.py
	$(PY) -m isort --check-only luminet_det tools tests benchmarks datasets setup.py

format: setup
	$(PY) -m isort luminet_det tools tests benchmarks datasets setup.py
	$(PY) -m black luminet_det tools tests benchmarks datasets setup.py

clean-env:
	rm -rf .venv
