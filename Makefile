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

.PHONY: install test test-slow lint format bench demo eval clean gpu-check gpu-wheels

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the default suite: fast tests and one full-size model of each family (about 15 min on 2 cores)
test: install
	$(BIN)/pytest -m "not gpu and not slow" -q

# every other full-size model and long run (about 20 min more on 2 cores)
test-slow: install
	$(BIN)/pytest -m "slow and not gpu" -q

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

# `make gpu-check`: every GPU goal measured on a CUDA machine in <= 8 minutes (README, "Checking a GPU
# machine"). It needs no .venv and never installs torch: without one it runs the machine's python3 (whose
# CUDA build of torch it uses); WHEELS=dir installs a `make gpu-wheels` folder privately first (a
# gpu-wheels/ folder here is used by default). CPU_SMOKE=1: the same run on the CPU with tiny sizes.
GPU_CHECK_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_BUDGET ?= 480
CPU_SMOKE ?=
WHEELS ?= $(if $(CPU_SMOKE),,$(wildcard gpu-wheels))

gpu-check:
	@$(GPU_CHECK_PYTHON) benchmarks/gpu_check.py --budget $(GPU_CHECK_BUDGET) $(if $(WHEELS),--wheels $(WHEELS)) $(if $(CPU_SMOKE),--cpu-smoke)

# The wheels gpu-check needs besides torch, for an offline machine: GPU_PYTHON (X.Y) and GPU_CUDA (12 or 13:
# the DALI wheel differs), split into parts of <= 60 MB with a SHA256SUMS list, into GPU_WHEELS.
GPU_PYTHON ?= 3.12
GPU_CUDA ?= 13
GPU_WHEELS ?= gpu-wheels

gpu-wheels: install
	$(BIN)/python benchmarks/gpu_wheels.py download --python $(GPU_PYTHON) --cuda $(GPU_CUDA) --out $(GPU_WHEELS)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
