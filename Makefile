# Quick start: `make demo` then `make test`. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= data/scenarios/support_chat.yaml

.PHONY: demo test install install-test bench notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## demo: the main job on the bundled example scenario -> report.html
demo: install
	$(BIN)/kimiplan report $(SCENARIO) -o report.html

## test: the whole suite, notebooks included (nbval compares their outputs)
test: install-test
	$(BIN)/python -m pytest tests notebooks --nbval -q

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
	rm -rf $(VENV) build dist *.egg-info report.html
