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

DEMO_ENV := P2P_LOCAL_HOME=$(DEMO_HOME) P2P_LOCAL_PASSPHRASE=$(DEMO_PASSPHRASE)

demo: install
	$(DEMO_ENV) $(CLI) models fetch
	$(DEMO_ENV) $(CLI) users | grep -qx demo || $(DEMO_ENV) $(CLI) init --user demo
	$(DEMO_ENV) $(CLI) ingest --user demo p2p_local/data/sample_history.jsonl
	$(DEMO_ENV) $(CLI) history count --user demo
	$(DEMO_ENV) $(CLI) chat --user demo --max-tokens 64 --once "In one sentence, what is the capital of France?"

test: install-test
	$(VENV)/bin/ruff check p2p_local cli tests benchmarks
	$(PY) -m pytest -q -rs --durations=15
