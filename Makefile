# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create and fill .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_SPEC := torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test bench clean-venv

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/dse-tune demo --out runs/demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_dse.py

clean-venv:
	rm -rf $(VENV)
