# The two set-up commands (see README):
#   make demo   - install, fetch the default models, ingest a sample history, chat
#   make test   - install the test tools and run the whole test suite
# Both create or refresh ./.venv themselves.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
CLI    := $(VENV)/bin/p2p-local
DEMO_HOME ?= $(CURDIR)/.demo-home
DEMO_PASSPHRASE ?= demo-passphrase-change-me

.PHONY: install install-test demo test lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install --quiet -c constraints.txt -e .

install-test: $(PY)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install --quiet -c constraints.txt -e '.[test]'

demo: install
	P2P_LOCAL_HOME=$(DEMO_HOME) P2P_LOCAL_PASSPHRASE=$(DEMO_PASSPHRASE) $(PY) -m p2p_local.demo

test: install-test
	$(VENV)/bin/ruff check p2p_local cli tests benchmarks
	$(PY) -m pytest -q -rs --durations=15
