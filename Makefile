# recsys: the two set-up commands are `make train` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recsys-installed
KERNEL_SOURCES := $(wildcard kernels/csrc/*.cpp kernels/csrc/*.h kernels/csrc/*.inc kernels/build.py)

.PHONY: install train test lint bench clean

install: $(STAMP)

# The venv is rebuilt from pinned files; torchrec goes in with --no-deps (its metadata asks for the
# CUDA fbgemm-gpu wheel). The project is installed editable without build isolation so the C++
# kernels build against this venv's torch instead of a second torch pulled into an isolated env.
$(STAMP): requirements/cpu.txt requirements/dev.txt pyproject.toml setup.py $(KERNEL_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/cpu.txt -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps torchrec==1.8.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Main job on the built-in default (synthetic Criteo-shaped data; nothing to download).
train: install
	$(VENV)/bin/recsys-train $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

# Benchmarks print tables and write JSON to benchmarks/results/ (numbers go to docs/benchmarks.md).
# Run them on a quiet machine; they are never part of `make test`.
bench: install
	$(PY) -m benchmarks.train_throughput --profile
	$(PY) -m benchmarks.embedding_backward
	$(PY) -m benchmarks.interaction
	$(PY) -m benchmarks.embedding_bag
	$(PY) -m benchmarks.prefetch_policy
	$(PY) -m benchmarks.data_throughput
	$(PY) -m benchmarks.quality
	$(PY) benchmarks/preprocess.py
	mkdir -p build && $(CC) -O2 -march=native benchmarks/memory_probes.c -o build/memory_probes
	build/memory_probes --json benchmarks/results/memory_probes.json

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
