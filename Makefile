# tradevet — two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tradevet needs Python >= 3.11 (got %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,postgres]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## replay the embedded synthetic market through the whole pipeline, print the scorecard
	$(BIN)/tradevet paper --fresh

test: $(STAMP)  ## the full test suite (what .ci/run runs)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadfile

test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow"

bench: $(STAMP)  ## benchmarks: figures printed and written to bench/results/
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) *.egg-info tradevet.db tradevet.db-wal tradevet.db-shm tradevet.db-lock
