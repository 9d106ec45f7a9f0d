# Two commands set everything up on a fresh machine:
#   make train   creates .venv if needed and runs the main job
#   make test    creates .venv if needed and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRAIN_ARGS ?= --configs atari --task pong

.PHONY: venv train test bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py $(TRAIN_ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
