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

.PHONY: demo test bench clean-venv postgres-server

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
