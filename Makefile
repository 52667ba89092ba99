# Two commands for a fresh machine: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint typecheck check-install bench clean

$(BIN)/lookup-server: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=68" wheel
	$(BIN)/pip install --quiet -e ".[all,test]"
	touch $@

## Install and serve the built-in demo on http://127.0.0.1:8080/livelookup/demo
serve: $(BIN)/lookup-server
	$(BIN)/lookup-server serve

## Install, lint and type check, then run the whole test suite
test: lint typecheck
	$(BIN)/pytest

## Install and check the code and its formatting with ruff (no file is changed)
lint: $(BIN)/lookup-server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Install and type check lookup_server, plugins, tests and bench with mypy (pyproject.toml)
typecheck: $(BIN)/lookup-server
	$(BIN)/mypy

## A non-editable install into a fresh venv finds its schemas, demo and plugins
check-install:
	bash .ci/check-install

bench: $(BIN)/lookup-server
	$(BIN)/python bench/bench_csv.py

clean:
	rm -rf $(VENV) build *.egg-info
