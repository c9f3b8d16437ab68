# The two commands of the README: `make run` starts the service, `make test` runs the tests.
# Both create .venv with the pinned dependencies on first use (exact versions: constraints.txt).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
PORT ?= 8080

.PHONY: run test lint validate bench constraints clean

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

# What CI checks besides the tests: ruff and mypy on cds/ (configured in pyproject.toml), and no function of
# cyclomatic complexity D or worse (over 20) in the modules issue 25 brought down: cards, pipeline, genomics, store.
COMPLEXITY_KEPT = cds/cards cds/pipeline.py cds/fhir/genomics.py cds/store
lint: $(BIN)/.installed
	$(BIN)/ruff check cds
	$(BIN)/mypy
	@complex="$$($(BIN)/radon cc -n D $(COMPLEXITY_KEPT))"; \
	  if [ -n "$$complex" ]; then echo "radon: complexity D or worse (split the function):"; echo "$$complex"; exit 1; fi

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
