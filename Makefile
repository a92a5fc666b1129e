# keepcurrent: `make demo` runs the main job, `make test` passes the tests. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Demo state lives apart from your own KC_HOME unless you set DEMO_HOME.
DEMO_HOME ?= var/demo
DEMO_DOCS ?= data/python-docs/whatsnew

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on this machine class's disk (see pyproject.toml)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	@if [ -n "$(FRESH)" ]; then rm -rf "$(DEMO_HOME)"; fi
	KC_HOME=$(DEMO_HOME) $(PY) -m indexer ingest $(DEMO_DOCS)
	KC_HOME=$(DEMO_HOME) $(PY) -m indexer stats
	@for q in "What are template string literals?" "PEP 810 explicit lazy imports" \
	          "How can a debugger attach to a running Python process?"; do \
	  echo; echo "== search: $$q"; \
	  KC_HOME=$(DEMO_HOME) $(PY) -m indexer search "$$q" -k 3 || exit 1; \
	done

# The whole suite, slow and integration tests included (CI runs exactly this).
test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not integration"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy core indexer

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/recall.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
