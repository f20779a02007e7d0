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

.PHONY: install test test-all lint format bench demo clean

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
	$(BIN)/python benchmarks/bench_shard.py
	$(BIN)/python benchmarks/bench_inference.py

demo: install
	$(BIN)/stts shard --src synthetic --out $(DEMO_OUT)/shards --overwrite

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
