# Two commands on a fresh machine: `make demo` (secure federation with a straggler: waiting vs CLIP vs
# the ideal fleet, on the embedded digits) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit clean

# torch is pinned to the CPU wheel first, so that resolving the project never pulls CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,data,bench]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m benchmarks.demo --out runs/demo

lint: setup
	$(VENV)/bin/ruff check clipfl transports benchmarks tests

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
