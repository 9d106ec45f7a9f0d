# Two commands set everything up on a fresh machine:
#   make train   creates .venv if needed and runs the paper's Atari Pong run (days on a GPU,
#                months on a CPU; the README's quickstart learns CartPole in minutes)
#   make test    creates .venv if needed and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TRAIN_ARGS ?= --configs atari --task pong

.PHONY: venv train test bench clean

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
# The paper's own code, the oracle of tests/test_parity.py; its pinned dependencies
# (atari_py, old gym) no longer install, and the harness needs none of them.
	$(PY) -m pip install --quiet --no-deps dreamerv2==2.2.0
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py $(TRAIN_ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py

# Two workers, one test file each at a time (module fixtures are built once): much of a test's
# time is single-threaded tracing, so two files side by side use both cores.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30 tests

clean:
	rm -rf $(VENV) build *.egg-info
