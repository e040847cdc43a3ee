# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the whole
# suite, what CI runs; `make test-fast` leaves out the tests marked slow). All create and fill
# .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_SPEC := torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test test-fast bench clean-venv postgres-server

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/dse-tune demo --out runs/demo

test: $(BIN)/.installed postgres-server
	$(BIN)/python -m pytest -q tests

# The suite without the end-to-end tests marked `slow` (sweeps, studies, DDP, examples run
# as scripts): under 2 minutes on 2 cores, for the edit-test loop. CI runs `make test`.
# One torch thread: the tests' models are tiny, and two threads per process on 2 busy cores
# spin more than they compute (measured: 102 s of CPU with one thread, 169 s with two).
test-fast: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" tests

# Debian's PostgreSQL server for tests/integrations/optuna/test_postgres.py (the suite starts
# and stops its own cluster). Installed only when missing, only as root with apt-get (about
# 20 s); a failed install never fails `make test`: that test then skips, saying why.
POSTGRES_LOG := /tmp/dse-tune-postgres-install.log
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the PostgreSQL test (log: $(POSTGRES_LOG))"; \
	    ( export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	      apt-get install -y -qq --no-install-recommends postgresql ) >$(POSTGRES_LOG) 2>&1 \
	    || echo "warning: could not install postgresql (see $(POSTGRES_LOG)); its test will skip"; \
	  else \
	    echo "note: no PostgreSQL server and no root apt-get to install it; its test will skip"; \
	  fi; }

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_dse.py

clean-venv:
	rm -rf $(VENV)
