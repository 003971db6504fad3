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
#   make tutorials       the tutorials' sources are tutorials/*.py (jupytext percent format):
#                        copy their cells into the paired tutorials/*.ipynb, then execute the
#                        notebooks in full so their stored outputs are those of a full run
#                        (tens of minutes; NOTEBOOKS=tutorials/flow_vi.ipynb runs just one)
#   make sync-tutorials  only copy the cells of tutorials/*.py into the notebooks, keeping
#                        their outputs (enough for an edit to the prose); see CONTRIBUTING.md
PYTHON ?= python3
VENV ?= .venv
# The torch build to install when the environment has none. Pinned to the version CI tests;
# override with e.g. `make TORCH_SPEC=torch test` to take the newest release.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

# The notebooks `make tutorials` executes.
NOTEBOOKS ?= $(wildcard tutorials/*.ipynb)

.PHONY: demo test test-fast lint format docs bench tutorials sync-tutorials setup setup-dev \
	setup-docs setup-tutorials clean

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

$(VENV)/.setup-tutorials: $(VENV)/.setup-dev
	$(BIN)/pip install --quiet -e ".[tutorials]"
	@touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev
setup-docs: $(VENV)/.setup-docs
setup-tutorials: $(VENV)/.setup-tutorials

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

# --update keeps each notebook's outputs and metadata and replaces its cells by the .py's
sync-tutorials: setup-tutorials
	$(BIN)/jupytext --update --to ipynb tutorials/*.py

tutorials: sync-tutorials
	OMP_NUM_THREADS=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=1200 $(NOTEBOOKS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache demo.png demo.json docs/_build docs/tutorials
