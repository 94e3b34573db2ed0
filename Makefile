# One virtualenv for everything; every target creates it when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo check-demo test lint fmt bench serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

## The real bot against a local Slack in your browser: prints the URL; Ctrl-C stops everything.
demo: $(STAMP)
	$(BIN)/gonogo playground

## The CLI on the offline example gate (starts the tiny local HTTP service it ships).
check-demo: $(STAMP)
	$(BIN)/python examples/demo.py

## The test suite (real Redis, real Prometheus when installed, the Slack stand-in).
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/cli_start.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/ack_latency.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/repost_window.py
	$(BIN)/python bench/reminders.py

serve: $(STAMP)
	$(BIN)/gonogo serve

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
