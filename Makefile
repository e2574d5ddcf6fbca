# `make test` and `make demo` work from a fresh clone: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
DEMO_ARGS ?=  # e.g. make demo DEMO_ARGS=--fast

.PHONY: install test test-fast lint demo benchmarks clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# All tests, slow ones included (CI runs this); two workers for the two cores.
test: lint
	$(VENV)/bin/pytest -n 2 --durations=15 $(PYTEST_ARGS)

# The quick loop while developing.
test-fast: lint
	$(VENV)/bin/pytest -n 2 -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m lit_xai.demo $(DEMO_ARGS)

benchmarks: $(STAMP)
	$(PY) benchmarks/masking_speed.py

clean:
	rm -rf outputs lightning_logs wandb .pytest_cache .ruff_cache
