# Two commands on a fresh machine: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-postgres bench bench-postgres lint format screenshot clean clean-data

install: $(STAMP)

PY_OK := import sys; sys.exit(sys.version_info < (3, 11))

$(STAMP): requirements.txt
	@$(PYTHON) -c '$(PY_OK)' || { echo "Python 3.11 or newer is needed; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.12"; exit 1; }
	@test -x $(PY) && $(PY) -c '$(PY_OK)' 2>/dev/null || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

run: install
	$(PY) -m fraudsite.launcher

test: install
	$(PY) -m pytest

# The same suite on PostgreSQL (the machine's server; the test database is created
# and dropped by the run). Override POSTGRES_URL for another server.
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres
test-postgres: install
	DATABASE_URL=$(POSTGRES_URL) $(PY) -m pytest

# Benchmarks run on scratch databases under var/, never on the live one.
BENCH_ENV = DEBUG=1 DATABASE_URL=sqlite:///$(CURDIR)/var/bench_$(1).sqlite3
bench: install
	rm -f var/bench_*.sqlite3*
	$(call BENCH_ENV,scoring) $(PY) manage.py migrate -v0
	$(call BENCH_ENV,scoring) $(PY) manage.py bench_scoring
	# bench_stream makes its own scratch databases, broker and consumer processes.
	$(call BENCH_ENV,stream) $(PY) manage.py bench_stream
	$(call BENCH_ENV,dashboard) $(PY) manage.py migrate -v0
	$(call BENCH_ENV,dashboard) $(PY) manage.py seed_transactions --count 1000000
	$(call BENCH_ENV,dashboard) $(PY) manage.py bench_dashboard

# The stream benchmark on the machine's PostgreSQL (scratch databases on the server).
bench-postgres: install
	DEBUG=1 DATABASE_URL=$(POSTGRES_URL) $(PY) manage.py bench_stream

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

screenshot: install
	SCREENSHOT_PATH=$(CURDIR)/docs/dashboard.png $(PY) -m pytest tests/dashboard/test_browser.py -k screenshot

# The virtual environment only: var/ holds the ledger (models included) and the
# admin password, which `make clean-data` removes, on purpose only.
clean:
	rm -rf $(VENV)

clean-data:
	rm -f var/*.sqlite3*
