# The commands the README names. Each target creates the virtual environment it needs.
#   make demo   set up, then fit a flow to a built-in 2-D dataset and write demo.png + demo.json
#   make test   set up with the dev extras, then run the test suite (with doctests): everything,
#               as CI runs it
#   make test-fast  the same without the tests marked `integration` (tutorials, benchmarks,
#               subprocess and torchrun runs) or `slow` (long statistical fits), for development
#   make lint   ruff check + ruff format --check
#   make docs   build the documentation site afresh (-E: the catalogue is generated from the
#               registry; warnings are errors) into docs/_build/html
#   make bench  speed benchmarks against Pyro's own transforms
PYTHON ?= python3
VENV ?= .venv
# The torch build to install when the environment has none. Pinned to the version CI tests;
# override with e.g. `make TORCH_SPEC=torch test` to take the newest release.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint format docs bench setup setup-dev setup-docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Each extra is installed once; the stamp files are remade when pyproject.toml changes.
$(VENV)/.setup: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[plot]"
	@touch $@

$(VENV)/.setup-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.setup

$(VENV)/.setup-docs: $(VENV)/.setup-dev
	$(BIN)/pip install --quiet -e ".[docs]"
	@touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev
setup-docs: $(VENV)/.setup-docs

demo: setup
	$(BIN)/python -m pyroflows demo

test: setup-dev
	$(BIN)/python -m pytest

test-fast: setup-dev
	$(BIN)/python -m pytest -m "not integration and not slow"

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: setup-docs
	$(BIN)/python -m sphinx -E -b html -W --keep-going -q docs docs/_build/html
	$(BIN)/python docs/_ext/check_built_docs.py docs/_build/html
	@echo "documentation in docs/_build/html/index.html"

bench: setup-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache demo.png demo.json docs/_build docs/tutorials
