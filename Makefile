# stts — every target sets itself up: `make test` on a fresh clone creates .venv and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch 2.13.0 lies on disk on our machines; asking for it first keeps pip from
# resolving torch itself (which would fetch a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
DEMO_OUT ?= demo_out

.PHONY: install test lint format bench demo eval clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/pytest -m "not gpu" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/stts bench

demo: install
	$(BIN)/stts demo --out $(DEMO_OUT)

EVAL_CKPT ?= $(DEMO_OUT)/runs/stts/model.pt
EVAL_DATA ?= $(DEMO_OUT)/shards
# its own folder beside the checkpoint: the demo's eval/ (its table's source) stays as the demo wrote it
EVAL_OUT ?= $(dir $(EVAL_CKPT))make-eval

eval: install
	@test -f "$(EVAL_CKPT)" || { echo "no checkpoint at $(EVAL_CKPT): run \`make demo\` first, or set EVAL_CKPT=... EVAL_DATA=..."; exit 2; }
	$(BIN)/stts eval --checkpoint $(EVAL_CKPT) --data $(EVAL_DATA) --out $(EVAL_OUT)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
