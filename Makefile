# Set-up is implicit: every target below depends on the virtual environment.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch is pinned here (a CPU build installs from local disk); pyproject.toml stays permissive.
TORCH   ?= torch==2.13.0
SPACE   ?= coatnet.yaml

.PHONY: install test search bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

search: $(STAMP)
	$(BIN)/nas-search --space $(SPACE)

bench: $(STAMP)
	$(BIN)/python scripts/bench_cost.py
	$(BIN)/python scripts/bench_trainer.py
	$(BIN)/python scripts/bench_search.py

clean:
	rm -rf $(VENV) runs .pytest_cache
