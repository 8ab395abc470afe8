# The two commands of the README: `make demo` and `make test`. Everything else they need
# (the virtualenv, the project with its test extras, Kafka's jars, PostgreSQL) is set up on the way.
PYTHON ?= python3
VENV   := .venv
# pytest-xdist workers: most tests wait on Kafka, PostgreSQL or a subprocess, so several run at once
TEST_WORKERS ?= 3
# the exact versions installed (pyproject.toml has the ranges); `make lock` refreshes them
CONSTRAINTS := constraints.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | sha256sum | cut -c1-12)

.PHONY: demo test lint faults-cluster bench install lock clean

demo: $(STAMP)
	$(VENV)/bin/events demo

test: lint
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --maxschedchunk 1

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

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# the newest versions pyproject.toml allows, resolved in a scratch virtualenv, become the constraints
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q '.[test]'
	{ sed -n '/^#/p' $(CONSTRAINTS); .lock-venv/bin/python -m pip freeze --exclude dify-events; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
