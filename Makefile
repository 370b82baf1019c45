# Two commands set up everything on a fresh machine (Python 3.11+):
#   make demo   -- the default experiment on the embedded offline dataset
#   make test   -- lint (ruff.toml), then the test suite (make quick: the fast tests only)
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

test: lint
	$(PY) -m pytest tests -q -n 2 --durations=10

quick: $(VENV)/.installed
	$(PY) -m pytest tests -q -n 2 -m "not slow"

benchmark: $(VENV)/.installed
	$(PY) -m benchmarks.round_speed --json=benchmarks/round_speed.json
