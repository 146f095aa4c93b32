# robust_jax: the two commands of the README, plus helpers.
#   make demo   install into .venv, make sure Fashion-MNIST is here, run the default experiment
#   make test   install into .venv (with test tools), make sure Fashion-MNIST is here, run all tests
# Variables: PYTHON (interpreter for the venv), ARGS (extra launch.py flags), DATA_CHECK=0 (skip
# the Fashion-MNIST check, e.g. with --config.data.source_dir), PYTEST_ARGS, TEST_WORKERS (pytest
# processes side by side: 2 keeps both cores of a 2-core machine busy while one compiles).

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
DATA_CHECK ?= 1
PIP = $(VENV)/bin/pip --disable-pip-version-check -q

.PHONY: demo test test-fast lint data install install-dev clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PIP) install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

data:
ifeq ($(DATA_CHECK),1)
	bash scripts/ensure_fashion_mnist.sh
endif

demo: install data
	$(VENV)/bin/python launch.py $(ARGS)

test: install-dev data lint
	$(VENV)/bin/python -m pytest tests -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: install-dev data
	$(VENV)/bin/python -m pytest tests -m "not slow" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) workdirs .pytest_cache .ruff_cache
