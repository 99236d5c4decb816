# The two set-up commands of the README: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.base-stamp
DEV := $(VENV)/.dev-stamp

.PHONY: install install-dev demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BASE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BASE) $@

install: $(BASE)

install-dev: $(DEV)

demo: install
	$(BIN)/curata demo --out demo-out

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python benchmarks/bench_text_dups.py
	$(BIN)/python benchmarks/bench_image_dups.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_pii.py
	$(BIN)/python benchmarks/bench_label_issues.py
	$(BIN)/python benchmarks/bench_label_issues_e2e.py
	$(BIN)/python benchmarks/bench_semantic_dups.py
	$(BIN)/python benchmarks/bench_ssl.py
	$(BIN)/python benchmarks/bench_scale.py --with-ray
	$(BIN)/python -m pip install -q -e '.[bench]' && $(BIN)/python benchmarks/bench_datatrove.py

clean:
	rm -rf demo-out .curata benchmarks/results
