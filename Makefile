# One venv in .venv; every target that runs code installs first (idempotent).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench clean test-browser

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python requirements.in requirements.lock
	$(BIN)/pip install -q -r requirements.in -c requirements.lock
	touch $(STAMP)

install: $(STAMP)

# Options for `manage.py up`, e.g. make run UP_ARGS="--port 8080"
run: install
	$(BIN)/python manage.py up $(UP_ARGS)

# With no DATABASE_URL / REDIS_URL, `with_services` starts an embedded PostgreSQL and
# Redis for this run only and tears them down after.
# The suite, then the benchmarks' smoke pass (tiny sizes: it proves `make bench` works;
# its figures go to .data/bench-smoke/ and mean nothing).
test: install lint
	$(BIN)/python -m config.services -- sh -c '$(BIN)/python -m pytest -m "not slow and not bench" $(PYTEST_ARGS) \
		&& BENCH_SCALE=smoke $(BIN)/python -m pytest -m bench tests/bench $(PYTEST_ARGS) -q \
		|| { rc=$$?; [ $$rc -eq 5 ] || exit $$rc; }' 

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks at full size (BENCH_SCALE=1; 0.1 or 0.3 for the growth runs), results in
# docs/benchmarks/results.{md,json}. One benchmark: make bench PYTEST_ARGS=tests/bench/test_x.py
bench: install
	$(BIN)/python -m config.services -- $(BIN)/python -m pytest -m bench -s $(PYTEST_ARGS) \
		|| { rc=$$?; [ $$rc -eq 5 ] && echo "no benchmarks selected" || exit $$rc; }

clean:
	rm -rf $(VENV) .data

# The dashboard in a real browser: Debian's Chromium (/usr/bin/chromium, install it with
# `sudo apt-get install -y chromium`) driven by Playwright; screenshots land in
# .data/test-artifacts/. Without Chromium these tests skip (under CI=true they fail).
test-browser: install
	$(BIN)/python -m config.services -- $(BIN)/python -m pytest tests/dashboard/test_browser.py $(PYTEST_ARGS)
