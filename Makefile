# The two commands of the README: `make run` starts the service, `make test` runs the tests.
# Both create .venv with the pinned dependencies on first use (exact versions: constraints.txt).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PORT ?= 8080

.PHONY: run test validate bench constraints clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	$(BIN)/python -m compileall -q cds   # an editable install compiles nothing; an installed wheel is compiled
	touch $@

run: $(BIN)/.installed
	CDS_AUTH=off $(BIN)/cds serve --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/pytest

validate: $(BIN)/.installed
	$(BIN)/cds validate && $(BIN)/cds test

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_engine.py

# After changing a dependency in pyproject.toml: resolve afresh in a scratch venv and record every
# exact version (the lock that `make`, Docker and CI install with).
constraints:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet '.[test,bench,s3]'
	{ echo "# Exact versions of every dependency (make constraints regenerates it from pyproject.toml)."; \
	  .venv-lock/bin/pip freeze --all | grep -v -i '^pgx-cds'; } > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) var .pytest_cache
