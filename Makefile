# The two commands of the README: `make demo` and `make test`. Everything else they need
# (the virtualenv, the project with its test extras, Kafka's jars, PostgreSQL) is set up on the way.
PYTHON ?= python3
VENV   := .venv
# pytest-xdist workers: most tests wait on Kafka, PostgreSQL or a subprocess, so several run at once
TEST_WORKERS ?= 3
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: demo test lint faults-cluster bench install clean

demo: $(STAMP)
	$(VENV)/bin/events demo

test: lint
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS)

# the static checks `make test` runs first: ruff (lint, import order), then mypy (configured in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# every fault scenario of the local three-broker cluster (`make test` runs a bounded subset of them)
faults-cluster: $(STAMP)
	$(VENV)/bin/python -m pytest -m cluster

# `make bench BENCH_ARGS=--quick` for a one-minute smoke run; `python -m bench --help` for the rest
bench: $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
