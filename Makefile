# Two commands set up everything on a fresh machine (Python 3.11+):
#   make demo   -- the default experiment on the embedded offline dataset
#   make test   -- the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo

.PHONY: demo test install benchmark

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m experiments.main --config=configs/default.py --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest tests -q -n 2 --durations=10

benchmark: $(VENV)/.installed
	$(PY) -m benchmarks.round_speed --json=benchmarks/round_speed.json
