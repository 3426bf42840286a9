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
# llama.cpp is compiled for a portable x86-64 (AVX2) CPU instead of -march=native: on CPUs
# with AMX (Sapphire Rapids and newer) a native build repacks Q4 weights for AMX and crashes
# (SIGSEGV in decode). Override LLAMA_CMAKE_ARGS to build for your own CPU.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
BUILD_ENV := CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)"

.PHONY: install install-test demo test lint

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(BUILD_ENV) $(PIP) install --quiet -c constraints.txt -e .

install-test: $(PY)
	$(BUILD_ENV) $(PIP) install --quiet -c constraints.txt -e '.[test]'

DEMO_ENV := P2P_LOCAL_HOME=$(DEMO_HOME) P2P_LOCAL_PASSPHRASE=$(DEMO_PASSPHRASE)

# The demo's chat is greedy (--temperature 0), so its reply does not change from run to run.
demo: install
	$(DEMO_ENV) $(CLI) models fetch
	$(DEMO_ENV) $(CLI) users | grep -qx demo || $(DEMO_ENV) $(CLI) init --user demo
	$(DEMO_ENV) $(CLI) ingest --user demo p2p_local/data/sample_history.jsonl
	$(DEMO_ENV) $(CLI) history stats --user demo
	$(DEMO_ENV) $(CLI) chat --user demo --max-tokens 64 --temperature 0 --once "Name the capital city of France."

test: install-test
	$(VENV)/bin/ruff check p2p_local cli tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -rs --durations=15
