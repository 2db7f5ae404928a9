# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-peers crash clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/streaming_progress.py
	@echo
	$(BIN)/python examples/resume_after_crash.py
	@echo
	$(BIN)/python examples/hpc_campaign.py

lint: $(STAMP)
	$(BIN)/ruff check stepgraph tests examples bench
	$(BIN)/ruff format --check stepgraph tests examples bench
	$(BIN)/mypy --strict stepgraph

test: lint
	$(BIN)/python -m pytest --tb=short; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status

bench: $(STAMP)
	$(BIN)/python -m bench

bench-peers: $(STAMP)
	$(BIN)/python -m bench.peers

crash: $(STAMP)
	$(BIN)/python -m tests.crash 1000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
