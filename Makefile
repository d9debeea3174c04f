# Two commands set everything up: `make install` then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_CPU_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install test test-fast test-min lint bench quickstart clean

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# Without an NVIDIA GPU the CPU build of torch goes in first, never the CUDA one (GBs of nvidia-* wheels):
	@# the +cpu local version where pip finds it (a local wheelhouse), else from the PyTorch CPU index.
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/pip install "torch==$(TORCH_CPU_VERSION)+cpu" \
		|| $(BIN)/pip install --index-url $(TORCH_CPU_INDEX) "torch==$(TORCH_CPU_VERSION)+cpu"; \
	fi
	$(BIN)/pip install --quiet -e ".[dev,tensorboard,report]"
	@# Fails loudly when the torch build does not match the machine (CUDA without a GPU, or the reverse).
	$(BIN)/python scripts/check_torch_build.py

# Two workers, each file on one (its module fixtures built once): most tests wait on subprocesses.
test:
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast:
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# The tests of the code that calls version-dependent APIs (activation checkpointing, torch.compile, fused
# AdamW, FSDP2, peft LoRA, datasets features and loading), in a separate venv holding the LOWEST versions
# pyproject.toml allows (scripts/min_versions.py pins each floor): a floor below an API's first release fails.
VENV_MIN ?= .venv-min
MIN_TESTS := tests/test_version_apis.py tests/test_train_step.py tests/test_models.py::test_gradient_checkpointing_raises_no_library_warning \
	tests/test_fsdp.py tests/test_finetune_lora.py tests/test_qa.py tests/test_train_engine.py tests/test_preprocess.py
test-min:
	test -x $(VENV_MIN)/bin/python || $(PYTHON) -m venv $(VENV_MIN)
	$(PYTHON) scripts/min_versions.py --extras lora > $(VENV_MIN)/constraints.txt
	$(VENV_MIN)/bin/pip install --quiet --constraint $(VENV_MIN)/constraints.txt -e ".[lora]" "pytest>=8,<10" "pytest-xdist>=3.6,<4"
	$(VENV_MIN)/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow" $(MIN_TESTS)

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
	@echo "plots and summary of the run:" >&2
	$(BIN)/lmtool report runs/quickstart

clean:
	rm -rf $(VENV) $(VENV_MIN) build *.egg-info .pytest_cache .ruff_cache runs data/processed
