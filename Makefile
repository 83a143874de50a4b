# Quick start: `make demo` then `make test`. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= data/scenarios/support_chat.yaml
# A monthly budget and a prepaid balance (the scenario's currency) so the report shows P(over budget) and run-out.
DEMO_ARGS ?= --budget 5000 --balance 20000

.PHONY: demo test lint install install-test focus-validator bench notebooks clean

# setuptools announces every editable install with an "Editable installation" notice (information, not a
# problem); it is silenced so that a first `make demo` reads as what it is, a success.
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet --disable-pip-version-check

$(BIN)/python:
	@echo "creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "installing kimiplan and its dependencies into $(VENV) (the first time takes a minute)"
	@$(PIP) -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	@echo "installing the test extras into $(VENV)"
	@$(PIP) -e ".[test,bench]"
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## demo: the main job on the bundled example scenario -> report.html
demo: install
	@echo "writing the report for $(SCENARIO) (about 20 s)"
	@$(BIN)/kimiplan report $(SCENARIO) -o report.html $(DEMO_ARGS)

## focus-validator: the official FOCUS validator in .venv-focus (Python 3.12+ from PATH or pyenv; none: a notice)
focus-validator:
	@tools/focus_validator_env.sh

## test: the whole suite, notebooks included (nbval compares their outputs)
test: install-test lint focus-validator
	$(BIN)/python -m pytest tests notebooks --nbval -q

## lint: ruff (lint and format check, line length 120); the layer order is a test (tests/test_architecture.py)
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: speed benchmarks (ratios against references measured in the same run)
bench: install-test
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## notebooks: rebuild every notebook from its percent-format source notebooks/src/NAME.py (jupytext) and execute it,
## so the stored outputs are fresh. One notebook: `make notebooks/02_quota_sizing.ipynb`.
notebooks: install-test
	$(BIN)/python tools/build_notebook.py

notebooks/%.ipynb: notebooks/src/%.py install-test
	$(BIN)/python tools/build_notebook.py $<

clean:
	rm -rf $(VENV) .venv-focus build dist *.egg-info report.html
