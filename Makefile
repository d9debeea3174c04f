# Two commands set everything up: `make install` then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_CPU_VERSION ?= 2.13.0

.PHONY: install test test-fast lint bench quickstart clean

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# Without an NVIDIA GPU, install the CPU build of torch first (an unpinned torch pulls GBs of CUDA).
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/pip install --quiet "torch==$(TORCH_CPU_VERSION)" \
		|| $(BIN)/pip install --quiet --index-url https://download.pytorch.org/whl/cpu "torch>=2.4"; \
	fi
	$(BIN)/pip install --quiet -e ".[dev,tensorboard]"

# Two workers, each file on one (its module fixtures built once): most tests wait on subprocesses.
test:
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast:
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

lint:
	$(BIN)/ruff check lmtool tests scripts
	$(BIN)/ruff format --check lmtool tests scripts
	@if command -v shellcheck >/dev/null 2>&1; then shellcheck scripts/slurm/*.sbatch; \
	else echo "shellcheck not installed: the SLURM scripts were not checked (apt install shellcheck)" >&2; fi

bench:
	@for script in scripts/bench_*.py; do \
		[ -e "$$script" ] || continue; \
		echo "== $$script" >&2; $(BIN)/python "$$script" || exit 1; \
	done

quickstart:
	$(BIN)/lmtool pretrain configs/quickstart.yaml
	$(BIN)/lmtool generate --model runs/quickstart/final --seed 0 "Return the" "This module"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs data/processed
