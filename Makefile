# Two commands set up everything on a fresh machine (Python 3.11+):
#   make demo   -- the default experiment on the embedded offline dataset
#   make test   -- lint (ruff, mypy), then the test suite (make quick: the fast tests only)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo

.PHONY: demo test quick lint install benchmark

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m experiments.main --config=configs/default.py --workdir=$(WORKDIR)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest tests -q -n 2 --durations=10

quick: $(VENV)/.installed
	$(PY) -m pytest tests -q -n 2 -m "not slow"

# The seed workload's round against the plain loop; the JSON goes where BENCH_JSON says.
# A new file each run: an earlier result is never overwritten.
BENCH_JSON ?= runs/benchmarks/round_speed_$(shell date +%Y%m%d_%H%M%S).json
benchmark: $(VENV)/.installed
	mkdir -p $(dir $(BENCH_JSON))
	$(PY) -m benchmarks.round_speed --json=$(BENCH_JSON)
