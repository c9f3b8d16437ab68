# The two commands of the README: `make run` starts the service, `make test` runs the tests.
# Both create .venv with the pinned dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test validate bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	CDS_AUTH=off $(BIN)/cds serve

test: $(BIN)/.installed
	$(BIN)/pytest

validate: $(BIN)/.installed
	$(BIN)/cds validate && $(BIN)/cds test

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) var .pytest_cache
