# Set-up is implicit: every target below depends on the virtual environment.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch is pinned here (a CPU build installs from local disk); pyproject.toml stays permissive.
TORCH   ?= torch==2.13.0
# the linter/formatter is pinned too: a new ruff release must not turn a clean tree red
RUFF    ?= ruff==0.17.6
SPACE   ?= coatnet.yaml
# timm needs torchvision, whose PyPI build does not import beside the local torch 2.13 CPU file: the timm
# tests get their own venv with a matching torch/torchvision pair (a CUDA build; it runs on CPU).
VENV_TIMM := .venv-timm
STAMP_TIMM := $(VENV_TIMM)/.installed
TIMM_TORCH ?= torch==2.14.1 torchvision==0.29.1
TIMM    ?= timm==1.0.31

.PHONY: install test lint test-main test-timm bench-timm timm search bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]" "$(RUFF)"
	touch $(STAMP)

$(STAMP_TIMM): pyproject.toml Makefile
	$(PY) -m venv $(VENV_TIMM)
	$(VENV_TIMM)/bin/pip install -q --upgrade pip
	$(VENV_TIMM)/bin/pip install -q $(TIMM_TORCH) "$(TIMM)" pyyaml pytest pytest-timeout
	$(VENV_TIMM)/bin/pip install -q --no-deps -e .   # the model code only: no Ray/Optuna stack needed here
	touch $(STAMP_TIMM)

# `make timm`: the timm environment alone, .venv-timm: torch 2.14.1 + torchvision 0.29.1 (a CUDA build of about
# 5.6 GB on disk that also runs on CPU), timm 1.0.31 and coatnas's model code. Use its interpreter, e.g.
# `.venv-timm/bin/python -c "import timm, nas.export.timm_model"` or `.venv-timm/bin/python my_script.py`
# (docs/model.md, "timm interop"). The same set-up `make test-timm` and `make test` run.
timm: $(STAMP_TIMM)

test: lint test-main test-timm

# ruff (configured in pyproject.toml): lint rules and the formatter's layout; `ruff format .` fixes the latter
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-main: $(STAMP)
	$(BIN)/python -m pytest -q

# coatnas vs the real timm: same outputs from the converted weights (tests_timm/)
test-timm: $(STAMP_TIMM)
	$(VENV_TIMM)/bin/python -m pytest -q tests_timm

bench-timm: $(STAMP_TIMM)
	$(VENV_TIMM)/bin/python scripts/bench_timm.py

search: $(STAMP)
	$(BIN)/nas-search --space $(SPACE)

bench: $(STAMP)
	$(BIN)/python scripts/bench_cost.py
	$(BIN)/python scripts/bench_trainer.py
	$(BIN)/python scripts/bench_search.py

clean:
	rm -rf $(VENV) $(VENV_TIMM) runs .pytest_cache
